"""Report writer on a constructed record: table values, paired deltas, plots as real PNGs."""

import math

from monai_ssl_plugin.evaluation.report import markdown, mean_std, summarise, write_report


def _cell(route, task, pretext, budget, seed, **metrics):
    return {"route": route, "task": task, "pretext": pretext, "arm": "scratch" if pretext == "scratch" else "ssl",
            "budget": budget, "seed": seed, "train_cases": [], "metrics": metrics}


def _record():
    cells = {}
    for seed, (ssl2, ssl8, scr2, scr8) in enumerate([(0.60, 0.80, 0.50, 0.78), (0.70, 0.82, 0.52, 0.80)]):
        for pretext, d2, d8 in (("mae", ssl2, ssl8), ("scratch", scr2, scr8)):
            cells[f"a{seed}{pretext}2"] = _cell("monai", "tissue_segmentation", pretext, 2, seed, dice=d2)
            cells[f"a{seed}{pretext}8"] = _cell("monai", "tissue_segmentation", pretext, 8, seed, dice=d8)
            cells[f"c{seed}{pretext}2"] = _cell("monai", "atrophy_classification", pretext, 2, seed,
                                                accuracy=0.5 + 0.1 * seed, auc=math.nan if pretext == "mae" else 0.7)
        cells[f"p{seed}"] = _cell("probe", "atrophy_classification", "mae", 2, seed, linear_auc=0.9, knn_accuracy=0.75)
    return {"protocol": {"name": "constructed", "source": "x.yaml", "seeds": [0, 1],
                         "pretexts": [{"name": "mae", "paradigm": "generative"}]},
            "splits": {"test": ["a", "b", "c"]}, "budgets": [2, 8], "cells": cells,
            "pretraining": {"mae": {"bundle": "mae_ssl_pretraining", "loss": [[1, 2.0], [2, 1.5], [3, 1.0]],
                                    "online_probe": [{"iteration": 2, "knn_accuracy": 0.5, "linear_auc": 0.6},
                                                     {"iteration": 3, "knn_accuracy": 0.7, "linear_auc": 0.8}],
                                    "seconds": 12.0}}}


def test_mean_std_ignores_nan_and_uses_sample_std():
    m, s, n = mean_std([1.0, 3.0, math.nan])
    assert (m, n) == (2.0, 2) and abs(s - math.sqrt(2)) < 1e-12
    assert mean_std([math.nan])[2] == 0


def test_tables_hold_means_stds_and_paired_deltas():
    record = _record()
    values = summarise(record)
    assert values["monai"][("tissue_segmentation", "dice", 2, "mae")] == {0: 0.60, 1: 0.70}
    md = markdown(record)
    assert "| mae (generative) |" in md and "0.650 ± 0.071" in md  # mean and sample std of 0.60, 0.70
    assert "0.510 ± 0.014" in md  # scratch at 2 labels
    # paired deltas: (0.10, 0.18) at 2 labels -> +0.140 ± 0.057; (0.02, 0.02) at 8 -> +0.020 ± 0.000
    assert "+0.140 ± 0.057" in md and "+0.020 ± 0.000" in md
    assert "| – |" in md or "| – " in md  # the all-NaN AUC cell is shown as missing, not as a number
    assert "## Frozen-feature probes" in md and "0.900 ± 0.000" in md
    assert "| mae | mae_ssl_pretraining | 3 | 1 |" in md  # last step and final loss
    assert "nnU-Net route" not in md  # no nnunet cells, no table


def test_write_report_writes_markdown_and_pngs(tmp_path):
    path = write_report(_record(), tmp_path)
    assert path.read_text().startswith("# Evaluation report: constructed")
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == ["monai_vs_labels.png", "pretraining_curves.png", "probe_vs_labels.png"]
    for n in names:
        data = (tmp_path / "images" / n).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"(images/{n})" in path.read_text()

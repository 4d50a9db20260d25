"""The pay-off curve at toy size: snapshots per step, cells per (step, budget, seed), paired gains, files."""

import json

import pytest
import torch
import yaml

from monai_ssl_plugin.checkpoint import safe_load
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.evaluation.curve import curve_protocol, paired_gains, payoff_curve
from monai_ssl_plugin.evaluation.runner import Cell

PROTOCOL = {
    "name": "curve",
    "dataset": {"dataset_id": 596, "name": "EvalCurve", "n_test": 2,
                "demo": {"n_labelled": 6, "n_unlabelled": 2, "spacing": 6.0, "atrophy_fraction": 0.5,
                         "lesion_fraction": 0.0, "contrasts": ["T1", "T2"]}},
    "pretexts": [{"name": "mg", "bundle": "models_genesis_ssl_pretraining", "paradigm": "generative"}],
    "tasks": ["tissue_segmentation"],
    "budgets": [1, 2],
    "seeds": [0],
    "routes": ["monai"],
    "backbone": "nnunet_plain_tiny",
    "patch_size": [16, 16, 16],
    "pretraining": {"iterations": 1, "batch_size": 2, "online_probe_every": 0},
    "monai": {"iterations": 2, "classification_iterations": 2, "batch_size": 2},
}


def test_curve_fine_tunes_every_snapshot_and_pairs_by_seed(tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump(PROTOCOL))
    record = payoff_curve(config, tmp_path / "run", steps=[0, 2, 3])
    ckpts = tmp_path / "run" / "pretraining" / "mg" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*.pt")) == ["step_000000.pt", "step_000002.pt", "step_000003.pt"]
    assert safe_load(ckpts / "final.pt")["record"]["steps"] == 3  # pretrained as long as the last step
    assert record["cells_done"] == record["cells"] == 3 * 2 + 2  # 3 snapshots x 2 budgets + scratch x 2 budgets
    cells = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")}
    step2 = cells["monai__tissue_segmentation__mg@2__n1__s0"]["metrics"]
    assert step2["init"].endswith("step_000002.pt") and step2["loaded_tensors"] > 0
    gain = record["curve"]["tissue_segmentation"]["gain"]["mg"][2][1]
    expected = step2["dice"] - cells["monai__tissue_segmentation__scratch__n1__s0"]["metrics"]["dice"]
    assert gain["n"] == 1 and gain["mean"] == pytest.approx(expected)
    md = (tmp_path / "run" / "curve.md").read_text()
    assert "| mg (generative) | 3 |" in md and "1 labelled" in md
    assert {p.split("/")[-1] for p in record["images"]} == {"curve_tissue_segmentation_steps.png",
                                                             "curve_tissue_segmentation_labels.png"}
    # step 0 is the untrained network: differs from step 2's
    a, b = safe_load(ckpts / "step_000000.pt")["network"], safe_load(ckpts / "step_000002.pt")["network"]
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_paired_gains_skip_seeds_without_a_twin():
    t = "tissue_segmentation"
    results = {Cell("monai", t, "x@1", 4, 0).id: {"metrics": {"dice": 0.7}},
               Cell("monai", t, "scratch", 4, 0).id: {"metrics": {"dice": 0.5}},
               Cell("monai", t, "x@1", 4, 1).id: {"metrics": {"dice": 0.9}}}  # seed 1 has no scratch twin
    assert paired_gains(results, t, "x@1", 4, [0, 1]) == pytest.approx([0.2])


def test_steps_must_start_at_zero(tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump(PROTOCOL))
    with pytest.raises(PluginError, match="start at 0"):
        curve_protocol(config, [100, 300])

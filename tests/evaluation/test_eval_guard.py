"""Fairness guard: fires on an unfair protocol (the task-alignment nnU-Net cell), stays silent on a fair one,
resolves the schedule exactly as the trainer does, and the runner refuses or marks what it flags."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.evaluation.guard import (Flag, cell_budget, pairing_flags, resolve_schedule, schedule_flags,
                                               schedule_problems, stale_flags)
from monai_ssl_plugin.evaluation.protocol import load_protocol
from monai_ssl_plugin.evaluation.runner import evaluate

ROOT = Path(__file__).resolve().parents[2]


def _protocol(tmp_path, **nnunet):
    data = yaml.safe_load((ROOT / "benchmarks" / "task_alignment.yaml").read_text())
    data["nnunet"].update(nnunet)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_protocol(path), path


def test_the_task_alignment_nnunet_cell_is_flagged_and_refused(tmp_path):
    p, path = _protocol(tmp_path)  # 2 epochs x 10 iterations: the -0.325 cell of docs/evaluation.md
    flags = schedule_flags(p)
    assert len(flags) == 1 and flags[0].route == "nnunet"
    assert "1-epoch warm-up, so it starts at the peak rate" in flags[0].reason
    assert flags[0].covers("nnunet", "tissue_segmentation", 4, "mae")
    assert not flags[0].covers("nnunet", "tissue_segmentation", 4, "scratch")
    assert not flags[0].covers("monai", "tissue_segmentation", 4, "mae")
    with pytest.raises(PluginError, match="Not a meaningful comparison on the nnunet route.*--allow_unfair true"):
        evaluate(path, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written or run


def test_a_fair_schedule_is_silent(tmp_path):
    assert schedule_flags(_protocol(tmp_path, epochs=4, warmup_epochs=2)[0]) == []
    assert schedule_flags(_protocol(tmp_path, epochs=3, warmup_epochs=2)[0]) == []
    assert schedule_flags(_protocol(tmp_path, epochs=2, warmup_epochs=0)[0]) == []  # no warm-up asked for
    assert schedule_flags(_protocol(tmp_path, schedule="sawtooth", epochs=6, warmup_epochs=2, decoder_epochs=3)[0]) == []


@pytest.mark.parametrize("nnunet, fragment", [
    ({"epochs": 2, "warmup_epochs": 2}, "no epoch left after its warm-up"),
    ({"epochs": 5, "warmup_epochs": 1}, "1-epoch warm-up"),
    ({"schedule": "sawtooth", "epochs": 5}, "decoder-only tooth (2 of 5 epochs) has a 1-epoch warm-up"),
    ({"schedule": "sawtooth", "epochs": 6, "warmup_epochs": 2, "decoder_epochs": 2}, "decoder-only tooth (2 of 6 "
                                                                                     "epochs) has no epoch left"),
])
def test_schedules_that_do_not_fit_are_named(tmp_path, nnunet, fragment):
    flags = schedule_flags(_protocol(tmp_path, **nnunet)[0])
    assert len(flags) == 1 and fragment in flags[0].reason


def test_no_nnunet_route_no_schedule_flag(tmp_path):
    p, _ = _protocol(tmp_path)
    p.routes = ["monai"]
    assert schedule_flags(p) == []


@pytest.fixture
def trainer_dataset(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "tests" / "export"))
    from nnunet_helpers import plans_copy, tiny_plans, write_preprocessed_dataset

    for name in ("raw", "preprocessed", "results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(f"nnUNet_{name}", str(tmp_path / name))
    for name in ("nnUNet_SSL_epochs", "nnUNet_SSL_warmup_epochs", "nnUNet_SSL_decoder_epochs"):
        monkeypatch.delenv(name, raising=False)
    plans = tiny_plans()
    folder = write_preprocessed_dataset(tmp_path / "preprocessed", plans)
    return plans_copy(plans), json.loads((folder / "dataset.json").read_text())


@pytest.mark.parametrize("trainer, epochs, warmup, decoder", [
    ("nnUNetTrainerSSL_5epochs", 2, None, None), ("nnUNetTrainerSSL_5epochs", 9, None, None),
    ("nnUNetTrainerSSL", 30, None, None), ("nnUNetTrainerSSL_5epochs", 6, 3, None),
    ("nnUNetTrainerSSLSawtooth_5epochs", 12, None, None), ("nnUNetTrainerSSLSawtooth", 150, None, None),
    ("nnUNetTrainerSSLSawtooth_5epochs", 8, 2, 4)])
def test_schedule_is_resolved_as_the_trainer_resolves_it(trainer_dataset, monkeypatch, trainer, epochs, warmup, decoder):
    from monai_ssl_plugin.nnunet import trainers

    monkeypatch.setenv("nnUNet_SSL_epochs", str(epochs))
    for name, value in (("nnUNet_SSL_warmup_epochs", warmup), ("nnUNet_SSL_decoder_epochs", decoder)):
        if value is not None:
            monkeypatch.setenv(name, str(value))
    plans, dataset_json = trainer_dataset
    real = getattr(trainers, trainer)(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))
    s = resolve_schedule(trainer, epochs, warmup, decoder)
    assert (s.num_epochs, s.warmup_epochs) == (real.num_epochs, real.warmup_epochs)
    assert s.decoder_epochs == (real.decoder_epochs if real.sawtooth else 0)
    assert schedule_problems(resolve_schedule(trainer, epochs, warmup, decoder)) == schedule_problems(s)


def _result(pretext, seed=0, budget=4, train=("a", "b", "c", "d"), settings=None, route="monai"):
    return {"cell": f"{route}__tissue_segmentation__{pretext}__n{budget}__s{seed}", "route": route,
            "task": "tissue_segmentation", "pretext": pretext, "budget": budget, "seed": seed,
            "train_cases": list(train), "budget_settings": settings or {"iterations": 40, "batch_size": 2, "lr": 1e-3}}


def test_pairing_flags_unequal_budgets_and_cases_only():
    fair = {r["cell"]: r for r in (_result("mae"), _result("scratch"), _result("mae", seed=1), _result("simclr"))}
    assert pairing_flags(fair) == []
    longer = _result("scratch", settings={"iterations": 80, "batch_size": 2, "lr": 1e-3})
    flags = pairing_flags({r["cell"]: r for r in (_result("mae"), longer)})
    assert len(flags) == 1 and "different budget" in flags[0].reason and flags[0].pretext == "mae"
    other = _result("scratch", train=("a", "b", "c", "e"))
    flags = pairing_flags({r["cell"]: r for r in (_result("mae"), other)})
    assert len(flags) == 1 and "different training cases" in flags[0].reason


def test_stale_cells_are_flagged_against_the_current_protocol(tmp_path):
    p, _ = _protocol(tmp_path)
    want = cell_budget(p, "monai", "tissue_segmentation")
    assert want == {"iterations": 40, "batch_size": 2, "lr": 0.001}
    current = {r["cell"]: r for r in (_result("mae", settings=want), _result("scratch", settings=want))}
    assert stale_flags(p, current, lambda seed, budget: ["a", "b", "c", "d"]) == []
    old = _result("scratch", settings={**want, "iterations": 20})
    flags = stale_flags(p, {old["cell"]: old})
    assert len(flags) == 1 and "'iterations': 20" in flags[0].reason and flags[0].pretext is None
    assert flags[0].covers("monai", "tissue_segmentation", 4, "mae")  # every pretext's twin is stale
    flags = stale_flags(p, current, lambda seed, budget: ["a", "b", "c", "x"])
    assert len(flags) == 2 and all("other training cases" in f.reason for f in flags)


RUN = {
    "name": "guarded", "backbone": "nnunet_plain_tiny", "patch_size": [32, 32, 32],
    "dataset": {"dataset_id": 596, "name": "EvalGuard", "n_test": 2,
                "demo": {"n_labelled": 5, "n_unlabelled": 2, "spacing": 4.0, "atrophy_fraction": 0.5,
                         "lesion_fraction": 0.0}},
    "pretexts": [{"name": "simclr", "bundle": "simclr_ssl_pretraining"}],
    "tasks": ["atrophy_classification"], "budgets": [2], "seeds": [0], "routes": ["monai"],
    "pretraining": {"iterations": 2, "batch_size": 2, "online_probe_every": 0},
    "monai": {"iterations": 1, "classification_iterations": 1, "batch_size": 1},
    "probes": {"linear": False, "knn": False, "segmentation_head": False},
}


def test_runner_refuses_cells_of_an_older_budget_and_marks_them_when_forced(tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump(RUN))
    first = evaluate(config, tmp_path / "run", report=False)
    assert first["fairness"] == {"allow_unfair": False, "flags": []} and len(first["cells"]) == 2
    config.write_text(yaml.safe_dump({**RUN, "monai": {**RUN["monai"], "classification_iterations": 3}}))
    done: list = []
    with pytest.raises(PluginError, match="was computed with budget .*'iterations': 1"):
        evaluate(config, tmp_path / "run", on_cell_done=done.append)
    assert done == []  # refused before computing anything
    forced = evaluate(config, tmp_path / "run", allow_unfair=True)
    assert len(forced["fairness"]["flags"]) == 2 and forced["fairness"]["allow_unfair"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Run with --allow_unfair" in report and "⚠1" in report
    scratch_row = next(line for line in report.splitlines() if line.startswith("| scratch |"))
    assert "⚠" not in scratch_row  # the flag sits next to the pretrained arm's numbers and the deltas


def test_report_marks_flagged_values_only():
    from monai_ssl_plugin.evaluation.report import markdown

    cells = {r["cell"]: {**r, "arm": "ssl" if r["pretext"] != "scratch" else "scratch", "metrics": {"dice": d}}
             for r, d in ((_result("mae", route="nnunet"), 0.375), (_result("scratch", route="nnunet"), 0.7),
                          (_result("mae"), 0.6), (_result("scratch"), 0.58))}
    flag = Flag("nnunet", "pretrained arm's schedule does not fit", "fix it")
    record = {"protocol": {"name": "x", "seeds": [0], "pretexts": [{"name": "mae"}]}, "splits": {"test": ["t"]},
              "budgets": [4], "cells": cells, "fairness": {"allow_unfair": True, "flags": [flag.to_dict()]}}
    md = markdown(record)
    assert "-0.325 ⚠1" in md and "0.375 ⚠1" in md and "| scratch | 0.700 |" in md
    assert "+0.020 |" in md  # the MONAI route's delta is not flagged
    assert "⚠1 **Not a meaningful comparison**: pretrained arm's schedule does not fit." in md

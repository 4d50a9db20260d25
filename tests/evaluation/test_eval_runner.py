"""Resumable runner: interrupt after k cells, re-run, same final record, no cell computed twice."""

import json

import pytest
import yaml

from monai_ssl_plugin.evaluation.runner import evaluate

PROTOCOL = {
    "name": "resume",
    "dataset": {"dataset_id": 597, "name": "EvalResume", "n_test": 4,
                "demo": {"n_labelled": 10, "n_unlabelled": 4, "spacing": 4.0, "atrophy_fraction": 0.5,
                         "lesion_fraction": 0.0}},
    "pretexts": [{"name": "simclr", "bundle": "simclr_ssl_pretraining", "paradigm": "contrastive"}],
    "tasks": ["atrophy_classification"],
    "budgets": [2, 4],
    "seeds": [0],
    "routes": ["monai"],
    "backbone": "nnunet_plain_tiny",
    "patch_size": [32, 32, 32],
    "pretraining": {"iterations": 3, "batch_size": 2, "online_probe_every": 0},
    "monai": {"iterations": 2, "classification_iterations": 2, "batch_size": 2},
    "probes": {"segmentation_head": False},
}


class Stop(Exception):
    pass


def _metrics(record):
    return {k: {m: v for m, v in c["metrics"].items() if m not in ("seconds", "init")} for k, c in record["cells"].items()}


def test_interrupted_run_resumes_without_recomputing(tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump(PROTOCOL))
    first: list[str] = []

    def stop_after_three(cell):
        first.append(cell.id)
        if len(first) == 3:
            raise Stop

    with pytest.raises(Stop):
        evaluate(config, tmp_path / "run", on_cell_done=stop_after_three, report=False)
    assert len(list((tmp_path / "run" / "cells").glob("*.json"))) == 3
    checkpoint = tmp_path / "run" / "pretraining" / "simclr" / "checkpoints" / "final.pt"
    mtime = checkpoint.stat().st_mtime_ns

    second: list[str] = []
    record = evaluate(config, tmp_path / "run", on_cell_done=lambda c: second.append(c.id), report=False)
    assert len(record["cells"]) == 8  # 2 routes (fine-tune, probe) x 2 arms x 2 budgets
    assert not set(first) & set(second) and set(first) | set(second) == set(record["cells"])
    assert checkpoint.stat().st_mtime_ns == mtime  # the pretrained checkpoint was reused, not retrained

    third: list[str] = []
    again = evaluate(config, tmp_path / "run", on_cell_done=lambda c: third.append(c.id), report=False)
    assert third == [] and again["cells"] == record["cells"]

    fresh = evaluate(config, tmp_path / "fresh", report=False)  # uninterrupted, from nothing
    assert _metrics(fresh) == _metrics(record)
    saved = json.loads((tmp_path / "run" / "record.json").read_text())
    assert _metrics(saved) == _metrics(record)


def test_cell_lock_is_exclusive_and_taken_over_from_a_dead_process(tmp_path):
    import subprocess
    import sys

    from monai_ssl_plugin.evaluation.runner import _claim

    lock = tmp_path / "cell.lock"
    assert _claim(lock) and lock.read_text() == str(__import__("os").getpid())
    assert not _claim(lock)  # held by a live process (this one)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(str(dead.pid))
    assert _claim(lock)  # its holder is gone: taken over

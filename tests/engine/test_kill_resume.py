"""SIGKILL a real `python -m monai.bundle run` of the MAE bundle at random points, resume with
`--resume true` each time, and check the result equals an uninterrupted run step for step (CPU):
final network / pretext / optimiser tensors bit for bit, and the loss series from TensorBoard.
Every kill must leave a loadable `latest.pt` (atomic writes: a torn write never replaces it)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from monai_ssl_plugin.bundles import train_configs
from monai_ssl_plugin.checkpoint import safe_load
from monai_ssl_plugin.engine.run import bundle_dir

pytestmark = pytest.mark.e2e

CONFIGS = bundle_dir("mae_ssl_pretraining") / "configs"
EPOCH_LENGTH, EPOCHS = 10, 8
TOTAL = EPOCH_LENGTH * EPOCHS
KILLS = 3
FAST = {"backbone": "nnunet_plain_tiny", "patch_size": "[16,16,16]", "batch_size": 2,
        "train#epoch_length": EPOCH_LENGTH, "train#trainer#max_epochs": EPOCHS, "train#num_workers": 0,
        "save_every_n_iters": 1, "quiet": "true", "seed": 3}


def _command(dataset: Path, out: Path, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(train_configs(CONFIGS.parent)),
            "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf"),
            "--dataset_dir", str(dataset), "--output_dir", str(out), "--resume", str(resume).lower()]
    for key, value in FAST.items():
        args += [f"--{key}", str(value)]
    return args


def _start(dataset: Path, out: Path, resume: bool, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(_command(dataset, out, resume), stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            cwd=out.parent, env=env)


def _losses(tensorboard_dir: Path) -> dict[int, float]:
    """step -> loss; a step logged twice (replayed after a kill) keeps its last value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[int, tuple[float, float]] = {}
    for events in sorted(tensorboard_dir.glob("events.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if "loss" in acc.Tags().get("scalars", []):
            for e in acc.Scalars("loss"):
                if e.step not in values or e.wall_time >= values[e.step][0]:
                    values[e.step] = (e.wall_time, e.value)
    return {s: v for s, (_, v) in values.items()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("kill_raw")
    return make_synthetic_dataset(root, 990, "Synthetic", n_labelled=0, n_unlabelled=4, shape=(20, 20, 20),
                                  spacing=(1.0, 1.0, 1.0), seed=0)


def test_sigkill_and_resume_matches_uninterrupted_run(dataset, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    ref_proc = _start(dataset, reference, False, tmp_path / "reference.log")  # runs alongside the killed series

    rng = random.Random(int(os.environ.get("KILL_SEED", "0")))
    latest = killed / "checkpoints" / "latest.pt"
    kills, last_iteration, stray_temps, attempts = [], 0, 0, 0
    while len(kills) < KILLS and attempts < KILLS + 3:
        attempts += 1
        proc = _start(dataset, killed, resume=attempts > 1, log=tmp_path / "killed.log")
        deadline = time.monotonic() + 240
        # wait for a checkpoint newer than the one we resumed from, then a random extra delay
        while time.monotonic() < deadline and proc.poll() is None:
            if latest.is_file() and latest.stat().st_mtime_ns and _iteration_or_none(latest, last_iteration):
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is not None:  # finished before we could kill it
            assert proc.returncode == 0, (tmp_path / "killed.log").read_text()[-3000:]
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        state = safe_load(latest)  # never torn: the rename is atomic
        iteration = int(state["engine"]["iteration"])
        assert last_iteration <= iteration <= TOTAL, (last_iteration, iteration)
        assert not (killed / "checkpoints" / "final.pt").exists()
        stray_temps = len(list((killed / "checkpoints").glob(".latest.pt.*.tmp")))
        kills.append(iteration)
        last_iteration = iteration
    assert len(kills) >= KILLS, f"only {len(kills)} kills landed mid-run (iterations {kills})"
    assert all(0 < k < TOTAL for k in kills), kills

    final_proc = _start(dataset, killed, True, tmp_path / "killed.log")
    assert final_proc.wait(300) == 0, (tmp_path / "killed.log").read_text()[-3000:]
    assert ref_proc.wait(300) == 0, (tmp_path / "reference.log").read_text()[-3000:]

    ref, res = (safe_load(d / "checkpoints" / "final.pt") for d in (reference, killed))
    assert not list((killed / "checkpoints").glob(".*.tmp"))  # a torn write's leftover is removed at restart
    assert ref["engine"]["iteration"] == res["engine"]["iteration"] == TOTAL
    for part in ("network", "pretext"):
        assert ref[part].keys() == res[part].keys()
        for key in ref[part]:
            assert torch.equal(ref[part][key], res[part][key]), f"{part}.{key} differs"
    for a, b in zip(ref["optimizer"]["state"].values(), res["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert ref["scheduler"] == res["scheduler"]

    ref_loss, res_loss = _losses(reference / "tensorboard"), _losses(killed / "tensorboard")
    assert sorted(ref_loss) == list(range(1, TOTAL + 1))
    # steps after the last kill were all logged by the final run; earlier ones as far as they were flushed
    assert set(range(kills[-1] + 1, TOTAL + 1)) <= set(res_loss)
    assert {s: res_loss[s] for s in res_loss} == {s: ref_loss[s] for s in res_loss}
    print(f"kills at iterations {kills}; stray temporary files after the last kill: {stray_temps}; "
          f"loss steps compared: {len(res_loss)}/{TOTAL}")


def _iteration_or_none(path: Path, after: int) -> bool:
    """True when ``path`` holds a checkpoint past iteration ``after`` (a racing rename just retries)."""
    try:
        return int(safe_load(path)["engine"]["iteration"]) > after
    except Exception:
        return False

"""Every pretraining bundle under ``torchrun --nproc_per_node=2`` with ``multi_gpu_train.yaml`` (gloo on CPU).

The documented command, unchanged, on tiny synthetic data and a tiny network, 2 steps of per-rank
batch 2. ``output_dir`` is given per rank (``$...'rank' + RANK``) so the test can see who
writes what: rank 0's folder holds ``final.pt`` (iteration 2) and its logs, rank 1's folder stays
empty (checkpoints, TensorBoard, timing and progress are rank 0's) but for ``bad_data.tsv``, the record
of bad or padded cases that every process appends to. Both ranks join the process group.
The numerical side of DDP (gathered negatives, queue, centre, EMA teachers, per-rank RNG on resume) is
tested exactly in tests/engine/test_ddp*.py; this test proves each bundle's wiring runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monai_ssl_plugin.checkpoint import safe_load
from monai_ssl_plugin.bundles import bundle_dir, list_bundles, train_configs
from tiny_bundle_overrides import EXTRA
from torchrun_launch import run_torchrun

pytestmark = pytest.mark.e2e

BUNDLES = [name for name in list_bundles() if name.endswith("_ssl_pretraining")]
STEPS = 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("raw"), 990, "Synthetic", n_labelled=0, n_unlabelled=4,
                                  shape=(40, 64, 64), spacing=(1.0, 1.0, 1.0), seed=0)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_runs_under_torchrun_two_processes(bundle, dataset, tmp_path):
    configs = bundle_dir(bundle) / "configs"
    out = tmp_path / "run"
    overrides = {"patch_size": [32, 32, 32], "batch_size": 2, "train#epoch_length": STEPS,
                 "train#trainer#max_epochs": 1, "train#num_workers": 0, "quiet": True, "collapse_every_n": 1,
                 **EXTRA[bundle.removesuffix("_ssl_pretraining")]}
    if "collapse_every_n" not in (configs / "train.yaml").read_text():
        overrides.pop("collapse_every_n")
    args = ["-m", "monai.bundle", "run", "--config_file", str(train_configs(bundle, multi_gpu=True)),
            "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
            "--dataset_dir", str(dataset), "--output_dir", f"$os.path.join('{out}', 'rank' + os.environ['RANK'])"]
    for key, value in overrides.items():
        args += [f"--{key}", str(value).replace(" ", "")]
    proc = run_torchrun(args, cwd=tmp_path, outputs=[out])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "rank 0 of 2 (gloo)" in log and "rank 1 of 2 (gloo)" in log

    state = safe_load(out / "rank0" / "checkpoints" / "final.pt")
    assert state["engine"]["iteration"] == STEPS and len(state["rng_per_rank"]) == 2
    rank0 = {p.relative_to(out / "rank0").as_posix() for p in (out / "rank0").rglob("*") if p.is_file()}
    assert {"checkpoints/latest.pt", "timing.csv"} <= rank0 and any(p.startswith("tensorboard/") for p in rank0)
    rank1 = sorted(p.relative_to(out).as_posix() for p in (out / "rank1").rglob("*") if p.is_file()) \
        if (out / "rank1").exists() else []
    # the one file every process may append to: the bad-data record (here: volumes smaller than VoCo's
    # 16x64x64 patch, padded), which the end-of-run count reads across loader workers and ranks
    assert [f for f in rank1 if f != "rank1/bad_data.tsv"] == [], f"rank 1 wrote {rank1}"

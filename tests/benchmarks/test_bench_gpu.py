"""bench_gpu: runs on CPU at tiny sizes, refuses a missing GPU in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import bench_gpu
import pytest
import torch


def test_published_sizes_come_from_the_recommender_rules() -> None:
    patch, batch, backbone = bench_gpu.published("mae_ssl_pretraining")
    assert (patch, batch, backbone) == ([160, 160, 160], 2, "nnunet_resenc_l")
    patch, batch, _ = bench_gpu.published("models_genesis_ssl_pretraining")
    assert (patch, batch) == ([32, 64, 64], 6)  # published 64x64x32 (x, y, z) in the plugin's z, y, x


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_fails_with_one_line() -> None:
    proc = subprocess.run([sys.executable, bench_gpu.__file__, "--device", "cuda"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in proc.stderr


def test_tiny_cpu_run_writes_every_figure(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--device", "cpu", "--tiny", "--steps", "3", "--warmup", "1", "--only", "mae_ssl",
                           "--variants", "fp32", "fp16", "channels_last", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert r["bundle"] == "mae_ssl_pretraining" and r["patch"] == [32, 32, 32]
    run = r["bundle_run"]
    assert run["step_s"] > 0 and 0 <= run["data_wait_share"] < 1 and run["steps_timed"] == 2
    for variant in ("fp32", "channels_last"):
        assert r[variant]["step_s"] > 0 and r[variant]["peak_mb"] >= 0
    assert "CUDA" in r["fp16"]["skipped"]


def test_budget_skips_bundles_and_says_so(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--device", "cpu", "--tiny", "--only", "rotation", "--budget-s", "-1",
                           "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert "budget" in r["skipped"]

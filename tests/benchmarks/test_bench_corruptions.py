"""bench_corruptions: same-run references, the tensor form on CPU, a missing GPU in one line."""

from __future__ import annotations

import subprocess
import sys

import bench_corruptions
import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_fails_with_one_line() -> None:
    proc = subprocess.run([sys.executable, bench_corruptions.__file__, "--device", "cuda", "--only", "floor"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in proc.stderr


def test_same_run_reference_rows_carry_a_verdict(capsys) -> None:
    assert bench_corruptions.main(["--only", "monai tutorial", "--sizes", "64x64x32", "--batch", "1",
                                   "--repeats", "1"]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| monai tutorial")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    for ratio in cells[-3:-1]:  # the same-run median ratio and the CPU-time ratio
        assert ratio.endswith("x") and float(ratio[:-1]) > 0
    assert cells[-1] in ("yes", "no")


def test_tensor_path_runs_every_generator_on_cpu(monkeypatch, capsys) -> None:
    from monai_ssl_plugin.transforms import _cpu_kernels

    monkeypatch.setattr(_cpu_kernels, "HAVE_NUMBA", _cpu_kernels.HAVE_NUMBA)  # restored after the test
    assert bench_corruptions.main(["--tensor-path", "--no-baseline", "--sizes", "64x64x32", "--batch", "2",
                                   "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "(tensor form)" in out and _cpu_kernels.HAVE_NUMBA is False
    rows = [line for line in out.splitlines() if line.startswith("| ") and "64x64x32" in line]
    names = {r.split("|")[1].strip() for r in rows}
    expected = {n for n in bench_corruptions.generators() if "rotation" not in n and "swin" not in n}
    assert expected <= names


def test_swin_reference_cuts_both_views_and_keeps_the_input() -> None:
    import numpy as np

    np.random.seed(0)
    x = torch.rand(2, 1, 32, 32, 32)  # sides of 32: blocks of 1..8 voxels
    before = x.clone()
    views = bench_corruptions._swin_reference(x)
    assert len(views) == 2 and all(v.shape == x.shape for v in views)
    assert torch.equal(x, before)  # the reference works on clones
    assert all(not torch.equal(v, x) for v in views)

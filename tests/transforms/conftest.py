"""Fixtures of the transforms tests: one torch thread (tiny tensors, a shared CPU), and both CPU
implementations of an operation (:mod:`monai_ssl_plugin.transforms._ops`)."""

from __future__ import annotations

import pytest

from monai_ssl_plugin.transforms import _cpu_kernels


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(params=["compiled", "tensor"])
def backend(request, monkeypatch):
    """The compiled CPU loops (numba) and the tensor form that CUDA (and a CPU without numba) uses."""
    if request.param == "compiled" and not _cpu_kernels.HAVE_NUMBA:
        pytest.skip("numba not installed")
    if request.param == "tensor":
        monkeypatch.setattr(_cpu_kernels, "HAVE_NUMBA", False)
    return request.param

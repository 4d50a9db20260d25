"""Shared fixtures of the sharing tests: a tiny pretraining run and the bundle packaged from it."""

from __future__ import annotations

import pytest
import torch

from monai_ssl_plugin.checkpoint import atomic_save
from monai_ssl_plugin.sharing import package_bundle
from sharing_helpers import NAME, _record


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "run"
    atomic_save({"network": {"encoder.w": torch.randn(8, 4), "decoder.b": torch.zeros(3)}, "pretext": {},
                 "optimizer": {}, "engine": {"iteration": 8}, "record": _record()}, run / "checkpoints" / "final.pt")
    return run


@pytest.fixture
def packaged(run_dir, tmp_path):
    return package_bundle(run_dir, bundle="mae_ssl_pretraining", name=NAME, out=tmp_path / "out")



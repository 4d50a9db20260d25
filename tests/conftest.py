"""Shared fixtures: nnU-Net folders in tmp dirs and tiny synthetic datasets.

- ``tmp_nnunet_env``: empty nnUNet_raw / nnUNet_preprocessed / nnUNet_results, env vars set
  for the test (monkeypatch).
- ``synthetic_raw_dataset``: session-wide tiny MRI raw dataset (Dataset990_Synthetic).
- ``preprocessed_nnunet_env``: session-wide CT dataset (Dataset991_SyntheticCT, anisotropic)
  run through the real ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` (the slowest fixture: once per
  session, only when a test asks for it). Call ``.apply(monkeypatch)`` to point nnU-Net at it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch


@dataclass(frozen=True)
class NnUNetEnv:
    """The three nnU-Net folders of a test environment."""

    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def under(cls, root: Path) -> "NnUNetEnv":
        env = cls(root / "nnUNet_raw", root / "nnUNet_preprocessed", root / "nnUNet_results")
        for p in (env.raw, env.preprocessed, env.results):
            p.mkdir(parents=True, exist_ok=True)
        return env

    def variables(self) -> dict[str, str]:
        return {"nnUNet_raw": str(self.raw), "nnUNet_preprocessed": str(self.preprocessed),
                "nnUNet_results": str(self.results)}

    def subprocess_env(self) -> dict[str, str]:
        """os.environ plus the nnU-Net variables, single-threaded: for ``subprocess.run(env=...)``."""
        return {**os.environ, **self.variables(), "OMP_NUM_THREADS": "1"}

    def apply(self, monkeypatch: pytest.MonkeyPatch) -> "NnUNetEnv":
        for k, v in self.variables().items():
            monkeypatch.setenv(k, v)
        return self


@pytest.fixture
def tmp_nnunet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NnUNetEnv:
    """Fresh nnU-Net folders under tmp_path with the environment variables set for this test."""
    return NnUNetEnv.under(tmp_path).apply(monkeypatch)


@pytest.fixture(scope="session")
def synthetic_raw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An nnUNet_raw folder holding Dataset990_Synthetic: 4 labelled, 3 unlabelled, 2 test, 24^3 MRI."""
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic_raw")
    make_synthetic_dataset(root, dataset_id=990, name="Synthetic", n_labelled=4, n_unlabelled=3, n_test=2,
                           shape=(24, 24, 24), spacing=(2.0, 2.0, 2.0), seed=0)
    return root


@pytest.fixture(scope="session")
def synthetic_raw_dataset(synthetic_raw_root: Path) -> Path:
    """The Dataset990_Synthetic folder (do not modify it: it is shared by the session)."""
    return synthetic_raw_root / "Dataset990_Synthetic"


@pytest.fixture(scope="session")
def preprocessed_nnunet_env(tmp_path_factory: pytest.TempPathFactory) -> NnUNetEnv:
    """Dataset991_SyntheticCT (5 labelled + 2 unlabelled CT cases, 32x32x24 voxels of 1.5x1.5x3 mm)
    planned and preprocessed by nnU-Net itself (3d_fullres, nnUNetPlans)."""
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    env = NnUNetEnv.under(tmp_path_factory.mktemp("nnunet_env"))
    make_synthetic_dataset(env.raw, dataset_id=991, name="SyntheticCT", n_labelled=5, n_unlabelled=2,
                           shape=(32, 32, 24), spacing=(1.5, 1.5, 3.0), modality="CT", seed=1)
    exe = Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess")
    cmd = [str(exe), "-d", "991", "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--verify_dataset_integrity"]
    proc = subprocess.run(cmd, env=env.subprocess_env(), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"nnUNetv2_plan_and_preprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return env


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test, restored after: tiny tensors gain nothing from threads on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

"""Shared fixtures for the nnU-Net tests: a tiny synthetic raw dataset and a tmp nnU-Net environment.

The data engineer's ``monai_ssl_plugin.data.synthetic.make_synthetic_dataset`` replaces
``write_tiny_raw_dataset`` once it lands (same role: nnU-Net raw folder with labelled cases).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest


def write_tiny_raw_dataset(raw_root: Path, dataset_id: int, name: str, n_labelled: int = 6, n_test: int = 1,
                           shape: tuple[int, int, int] = (32, 32, 32), spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
                           seed: int = 0) -> Path:
    """An nnU-Net raw dataset of noisy volumes with one bright ellipsoid each (label 1).

    Writes ``imagesTr``, ``labelsTr``, ``imagesTs`` (with the ground truth in ``labelsTs``) and
    ``dataset.json``; returns the dataset folder.
    """
    import nibabel as nib

    rng = np.random.default_rng(seed)
    folder = raw_root / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)

    def case(i: int, images: str, labels: str) -> None:
        centre = rng.uniform(0.35, 0.65, 3) * np.array(shape)
        radii = rng.uniform(0.15, 0.25, 3) * np.array(shape)
        label = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
        image = rng.normal(0.0, 0.3, shape).astype(np.float32) + 2.0 * label
        nib.save(nib.Nifti1Image(image, affine), folder / images / f"case_{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / labels / f"case_{i:03d}.nii.gz")

    for i in range(n_labelled):
        case(i, "imagesTr", "labelsTr")
    for i in range(n_labelled, n_labelled + n_test):
        case(i, "imagesTs", "labelsTs")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "blob": 1},
        "numTraining": n_labelled, "file_ending": ".nii.gz"}, indent=2))
    return folder


@pytest.fixture
def nnunet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """nnU-Net's three folders under ``tmp_path``, set in this process and returned for subprocesses."""
    from monai_ssl_plugin.nnunet import ext_trainer_dir

    env = {"nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "preprocessed"),
           "nnUNet_results": str(tmp_path / "results"), "nnUNet_extTrainer": ext_trainer_dir(),
           "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "nnUNet_compile": "false"}
    for k, v in env.items():
        if k.startswith("nnUNet_") and not k.startswith(("nnUNet_n_", "nnUNet_def", "nnUNet_comp", "nnUNet_ext")):
            Path(v).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(k, v)
    for k in ("nnUNet_SSL_pretrained", "nnUNet_SSL_lr", "nnUNet_SSL_warmup_epochs", "nnUNet_SSL_epochs"):
        monkeypatch.delenv(k, raising=False)
    return env


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment plus ``extra`` (PATH keeps the venv's nnUNetv2_* scripts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_SSL_")}
    env.update(extra)
    env.setdefault("OMP_NUM_THREADS", "2")
    return env

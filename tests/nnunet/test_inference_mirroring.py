"""Test-time mirroring: nnU-Net's default in the full trainers, off in the CPU-sized variants, and what the
checkpoint records is what ``nnUNetv2_predict`` will use."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from monai_ssl_plugin.nnunet import nnUNetTrainerScratch, nnUNetTrainerScratch_short, nnUNetTrainerSSL_5epochs

from nnunet_helpers import plans_copy, tiny_plans, write_preprocessed_dataset


def _trainer(cls, nnunet_env: dict[str, str]):
    plans = tiny_plans()
    folder = write_preprocessed_dataset(Path(nnunet_env["nnUNet_preprocessed"]), plans)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return cls(plans_copy(plans), "3d_fullres", 0, dataset_json, torch.device("cpu"))


def test_cpu_variants_train_with_mirroring_but_infer_without(nnunet_env):
    for cls in (nnUNetTrainerScratch_short, nnUNetTrainerSSL_5epochs):
        trainer = _trainer(cls, nnunet_env)
        *_, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        assert mirror_axes == (0, 1, 2), cls.__name__  # training augmentation unchanged
        assert trainer.inference_allowed_mirroring_axes is None, cls.__name__


def test_full_trainers_keep_nnunets_test_time_mirroring(nnunet_env):
    trainer = _trainer(nnUNetTrainerScratch, nnunet_env)
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert trainer.inference_allowed_mirroring_axes == (0, 1, 2)

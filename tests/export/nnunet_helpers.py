"""Helpers for nnU-Net export tests: tiny plans, pretraining checkpoints, a fake preprocessed dataset.

Imported by the export tests and by ``tests/nnunet/conftest.py`` (one copy of the helpers).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone, nnunet_plain_tiny
from monai_ssl_plugin.checkpoint import atomic_save, build_record
from monai_ssl_plugin.pretext.generative.mae import MaskedImageModelling

DNA = "dynamic_network_architectures.architectures.unet."


def tiny_plans(dataset_name: str = "Dataset901_Tiny", features: tuple[int, ...] = (8, 16, 32),
               kernel: tuple[int, int, int] = (3, 3, 3), normalization: str = "ZScoreNormalization",
               patch_size: tuple[int, int, int] = (16, 16, 16)) -> dict[str, Any]:
    """A minimal nnU-Net plans dict whose 3d_fullres builds a small PlainConvUNet."""
    n = len(features)
    arch_kwargs = {
        "n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [list(kernel)] * n, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_conv_per_stage": [1] * n, "n_conv_per_stage_decoder": [1] * (n - 1), "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True}}
    conf = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": list(patch_size), "median_image_size_in_voxels": list(patch_size), "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": [normalization], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": DNA + "PlainConvUNet", "arch_kwargs": arch_kwargs,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": False}
    return {"dataset_name": dataset_name, "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
            "original_median_shape_after_transp": list(patch_size), "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "configurations": {"3d_fullres": conf}, "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {}}


def write_checkpoint(path: Path, backbone: NnUNetBackbone | None = None, *, axis_order: str = "nnunet",
                     normalization: str = "ZScoreNormalization", spacing: list[float] | None = None,
                     patch_size: tuple[int, ...] = (16, 16, 16), steps: int = 3) -> Path:
    """A pretraining checkpoint in the ``CHECKPOINT_KEYS`` layout: MAE over ``backbone`` (default: tiny preset)."""
    backbone = backbone or nnunet_plain_tiny()
    pretext = MaskedImageModelling(backbone, block_size=4)
    with torch.no_grad():  # make the weights recognisable: not the builder's initialisation
        for p in backbone.network.parameters():
            p.add_(0.01 * torch.randn_like(p))
    info = {"axis_order": axis_order, "spacing": spacing or [1.0, 1.0, 1.0], "normalization": [normalization],
            "dataset_name": "Dataset901_Tiny"}
    record = build_record(backbone, pretext, info, list(patch_size), steps=steps).to_dict()
    # plain types only (checkpoint.software_versions may hold str subclasses such as torch's TorchVersion)
    record = json.loads(json.dumps(record))
    atomic_save({"network": backbone.network.state_dict(), "pretext": {}, "optimizer": {}, "scheduler": {},
                 "engine": {"iteration": steps, "epoch": 1}, "rng": {}, "record": record}, path)
    return path


def write_preprocessed_dataset(root: Path, plans: dict[str, Any], n_channels: int = 1,
                               labels: dict[str, int] | None = None) -> Path:
    """``$nnUNet_preprocessed/<dataset_name>/`` with plans, dataset.json and a data folder nnU-Net can type."""
    folder = root / plans["dataset_name"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{plans['plans_name']}.json").write_text(json.dumps(plans, indent=1))
    ds = {"channel_names": {str(i): "MRI" for i in range(n_channels)},
          "labels": labels or {"background": 0, "a": 1, "b": 2}, "numTraining": 1, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(ds))
    data = folder / plans["configurations"]["3d_fullres"]["data_identifier"]
    data.mkdir(exist_ok=True)
    (data / "case_000.b2nd").write_bytes(b"")  # infer_dataset_class only looks at file endings
    return folder


def plans_copy(plans: dict[str, Any]) -> dict[str, Any]:
    """A deep copy with ``continue_training`` set, as nnU-Net's run_training passes plans to a trainer."""
    out = copy.deepcopy(plans)
    out["continue_training"] = False
    return out

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
                     normalization: str | list[str] = "ZScoreNormalization", spacing: list[float] | None = None,
                     patch_size: tuple[int, ...] = (16, 16, 16), steps: int = 3) -> Path:
    """A pretraining checkpoint in the ``CHECKPOINT_KEYS`` layout: MAE over ``backbone`` (default: tiny preset).

    ``normalization``: one scheme (recorded for the first channel only, as a one-scheme record) or the list
    the record gives, one per pretrained channel."""
    backbone = backbone or nnunet_plain_tiny()
    pretext = MaskedImageModelling(backbone, block_size=4)
    with torch.no_grad():  # make the weights recognisable: not the builder's initialisation
        for p in backbone.network.parameters():
            p.add_(0.01 * torch.randn_like(p))
    info = {"axis_order": axis_order, "spacing": spacing or [1.0, 1.0, 1.0], "normalization": [normalization] if isinstance(normalization, str) else list(normalization),
            "dataset_name": "Dataset901_Tiny"}
    record = build_record(backbone, pretext, info, list(patch_size), steps=steps).to_dict()
    # plain types only (checkpoint.software_versions may hold str subclasses such as torch's TorchVersion)
    record = json.loads(json.dumps(record))
    atomic_save({"network": backbone.network.state_dict(), "pretext": {}, "optimizer": {}, "scheduler": {},
                 "engine": {"iteration": steps, "epoch": 1}, "rng": {}, "record": record}, path)
    return path


def write_preprocessed_dataset(root: Path, plans: dict[str, Any], n_channels: int = 1,
                               labels: dict[str, int] | None = None) -> Path:
    """``$nnUNet_preprocessed/<dataset_name>/`` with plans, dataset.json and a data folder nnU-Net can type.

    Channel names follow the plans' normalisation (``CT`` for ``CTNormalization``, else ``MRI``)."""
    folder = root / plans["dataset_name"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{plans['plans_name']}.json").write_text(json.dumps(plans, indent=1))
    schemes = plans["configurations"]["3d_fullres"]["normalization_schemes"]
    names = ["CT" if schemes[i % len(schemes)] == "CTNormalization" else "MRI" for i in range(n_channels)]
    ds = {"channel_names": {str(i): name for i, name in enumerate(names)},
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


def tiny_resenc_kwargs(features: tuple[int, ...] = (8, 16, 32)) -> dict[str, Any]:
    """arch_kwargs of a small ResidualEncoderUNet (nnssl's ResEnc-L layout, scaled down)."""
    n = len(features)
    return {"n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            "n_blocks_per_stage": [1] * n, "n_conv_per_stage_decoder": [1] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}


def write_nnssl_checkpoint(path: Path, arch_class_name: str = "ResidualEncoderUNet",
                           arch_kwargs: dict[str, Any] | None = None, *, in_channels: int = 1,
                           prefix: str = "encoder", encoder_only: bool = False,
                           state: dict[str, torch.Tensor] | None = None) -> tuple[Path, dict[str, torch.Tensor]]:
    """A checkpoint in nnssl's documented layout: ``network_weights`` + ``nnssl_adaptation_plan`` (no ssl_record).

    ``prefix`` renames the encoder's module (nnssl's BYOL uses ``online_encoder``); ``encoder_only``
    keeps only stem + encoder weights (contrastive pretexts). Returns (path, the weights in nnU-Net's naming).
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    if state is None:
        kwargs = arch_kwargs or tiny_resenc_kwargs()
        net = get_network_from_plans(DNA + arch_class_name.rsplit(".", 1)[-1], kwargs,
                                     ["conv_op", "norm_op", "dropout_op", "nonlin"], in_channels, in_channels,
                                     allow_init=True, deep_supervision=False)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.01 * torch.randn_like(p))
        state = net.state_dict()
        stem, encoder, in_proj = net.key_to_stem, net.key_to_encoder, list(net.keys_to_in_proj)
    else:
        stem, encoder = "encoder.stem", "encoder.stages"
        in_proj = ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"]
    canonical = dict(state)
    if encoder_only:
        state = {k: v for k, v in state.items() if k.startswith("encoder.")}
    ren = (lambda k: prefix + k[len("encoder"):] if k.startswith("encoder.") else k)
    plan = {
        "architecture_plans": {"arch_class_name": arch_class_name,
                               **({"arch_kwargs": arch_kwargs} if arch_kwargs is not None else {}),
                               "arch_kwargs_requiring_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                          "configurations": {"onemmiso": {"spacing": [1.0, 1.0, 1.0], "patch_size": [160, 160, 160],
                                                          "normalization_schemes": ["ZScoreNormalization"]}}},
        "pretrain_num_input_channels": in_channels, "recommended_downstream_patchsize": [160, 160, 160],
        "key_to_encoder": ren(encoder), "key_to_stem": ren(stem), "keys_to_in_proj": [ren(k) for k in in_proj],
        "key_to_lpe": None}
    torch.save({"network_weights": {ren(k): v for k, v in state.items()}, "nnssl_adaptation_plan": plan,
                "current_epoch": 1000, "trainer_name": "BaseMAETrainer"}, path)
    return path, canonical


def tiny_primus_nnssl_kwargs() -> dict[str, Any]:
    """``arch_kwargs`` of an explicit nnssl Primus run, in nnssl's names (nnU-Net master's Primusx reads them)."""
    return {"embed_dim": 48, "patch_embed_size": [8, 8, 8], "encoder_eva_depth": 2, "encoder_eva_numheads": 2,
            "init_values": [0.1], "scale_attn_inner": True}


def write_nnssl_primus(path: Path, *, patch: tuple[int, int, int] = (32, 32, 32),
                       arch_class_name: str = "Primus") -> tuple[Path, dict[str, torch.Tensor]]:
    """An nnssl Primus ``checkpoint_final.pth`` (SimMIM's names: ``mask_token``, ``down_projection.*``, ``eva.*``,
    ``up_projection.*``; ``eva.pos_embed`` for ``patch``), pretrained on 1 channel. Returns (path, its weights)."""
    from dynamic_network_architectures.architectures.primus import Primus

    net = Primus(1, 48, (8, 8, 8), 1, eva_depth=2, eva_numheads=2, input_shape=patch, init_values=0.1,
                 scale_attn_inner=True)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    conf = {"spacing": [1.0, 1.0, 1.0], "patch_size": list(patch), "normalization_schemes": ["ZScoreNormalization"]}
    plan = {"architecture_plans": {"arch_class_name": arch_class_name, "arch_kwargs": tiny_primus_nnssl_kwargs(),
                                   "arch_kwargs_requiring_import": []},
            "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans",
                              "configurations": {"onemmiso": conf}},
            "pretrain_num_input_channels": 1, "recommended_downstream_patchsize": list(patch),
            "key_to_encoder": "eva", "key_to_stem": "down_projection", "keys_to_in_proj": ["down_projection.proj"],
            "key_to_lpe": "eva.pos_embed"}
    state = dict(net.state_dict())
    torch.save({"network_weights": state, "nnssl_adaptation_plan": plan, "current_epoch": 1000,
                "trainer_name": "SimMIMEvaTrainer"}, path)
    return path, state

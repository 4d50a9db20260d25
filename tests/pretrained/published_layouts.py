"""Files in exactly the published layouts of the catalog's checkpoints, at small sizes.

The key names and the container dicts follow the publishers' own code: nnssl's
``AbstractBaseTrainer.save_checkpoint`` (ResEnc-L architectures from ``architecture_registry``,
``VoCoArchitecture`` for the encoder-only pretexts), the Swin UNETR pretraining's ``model_swinvit.pt``
as MONAI's ``SwinUNETR.load_from`` reads it, and VoCo's ``VoCoHead`` state dict. Only the widths are
small; each function returns (path, the tensors in the consumer's naming) to compare with.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "export"))
from nnunet_helpers import DNA, tiny_resenc_kwargs  # noqa: E402

REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def _randomised(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():  # recognisable values, not the initialisation a consumer would also produce
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module


def nnssl_plan(arch_kwargs: dict, in_channels: int = 1) -> dict:
    """``AdaptationPlan.serialize()`` of an nnssl ResEnc-L run (``ArchitecturePlans("ResEncL", kwargs)``)."""
    conf = {"data_identifier": "nnsslPlans_onemmiso", "preprocessor_name": "DefaultPreprocessor",
            "spacing_style": "onemmiso", "normalization_schemes": ["ZScoreNormalization"] * in_channels,
            "use_mask_for_norm": [False] * in_channels, "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_mask": "resample_data_or_seg_to_shape",
            "resampling_fn_mask_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "spacing": [1.0, 1.0, 1.0], "patch_size": [160, 160, 160]}
    plan = {"dataset_name": "Dataset745_OpenNeuro_v2", "plans_name": "nnsslPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"onemmiso": conf},
            "experiment_planner_used": "ExperimentPlanner"}
    return {"architecture_plans": {"arch_class_name": "ResEncL", "arch_kwargs": arch_kwargs,
                                   "arch_kwargs_requiring_import": REQ_IMPORT},
            "pretrain_plan": plan, "pretrain_num_input_channels": in_channels,
            "recommended_downstream_patchsize": [160, 160, 160], "key_to_encoder": "encoder.stages",
            "key_to_stem": "encoder.stem", "keys_to_in_proj": ["encoder.stem.convs.0.conv",
                                                               "encoder.stem.convs.0.all_modules.0"],
            "key_to_lpe": None}


def resencl_kwargs(features: tuple[int, ...] = (2, 4, 6, 8, 10, 10)) -> dict:
    """nnssl's ResEnc-L (``architecture_registry.get_res_enc_l``: 6 stages, blocks 1-3-4-6-6-6, one decoder conv
    per stage) with small widths: the same key names as the published files, small shapes. The widths change
    where ResEnc-L's do (32-64-128-256-320-320), so the residual skips have the same projection convolutions."""
    kwargs = tiny_resenc_kwargs(features)
    kwargs.update(n_blocks_per_stage=[1, 3, 4, 6, 6, 6], n_conv_per_stage_decoder=[1] * 5)
    return kwargs


def write_openmind(path: Path, method: str = "MAE", kwargs: dict | None = None) -> tuple[Path, dict[str, torch.Tensor]]:
    """nnssl's ``checkpoint_final.pth``: MAE keeps the whole ResidualEncoderUNet; VoCo / SimCLR save
    ``VoCoArchitecture`` (``encoder.*`` + ``projector.layer{1,2,3}.0.*``). ``kwargs``: ResEnc-L's structure
    by default."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    kwargs = kwargs or resencl_kwargs()
    features = kwargs["features_per_stage"]
    net = _randomised(get_network_from_plans(DNA + "ResidualEncoderUNet", kwargs, REQ_IMPORT, 1, 1,
                                             allow_init=True, deep_supervision=False))
    state = dict(net.state_dict())
    if method in ("VoCo", "SimCLR"):
        state = {k: v for k, v in state.items() if k.startswith("encoder.")}
        total, hidden = sum(features), 16
        for i, (n_in, n_out) in enumerate([(total, hidden), (hidden, hidden), (hidden, hidden)], start=1):
            state[f"projector.layer{i}.0.weight"] = torch.randn(n_out, n_in)
            state[f"projector.layer{i}.0.bias"] = torch.randn(n_out)
    checkpoint = {"network_weights": state, "optimizer_state": {"state": {}, "param_groups": []},
                  "grad_scaler_state": None, "logging": {"train_losses": [0.9, 0.5]}, "_best_ema": None,
                  "current_epoch": 1000,
                  "init_args": {"plan": {"plans_name": "nnsslPlans"}, "configuration_name": "onemmiso", "fold": "all",
                                "pretrain_json": {"collection_name": "OpenMind"}, "device": torch.device("cpu")},
                  "trainer_name": f"{method}Trainer", "nnssl_adaptation_plan": nnssl_plan(kwargs)}
    torch.save(checkpoint, path)
    return path, {k: v for k, v in state.items() if not k.startswith("projector.")}


# nnssl's Primus-M (SimMIMEvaTrainer: init_values 0.1, scale_attn_inner) at a tiny width and depth, in nnssl's names
PRIMUS_TINY_KWARGS = {"embed_dim": 24, "encoder_eva_depth": 2, "encoder_eva_numheads": 2, "init_values": 0.1,
                      "scale_attn_inner": True}


def primus_plan(arch_kwargs: dict | None = None) -> dict:
    """``AdaptationPlan.serialize()`` of nnssl's Primus-M SimMIM run (``ArchitecturePlans("PrimusM")``: no kwargs
    as published; the tests pass scaled-down ones, as for ResEnc-L; ``SimMIMEvaTrainer`` names ``eva`` /
    ``down_projection`` / ``eva.pos_embed``), as in its ``adaptation_plan.json``."""
    plan = nnssl_plan({})
    plan["architecture_plans"] = {"arch_class_name": "PrimusM", "arch_kwargs": arch_kwargs,
                                  "arch_kwargs_requiring_import": None}
    plan.update(key_to_encoder="eva", key_to_stem="down_projection", keys_to_in_proj=["down_projection.proj"],
                key_to_lpe="eva.pos_embed")
    return plan


def write_primus(path: Path) -> tuple[Path, dict]:
    """nnssl's Primus-M ``checkpoint_final.pth`` (``EvaSimMIM``'s names: ``mask_token``, ``down_projection.*``,
    ``eva.*`` with LayerScale ``gamma_*`` and the attention norm, ``up_projection.*``), built with
    dynamic_network_architectures' Primus at a tiny width and the published 160^3 patch; returns (path, the plan
    also published beside it as ``adaptation_plan.json``)."""
    from dynamic_network_architectures.architectures.primus import Primus

    net = _randomised(Primus(1, 24, (8, 8, 8), 1, eva_depth=2, eva_numheads=2, input_shape=(160, 160, 160),
                             init_values=0.1, scale_attn_inner=True))
    plan = primus_plan(PRIMUS_TINY_KWARGS)
    checkpoint = {"network_weights": dict(net.state_dict()), "optimizer_state": {"state": {}, "param_groups": []},
                  "current_epoch": 1000, "trainer_name": "SimMIMEvaTrainer", "nnssl_adaptation_plan": plan}
    torch.save(checkpoint, path)
    return path, plan


def _swin(feature_size: int, use_v2: bool) -> torch.nn.Module:
    from monai.networks.nets import SwinUNETR

    return _randomised(SwinUNETR(in_channels=1, out_channels=2, feature_size=feature_size, use_v2=use_v2))


def write_model_swinvit(path: Path, feature_size: int = 12) -> tuple[Path, dict[str, torch.Tensor]]:
    """``model_swinvit.pt``: ``{"state_dict": {"module.patch_embed...", "module.layers1.0.blocks.0.mlp.fc1.weight", ...}}``."""
    state = {k: v for k, v in _swin(feature_size, use_v2=False).state_dict().items() if k.startswith("swinViT.")}
    published = {"module." + k[len("swinViT."):].replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2."): v
                 for k, v in state.items()}
    torch.save({"state_dict": published}, path)
    return path, state


def write_voco_head(path: Path, feature_size: int = 12) -> tuple[Path, dict[str, torch.Tensor]]:
    """``VoCo_B_SSL_head.pt``: ``VoCoHead.state_dict()`` = ``backbone.{swinViT,encoder1-4,encoder10}.*`` + ``student.*`` /
    ``teacher.*`` projection heads (BatchNorm1d without affine: Linear weights only)."""
    parts = ("swinViT.", "encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10.")
    state = {k: v for k, v in _swin(feature_size, use_v2=True).state_dict().items() if k.startswith(parts)}
    published = {"backbone." + k: v for k, v in state.items()}
    in_dim, hidden = 24 * feature_size, 32
    for head in ("student", "teacher"):
        for i, (n_in, n_out) in enumerate([(in_dim, hidden), (hidden, hidden), (hidden, hidden)], start=1):
            published[f"{head}.layer{i}.0.weight"] = torch.randn(n_out, n_in)
            published[f"{head}.layer{i}.0.bias"] = torch.randn(n_out)
    torch.save(published, path)
    return path, state


def bundle_network_def(arch_kwargs: dict, num_classes: int = 2, arch_class_name: str = "ResidualEncoderUNet") -> dict:
    """A MONAI bundle's ``network_def`` that builds nnU-Net's network from ``arch_kwargs`` (classes as expressions)."""
    args = {k: (f"${v}" if k in REQ_IMPORT and v else v) for k, v in arch_kwargs.items()}
    return {"_target_": DNA + arch_class_name, "input_channels": 1, "num_classes": num_classes, **args}

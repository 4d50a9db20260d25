"""nnU-Net's own networks (PlainConvUNet, ResidualEncoderUNet) as backbones.

Built with nnU-Net's builder (``get_network_from_plans``) from a plans file or a preset, so the
pretrained ``state_dict`` has exactly the keys nnU-Net's trainer will expect at fine-tuning.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.backbones.registry import register_backbone
from monai_ssl_plugin.errors import PluginError

_DNA = "dynamic_network_architectures.architectures.unet."
_REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


class NnUNetBackbone(BackboneAdapter):
    """Adapter over a dynamic-network-architectures U-Net (``encoder`` + ``decoder`` attributes).

    Args:
        arch_class_name: e.g. ``"dynamic_network_architectures.architectures.unet.PlainConvUNet"``.
        arch_kwargs: the plans' ``architecture.arch_kwargs`` (strings for ops, as in plans files).
        arch_kwargs_req_import: keys of ``arch_kwargs`` naming classes to import.
        in_channels: input channels.
        out_channels: channels of the dense output (the reconstruction target for MAE-type pretexts).
    """

    has_decoder = True

    def __init__(self, arch_class_name: str, arch_kwargs: dict[str, Any], arch_kwargs_req_import: list[str],
                 in_channels: int, out_channels: int | None = None):
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        out_channels = in_channels if out_channels is None else out_channels
        network = get_network_from_plans(arch_class_name, arch_kwargs, arch_kwargs_req_import, in_channels,
                                         out_channels, allow_init=True, deep_supervision=False)
        features = arch_kwargs["features_per_stage"]
        super().__init__(network, spatial_dims=len(arch_kwargs["kernel_sizes"][0]), in_channels=in_channels,
                         embed_dim=int(features[-1]), out_channels=out_channels,
                         constructor={"arch_class_name": arch_class_name, "arch_kwargs": copy.deepcopy(arch_kwargs),
                                      "arch_kwargs_req_import": list(arch_kwargs_req_import),
                                      "in_channels": in_channels, "out_channels": out_channels})
        self.family = "nnunet." + arch_class_name.rsplit(".", 1)[-1]
        self.strides = [list(s) if isinstance(s, (list, tuple)) else [s] * self.spatial_dims
                        for s in arch_kwargs["strides"]]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.network.encoder(x)  # return_skips=True in nnU-Net U-Nets: one tensor per stage

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.network.decoder(features)

    def encoder_stages(self) -> list[nn.Module]:
        # ResidualEncoder applies a stem before stage 0; its stages still produce the skips.
        return list(self.network.encoder.stages)

    def key_prefixes(self) -> dict[str, Any]:
        net = self.network
        return {"stem": net.key_to_stem, "encoder": net.key_to_encoder, "decoder": "decoder",
                "in_proj": list(net.keys_to_in_proj), "seg_layers": "decoder.seg_layers"}

    def divisor(self) -> list[int]:
        """Patch sizes must be multiples of this per axis (product of the strides)."""
        div = [1] * self.spatial_dims
        for s in self.strides:
            div = [d * si for d, si in zip(div, s)]
        return div

    @classmethod
    def from_plans(cls, plans: str | Path | dict, configuration: str = "3d_fullres", in_channels: int | None = None,
                   out_channels: int | None = None, dataset_json: str | Path | dict | None = None) -> "NnUNetBackbone":
        """Build the network a plans file defines for ``configuration``.

        ``in_channels`` defaults to the number of channels in the plans' normalisation schemes.
        """
        plans = load_plans(plans)
        conf = resolve_configuration(plans, configuration)
        arch = conf["architecture"]
        if in_channels is None:
            in_channels = len(conf.get("normalization_schemes", [None]))
        return cls(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], in_channels, out_channels)


def load_plans(plans: str | Path | dict) -> dict:
    if isinstance(plans, dict):
        return plans
    path = Path(plans)
    if not path.is_file():
        raise PluginError(f"Plans file {path} does not exist.",
                          "Run nnUNetv2_plan_and_preprocess -d ID first, or pass the path to nnUNetPlans.json.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PluginError(f"Plans file {path} is not valid JSON ({e.msg} at line {e.lineno}).",
                          "Regenerate it with nnUNetv2_plan_and_preprocess.") from None


def resolve_configuration(plans: dict, configuration: str) -> dict:
    """A configuration of a plans dict with ``inherits_from`` applied (as nnU-Net's PlansManager does)."""
    confs = plans.get("configurations", {})
    if configuration not in confs:
        raise PluginError(f"The plans have no configuration {configuration!r} (they have: {', '.join(confs) or 'none'}).",
                          f"Pass --configuration with one of: {', '.join(confs)}.")
    conf = copy.deepcopy(confs[configuration])
    parent = conf.pop("inherits_from", None)
    if parent is not None:
        base = resolve_configuration(plans, parent)
        base.update(conf)
        conf = base
    return conf


def _arch_kwargs(features: list[int], strides: list[int], dims: int, *, residual: bool, blocks: list[int],
                 decoder_convs: list[int]) -> dict[str, Any]:
    n = len(features)
    conv = f"torch.nn.modules.conv.Conv{dims}d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dims}d"
    kw = {"n_stages": n, "features_per_stage": features, "conv_op": conv,
          "kernel_sizes": [[3] * dims] * n, "strides": [[s] * dims for s in strides],
          "n_conv_per_stage_decoder": decoder_convs, "conv_bias": True, "norm_op": norm,
          "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
          "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    kw["n_blocks_per_stage" if residual else "n_conv_per_stage"] = blocks
    return kw


@register_backbone("nnunet_plain_small")
def nnunet_plain_small(in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3) -> NnUNetBackbone:
    """CPU-friendly PlainConvUNet: 4 stages, 16→128 features (small enough for CPU pretraining runs)."""
    kw = _arch_kwargs([16, 32, 64, 128], [1, 2, 2, 2], spatial_dims, residual=False, blocks=[2, 2, 2, 2],
                      decoder_convs=[2, 2, 2])
    return NnUNetBackbone(_DNA + "PlainConvUNet", kw, _REQ_IMPORT, in_channels, out_channels)


@register_backbone("nnunet_plain_tiny")
def nnunet_plain_tiny(in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3) -> NnUNetBackbone:
    """Smallest useful PlainConvUNet (3 stages, 8→32): for tests and smoke runs."""
    kw = _arch_kwargs([8, 16, 32], [1, 2, 2], spatial_dims, residual=False, blocks=[1, 1, 1], decoder_convs=[1, 1])
    return NnUNetBackbone(_DNA + "PlainConvUNet", kw, _REQ_IMPORT, in_channels, out_channels)


@register_backbone("nnunet_resenc_l")
def nnunet_resenc_l(in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3) -> NnUNetBackbone:
    """nnssl's ResEnc-L: 6 stages [32..320], blocks [1,3,4,6,6,6] (Wald et al. CVPR 2025, OpenMind ICCV 2025)."""
    kw = _arch_kwargs([32, 64, 128, 256, 320, 320], [1, 2, 2, 2, 2, 2], spatial_dims, residual=True,
                      blocks=[1, 3, 4, 6, 6, 6], decoder_convs=[1, 1, 1, 1, 1])
    return NnUNetBackbone(_DNA + "ResidualEncoderUNet", kw, _REQ_IMPORT, in_channels, out_channels)


@register_backbone("nnunet_from_plans")
def nnunet_from_plans(plans: str, configuration: str = "3d_fullres", in_channels: int | None = None,
                      out_channels: int | None = None) -> NnUNetBackbone:
    """The network of an nnU-Net plans file (route (a): pretrain with the target dataset's own plans)."""
    return NnUNetBackbone.from_plans(plans, configuration, in_channels, out_channels)

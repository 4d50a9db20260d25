"""MONAI's ``UNet`` and ``DynUNet`` as backbones (the networks of the zoo's ``spleen_ct_segmentation``,
``segmentation_template`` and DynUNet bundles), unrenamed.

Ronneberger et al., "U-Net", MICCAI 2015; Kerfoot et al., "Left-ventricle quantification using residual
U-Net", STACOM 2018 (MONAI's ``UNet`` with ``num_res_units``); Isensee et al., "nnU-Net", Nat. Methods
2021 (``DynUNet`` is MONAI's re-implementation of its network).

``UNet`` nests its levels: ``model = Sequential(down, SkipConnection(<next level>), up)``, the deepest
``SkipConnection`` holding the bottom layer; ``encode`` walks that nesting and keeps every down output
and the bottom, ``decode`` applies each ``up`` to ``cat(skip, deeper)`` as ``SkipConnection`` does, so
``decode(encode(x)) == network(x)``. Shapes (3D, ``channels`` c of length n, strides s): ``encode``
[(B, c0, D/s0, ...), ..., (B, c_{n-1}, ...)], ``decode`` (B, out_channels, D, H, W).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from monai.networks.layers.simplelayers import SkipConnection
from monai.networks.nets import DynUNet, UNet
from torch import nn

from monai_ssl_plugin.backbones._monai import build_unet_like, register_monai
from monai_ssl_plugin.backbones.base import BackboneAdapter

# the zoo's spleen_ct_segmentation network (also MONAI's tutorials)
SPLEEN_UNET = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "batch"}


def unet_levels(unet: nn.Module) -> tuple[list[nn.Sequential], nn.Module, list[str], str]:
    """(levels top-down, bottom layer, level key prefixes, bottom prefix) of a ``monai.networks.nets.UNet``."""
    levels, prefixes, seq, prefix = [], [], unet.model, "model"
    while True:
        levels.append(seq)
        prefixes.append(prefix)
        sub = seq[1].submodule
        if isinstance(sub, nn.Sequential) and len(sub) == 3 and isinstance(sub[1], SkipConnection):
            seq, prefix = sub, f"{prefix}.1.submodule"
            continue
        return levels, sub, prefixes, f"{prefix}.1.submodule"


class MonaiUNetBackbone(BackboneAdapter):
    """Adapter over ``monai.networks.nets.UNet``; keyword arguments are ``UNet``'s own.

    Args:
        in_channels / out_channels: ``out_channels`` defaults to ``in_channels`` (reconstruction targets).
        spatial_dims: 2 or 3.
        **kwargs: ``channels``, ``strides`` (default: the zoo's spleen UNet), ``kernel_size``, ``num_res_units``,
            ``act``, ``norm``, ``dropout``, ``bias``, ``adn_ordering``.
    """

    family = "monai.UNet"
    has_decoder = True

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3, **kwargs: Any):
        network, ctor, out_channels = build_unet_like(UNet, spatial_dims, in_channels, out_channels,
                                                      {**SPLEEN_UNET, **kwargs})
        channels = [int(c) for c in ctor["channels"]]
        super().__init__(network, spatial_dims=spatial_dims, in_channels=in_channels, embed_dim=channels[-1],
                         out_channels=out_channels, constructor=ctor)
        self.feature_channels = channels
        self._stride = math.prod(int(s) for s in ctor["strides"])

    def divisor(self) -> list[int]:
        return [self._stride] * self.spatial_dims

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every down output, then the bottom output (what each ``SkipConnection`` concatenates)."""
        levels, bottom, _, _ = unet_levels(self.network)
        features = []
        for level in levels:
            x = level[0](x)
            features.append(x)
        features.append(bottom(x))
        return features

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        levels = unet_levels(self.network)[0]
        y = features[-1]
        for i in range(len(levels) - 1, -1, -1):
            y = levels[i][2](torch.cat([features[i], y], dim=1))
        return y

    def encoder_stages(self) -> list[nn.Module]:
        levels, bottom, _, _ = unet_levels(self.network)
        return [level[0] for level in levels] + [bottom]

    def key_prefixes(self) -> dict[str, Any]:
        _, _, prefixes, bottom = unet_levels(self.network)
        downs = [f"{p}.0" for p in prefixes]
        first = ("model.0.conv.weight", "model.0.conv.unit0.conv.weight", "model.0.residual.weight")
        in_proj = [k for k in self.network.state_dict() if k in first]
        return {"stem": downs[0], "encoder": downs + [bottom], "decoder": [f"{p}.2" for p in prefixes],
                "in_proj": in_proj}


@register_monai("monai_unet", family="monai.UNet", dense=True, dims=[2, 3], sparse_masking=True,
                input="multiple of the product of strides (16)")
def monai_unet(in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3,
               **kwargs: Any) -> MonaiUNetBackbone:
    """MONAI ``UNet`` with the zoo's spleen settings (channels 16..256, strides 2, 2 residual units, batch norm)."""
    return MonaiUNetBackbone(in_channels, out_channels, spatial_dims, **kwargs)


class MonaiDynUNetBackbone(BackboneAdapter):
    """Adapter over ``monai.networks.nets.DynUNet`` (no deep supervision); keyword arguments are its own.

    Defaults: five levels of 3x3x3 kernels, strides (1, 2, 2, 2, 2), filters 32..512 as in DynUNet.
    """

    family = "monai.DynUNet"
    has_decoder = True

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3, **kwargs: Any):
        defaults = {"kernel_size": [3] * 5, "strides": [1, 2, 2, 2, 2], "upsample_kernel_size": [2, 2, 2, 2]}
        network, ctor, out_channels = build_unet_like(DynUNet, spatial_dims, in_channels, out_channels,
                                                      {**defaults, **kwargs, "deep_supervision": False})
        channels = [int(f) for f in network.filters]
        super().__init__(network, spatial_dims=spatial_dims, in_channels=in_channels, embed_dim=channels[-1],
                         out_channels=out_channels, constructor=ctor)
        self.feature_channels = channels
        strides = [s if isinstance(s, list) else [s] * spatial_dims for s in ctor["strides"]]
        self._divisor = [math.prod(int(s[d]) for s in strides) for d in range(spatial_dims)]

    def divisor(self) -> list[int]:
        return list(self._divisor)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.network
        features = [net.input_block(x)]
        for down in net.downsamples:
            features.append(down(features[-1]))
        features.append(net.bottleneck(features[-1]))
        return features

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        net = self.network
        y = features[-1]
        for i, up in enumerate(net.upsamples):
            y = up(y, features[-2 - i])
        return net.output_block(y)

    def encoder_stages(self) -> list[nn.Module]:
        net = self.network
        return [net.input_block, *net.downsamples, net.bottleneck]

    def key_prefixes(self) -> dict[str, Any]:
        return {"stem": "input_block", "encoder": ["input_block", "downsamples", "bottleneck"],
                "decoder": ["upsamples", "output_block"], "in_proj": ["input_block.conv1.conv.weight"]}


@register_monai("monai_dynunet", family="monai.DynUNet", dense=True, dims=[2, 3], sparse_masking=True,
                input="multiple of the product of strides (16)")
def monai_dynunet(in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3,
                  **kwargs: Any) -> MonaiDynUNetBackbone:
    """MONAI ``DynUNet``, five levels (strides 1, 2, 2, 2, 2); kwargs pass through."""
    return MonaiDynUNetBackbone(in_channels, out_channels, spatial_dims, **kwargs)

"""MONAI's ``DenseNet`` (``DenseNet121..264``) as a backbone: the ``features`` of a 3D classifier.

Huang et al., "Densely Connected Convolutional Networks", CVPR 2017 (MONAI's 3D version: the
network of the zoo's ``classification_template`` and ``endoscopic_inbody_classification``-style bundles).

``adapter.network`` is the whole ``DenseNet``; SSL trains ``features`` (the downstream classifier
receives them) and never its ``class_layers``. Shapes (3D, DenseNet121): input (B, C, D, H, W) ->
``encode`` [denseblock1 (B, 256, D/4, ...), denseblock2 (B, 512, D/8, ...), denseblock3 (B, 1024, D/16, ...),
denseblock4 + norm5 (B, 1024, D/32, ...)]; ``embed`` (B, 1024). No decoder: dense pretexts use the
pretext-owned :func:`~monai_ssl_plugin.backbones.resnet.make_light_decoder`.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import DenseNet
from torch import nn

from monai_ssl_plugin.backbones._monai import build_network, check_spatial_dims, json_kwargs, register_monai
from monai_ssl_plugin.backbones.base import BackboneAdapter

_ARCHS = {"densenet121": [6, 12, 24, 16], "densenet169": [6, 12, 32, 32], "densenet201": [6, 12, 48, 32],
          "densenet264": [6, 12, 64, 48]}


def dense_channels(init_features: int, growth_rate: int, block_config: list[int]) -> list[int]:
    """Channels after each dense block (a transition halves them before the next block)."""
    out, ch = [], int(init_features)
    for i, n in enumerate(block_config):
        ch += int(n) * int(growth_rate)
        out.append(ch)
        if i < len(block_config) - 1:
            ch //= 2
    return out


class MonaiDenseNetBackbone(BackboneAdapter):
    """Adapter over ``monai.networks.nets.DenseNet``; keyword arguments are ``DenseNet``'s own.

    Args:
        spatial_dims, in_channels: as in ``DenseNet``.
        out_channels: classes of ``class_layers`` (never pretrained; the downstream owns its head).
        **kwargs: ``init_features``, ``growth_rate``, ``block_config``, ``bn_size``, ``act``, ``norm``, ``dropout_prob``.
    """

    family = "monai.DenseNet"
    has_decoder = False

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2, **kwargs: Any):
        check_spatial_dims(spatial_dims, "DenseNet")
        defaults = {"init_features": 64, "growth_rate": 32, "block_config": _ARCHS["densenet121"]}
        ctor = json_kwargs({"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels,
                            **{**defaults, **kwargs}}, "DenseNet")
        network = build_network(DenseNet, ctor)
        channels = dense_channels(ctor["init_features"], ctor["growth_rate"], ctor["block_config"])
        super().__init__(network, spatial_dims=spatial_dims, in_channels=in_channels, embed_dim=channels[-1],
                         out_channels=0, constructor=ctor)
        self.feature_channels = channels
        self.stem_stride = [4] * spatial_dims  # conv0 (stride 2) and pool0 (stride 2) before the first block

    def divisor(self) -> list[int]:
        return [2 ** (len(self.feature_channels) + 1)] * self.spatial_dims

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every dense block; the last after ``norm5``, as the classifier reads it."""
        features = []
        for name, module in self.network.features.named_children():
            x = module(x)
            if name.startswith("denseblock"):
                features.append(x)
            elif name == "norm5":
                features[-1] = x
        return features

    def encoder_stages(self) -> list[nn.Module]:
        return [m for n, m in self.network.features.named_children() if n.startswith("denseblock")]

    def key_prefixes(self) -> dict[str, Any]:
        return {"stem": ["features.conv0", "features.norm0"], "encoder": "features", "decoder": None,
                "in_proj": ["features.conv0.weight"], "head": "class_layers"}


def _densenet(arch: str, in_channels: int, spatial_dims: int, kwargs: dict[str, Any]) -> MonaiDenseNetBackbone:
    kwargs.setdefault("block_config", _ARCHS[arch])
    return MonaiDenseNetBackbone(spatial_dims, in_channels, **kwargs)


@register_monai("monai_densenet121", family="monai.DenseNet", dense=False, dims=[2, 3], sparse_masking=True,
                light_decoder=True, input="any size >= 32 (multiple of 32 for dense pretexts)")
def monai_densenet121(in_channels: int = 1, spatial_dims: int = 3, **kwargs: Any) -> MonaiDenseNetBackbone:
    """MONAI ``DenseNet121`` (blocks 6, 12, 24, 16); kwargs pass through to ``DenseNet``."""
    return _densenet("densenet121", in_channels, spatial_dims, kwargs)

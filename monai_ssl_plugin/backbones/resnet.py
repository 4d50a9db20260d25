"""MONAI's ResNet (``monai.networks.nets.ResNet`` / ``resnet10..200``) as a backbone.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; Hara et al., "Can
Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?", CVPR 2018 (the 3D variant
MONAI adapts); Chen et al., "Med3D", 2019 (MedicalNet: ``shortcut_type="B", bias_downsample=False``).

This is the network MONAI's RetinaNet wraps (``resnet_fpn_feature_extractor``; model zoo
``lung_nodule_ct_detection``: ``resnet50(spatial_dims=3, n_input_channels=1, conv1_t_stride=[2,2,1],
conv1_t_size=[7,7,7])``) and that 3D classifiers use, so ``adapter.network.state_dict()`` keys equal
RetinaNet's ``feature_extractor.body.*`` keys with the prefix removed (the detector keeps the layers up
to its deepest returned layer) and a classifier's keys except its own ``fc``.

Shapes (3D, defaults ``conv1_t_stride=1``, max-pool on): input (B, C, D, H, W) →
``encode`` [layer1 (B, 64·e, D/2, …), layer2 (…/4), layer3 (…/8), layer4 (B, 512·e, D/16, …)] with
expansion e = 1 (basic blocks: resnet10/18/34) or 4 (bottleneck: resnet50+); ``embed`` (B, 512·e).
There is no decoder: dense pretexts pair it with :func:`make_light_decoder`, which the pretext owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm
from monai.networks.nets.resnet import ResNet
from torch import nn

from monai_ssl_plugin.backbones._monai import build_network, check_spatial_dims, json_kwargs, register_monai
from monai_ssl_plugin.backbones.base import BackboneAdapter

# MONAI's resnet factories: (block, layers); block_inplanes is always [64, 128, 256, 512].
RESNET_ARCHS: dict[str, tuple[str, list[int]]] = {
    "resnet10": ("basic", [1, 1, 1, 1]), "resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]), "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]), "resnet200": ("bottleneck", [3, 24, 36, 3]),
}
_EXPANSION = {"basic": 1, "bottleneck": 4}
_INPLANES = [64, 128, 256, 512]


class MonaiResNetBackbone(BackboneAdapter):
    """Adapter over ``monai.networks.nets.ResNet``; the keyword arguments are ``ResNet``'s own.

    Args:
        block: ``"basic"`` or ``"bottleneck"`` (strings, so the record stays JSON).
        layers: blocks per stage, e.g. ``[3, 4, 6, 3]`` for resnet50.
        block_inplanes: stage widths before expansion (MONAI's ``get_inplanes()``).
        spatial_dims: 2 or 3.
        n_input_channels: input channels.
        **kwargs: any other ``ResNet`` argument (``conv1_t_size``, ``conv1_t_stride``, ``no_max_pool``,
            ``shortcut_type``, ``bias_downsample``, ``widen_factor``, ``feed_forward``, ``num_classes``,
            ``act``, ``norm``), recorded and passed through unchanged.
    """

    family = "monai.ResNet"
    has_decoder = False

    def __init__(self, block: str, layers: Sequence[int], block_inplanes: Sequence[int] = tuple(_INPLANES),
                 spatial_dims: int = 3, n_input_channels: int = 1, **kwargs: Any):
        check_spatial_dims(spatial_dims, "ResNet")
        ctor = json_kwargs({"block": block, "layers": list(layers), "block_inplanes": list(block_inplanes),
                            "spatial_dims": spatial_dims, "n_input_channels": n_input_channels, **kwargs}, "ResNet")
        network = build_network(ResNet, ctor)
        widen = float(ctor.get("widen_factor", 1.0))
        channels = [int(p * widen) * _EXPANSION[block] for p in ctor["block_inplanes"]]
        super().__init__(network, spatial_dims=spatial_dims, in_channels=n_input_channels,
                         embed_dim=channels[-1], out_channels=0, constructor=ctor)
        self.feature_channels = channels
        # stride of layer1's output relative to the input (conv1 stride × max-pool): the light decoder
        # upsamples by this to get back to the input resolution
        stride = ctor.get("conv1_t_stride", 1)
        stride = list(stride) if isinstance(stride, list) else [int(stride)] * spatial_dims
        self.stem_stride = [int(s) * (1 if ctor.get("no_max_pool", False) else 2) for s in stride]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[layer1, layer2, layer3, layer4] outputs, as ResNet.forward computes them before pooling."""
        net = self.network
        x = net.act(net.bn1(net.conv1(x)))
        if not net.no_max_pool:
            x = net.maxpool(x)
        features = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = layer(x)
            features.append(x)
        return features

    def encoder_stages(self) -> list[nn.Module]:
        net = self.network
        return [net.layer1, net.layer2, net.layer3, net.layer4]

    def key_prefixes(self) -> dict[str, Any]:
        return {"stem": ["conv1", "bn1"], "encoder": ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"],
                "decoder": None, "in_proj": ["conv1.weight"],
                "head": "fc" if self.network.fc is not None else None}  # the head is never transferred


def _resnet(arch: str, in_channels: int, spatial_dims: int, kwargs: dict[str, Any]) -> MonaiResNetBackbone:
    block, layers = RESNET_ARCHS[arch]
    kwargs.setdefault("feed_forward", False)  # SSL never trains the 400-class head; the downstream owns its fc
    return MonaiResNetBackbone(block, layers, _INPLANES, spatial_dims=spatial_dims, n_input_channels=in_channels,
                               **kwargs)


_CAPS = {"family": "monai.ResNet", "dense": False, "dims": [2, 3], "sparse_masking": True, "light_decoder": True,
         "input": "any size"}


@register_monai("monai_resnet10", **_CAPS)
def monai_resnet10(in_channels: int = 1, spatial_dims: int = 3, **kwargs: Any) -> MonaiResNetBackbone:
    """MONAI ``resnet10`` (basic blocks [1,1,1,1]); kwargs pass through to ``ResNet``."""
    return _resnet("resnet10", in_channels, spatial_dims, kwargs)


@register_monai("monai_resnet18", **_CAPS)
def monai_resnet18(in_channels: int = 1, spatial_dims: int = 3, **kwargs: Any) -> MonaiResNetBackbone:
    """MONAI ``resnet18`` (basic blocks [2,2,2,2]); kwargs pass through to ``ResNet``."""
    return _resnet("resnet18", in_channels, spatial_dims, kwargs)


@register_monai("monai_resnet50", **_CAPS)
def monai_resnet50(in_channels: int = 1, spatial_dims: int = 3, **kwargs: Any) -> MonaiResNetBackbone:
    """MONAI ``resnet50`` (bottleneck [3,4,6,3]).

    The detection zoo's backbone: add ``conv1_t_stride=[2, 2, 1], conv1_t_size=[7, 7, 7]``.
    """
    return _resnet("resnet50", in_channels, spatial_dims, kwargs)


class LightDecoder(nn.Module):
    """A small top-down decoder for encoders without one (FPN-style, as SparK's light decoder).

    Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017; Tian et al. (SparK),
    ICLR 2023. Each level gets a 1×1 lateral to ``width`` channels, the coarser result is
    interpolated to its size and added, then a 3×3 conv–norm–act smooths it; a last interpolation
    reaches the input resolution and a 3×3 + 1×1 head gives ``out_channels``. Interpolation (not
    transposed convs) keeps it valid for any stride pattern, e.g. the detector's anisotropic
    ``conv1_t_stride=[2,2,1]``.

    It belongs to the pretext: it is not part of ``adapter.network`` and is never exported.
    ``forward(features, size)`` → (B, out_channels, *size); ``size`` defaults to the finest level's
    size times ``stem_stride``.
    """

    def __init__(self, feature_channels: Sequence[int], out_channels: int, spatial_dims: int, width: int = 64,
                 stem_stride: Sequence[int] | None = None):
        super().__init__()
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.INSTANCE, spatial_dims]
        self.spatial_dims = spatial_dims
        self.stem_stride = list(stem_stride) if stem_stride is not None else [1] * spatial_dims
        self.laterals = nn.ModuleList(conv(c, width, kernel_size=1) for c in feature_channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(conv(width, width, kernel_size=3, padding=1), norm(width, affine=True),
                          nn.LeakyReLU(inplace=True))
            for _ in feature_channels[:-1])
        head = max(width // 4, 8)  # the full-resolution conv dominates the cost: keep it thin
        self.head = nn.Sequential(conv(width, head, kernel_size=3, padding=1), norm(head, affine=True),
                                  nn.LeakyReLU(inplace=True), conv(head, out_channels, kernel_size=1))
        self._mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int] | None = None) -> torch.Tensor:
        x = self.laterals[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            x = F.interpolate(x, size=features[i].shape[2:], mode=self._mode, align_corners=False)
            x = self.smooth[i](x + self.laterals[i](features[i]))
        if size is None:
            size = [s * st for s, st in zip(features[0].shape[2:], self.stem_stride)]
        x = F.interpolate(x, size=tuple(int(s) for s in size), mode=self._mode, align_corners=False)
        return self.head(x)


def make_light_decoder(adapter: BackboneAdapter, out_channels: int, width: int = 64) -> LightDecoder:
    """A :class:`LightDecoder` sized from ``adapter.feature_channels`` (pretext-owned, never exported)."""
    channels = getattr(adapter, "feature_channels", None)
    if channels is None:
        raise ValueError(f"{type(adapter).__name__} does not declare feature_channels")
    return LightDecoder(channels, out_channels, adapter.spatial_dims, width=width,
                        stem_stride=getattr(adapter, "stem_stride", None))

"""MONAI's SegResNet as a backbone (its own ``encode`` / ``decode`` methods, unchanged).

Myronenko, "3D MRI brain tumor segmentation using autoencoder regularization", BrainLes 2018
(the network of MONAI's ``brats_mri_segmentation`` bundle, without the VAE branch).

Shapes (3D, ``init_filters`` f, ``blocks_down`` of length n, default 4): input (B, C, D, H, W), each
side a multiple of 2^(n-1) → ``encode`` [(B, f, D, H, W), (B, 2f, D/2, …), …, (B, 2^(n-1) f, D/2^(n-1), …)];
``decode`` (B, out_channels, D, H, W); ``embed`` (B, 2^(n-1) f).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import SegResNet
from torch import nn

from monai_ssl_plugin.backbones._monai import build_unet_like, check_divisible, register_monai
from monai_ssl_plugin.backbones.base import BackboneAdapter


class MonaiSegResNetBackbone(BackboneAdapter):
    """Adapter over ``monai.networks.nets.SegResNet``; keyword arguments are ``SegResNet``'s own.

    Args:
        in_channels: input channels.
        out_channels: dense output channels (defaults to ``in_channels``: reconstruction targets).
        spatial_dims: 2 or 3.
        **kwargs: other ``SegResNet`` arguments (``init_filters``, ``blocks_down``, ``blocks_up``,
            ``norm``, ``act``, ``upsample_mode``, ``dropout_prob``, ``use_conv_final``).
    """

    family = "monai.SegResNet"
    has_decoder = True

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3, **kwargs: Any):
        network, ctor, out_channels = build_unet_like(SegResNet, spatial_dims, in_channels, out_channels, kwargs)
        f, n = network.init_filters, len(network.blocks_down)
        super().__init__(network, spatial_dims=spatial_dims, in_channels=in_channels, embed_dim=f * 2 ** (n - 1),
                         out_channels=out_channels if network.use_conv_final else f, constructor=ctor)
        self.feature_channels = [f * 2**i for i in range(n)]
        self._stride = 2 ** (n - 1)


    def divisor(self) -> list[int]:
        return [self._stride] * self.spatial_dims

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of every ``down_layers`` stage (SegResNet.encode's ``down_x``), shallow to deep."""
        return list(self.network.encode(x)[1])

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        # SegResNet.forward reverses down_x and starts from the deepest map; the up path adds the skips
        # element-wise, which only lines up when every stride-2 halving was exact
        check_divisible(features[0].shape[2:], self._stride, "SegResNet")
        return self.network.decode(features[-1], features[::-1])

    def encoder_stages(self) -> list[nn.Module]:
        return list(self.network.down_layers)

    def key_prefixes(self) -> dict[str, Any]:
        return {"stem": "convInit", "encoder": ["convInit", "down_layers"],
                "decoder": ["up_layers", "up_samples", "conv_final"], "in_proj": ["convInit.conv.weight"],
                "seg_layers": "conv_final.2"}


@register_monai("monai_segresnet", family="monai.SegResNet", dense=True, dims=[2, 3], sparse_masking=True,
                input="multiple of 2**(len(blocks_down)-1) (8)")
def monai_segresnet(in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3,
                    **kwargs: Any) -> MonaiSegResNetBackbone:
    """SegResNet with MONAI's defaults (init_filters 8, blocks_down (1,2,2,4), blocks_up (1,1,1))."""
    return MonaiSegResNetBackbone(in_channels, out_channels, spatial_dims, **kwargs)

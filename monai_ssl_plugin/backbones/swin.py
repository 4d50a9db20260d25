"""MONAI's SwinUNETR as a backbone: Swin transformer encoder (``swinViT``) + convolutional U-Net decoder.

Hatamizadeh et al., "Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors in MRI
Images", BrainLes 2021; Tang et al., "Self-Supervised Pre-Training of Swin Transformers for 3D Medical
Image Analysis", CVPR 2022 (the published SSL weights cover ``swinViT`` only, feature_size 48).

``adapter.network`` is the full ``SwinUNETR``, so a SwinUNETR bundle loads ``swinViT.*`` (encoder)
and, after a dense pretext, everything else (decoder) with unchanged names.

Shapes (3D, patch_size 2, feature size f): input (B, C, D, H, W), each side a multiple of 32 →
``encode`` [enc0 (B, f, D, H, W), h0 (B, f, D/2, …), h1 (B, 2f, D/4, …), h2 (B, 4f, D/8, …),
h3 (B, 8f, D/16, …), h4 (B, 16f, D/32, …)]; ``decode`` (B, out_channels, D, H, W); ``embed`` (B, 16f).
``enc0`` is SwinUNETR's full-resolution convolutional skip (``encoder1`` on the image): the decoder
reads the raw image through it, so ``encode`` computes it; its weights belong to the decoder prefix.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import SwinUNETR
from torch import nn

from monai_ssl_plugin.backbones._monai import (build_network, check_divisible, check_spatial_dims, json_kwargs,
                                               present, register_monai)
from monai_ssl_plugin.backbones.base import BackboneAdapter

_DECODER = ["encoder1", "encoder2", "encoder3", "encoder4", "encoder10",
            "decoder5", "decoder4", "decoder3", "decoder2", "decoder1", "out"]


class MonaiSwinUNETRBackbone(BackboneAdapter):
    """Adapter over ``monai.networks.nets.SwinUNETR``; the keyword arguments are ``SwinUNETR``'s own.

    Args:
        in_channels: input channels.
        out_channels: dense output channels (defaults to ``in_channels``: reconstruction targets).
        feature_size: f above; a multiple of 12 (MONAI default 24; Tang et al. used 48).
        spatial_dims: 2 or 3.
        **kwargs: any other ``SwinUNETR`` argument given as plain values (``depths``, ``num_heads``,
            ``window_size``, ``patch_size``, ``use_v2``, ``use_checkpoint``, ``normalize``, ...).
    """

    family = "monai.SwinUNETR"
    has_decoder = True

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, feature_size: int = 24,
                 spatial_dims: int = 3, **kwargs: Any):
        check_spatial_dims(spatial_dims, "SwinUNETR")
        out_channels = in_channels if out_channels is None else out_channels
        ctor = json_kwargs({"in_channels": in_channels, "out_channels": out_channels, "feature_size": feature_size,
                            "spatial_dims": spatial_dims, **kwargs}, "SwinUNETR")
        network = build_network(SwinUNETR, ctor)
        super().__init__(network, spatial_dims=spatial_dims, in_channels=in_channels, embed_dim=16 * feature_size,
                         out_channels=out_channels, constructor=ctor)
        f = feature_size
        self.feature_channels = [f, f, 2 * f, 4 * f, 8 * f, 16 * f]
        self._stride = int(network.patch_size) ** 5  # patch embedding + 4 patch-merging halvings


    def divisor(self) -> list[int]:
        return [self._stride] * self.spatial_dims

    def _hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_divisible(x.shape[2:], self._stride, "SwinUNETR")
        return list(self.network.swinViT(x, self.network.normalize))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[enc0, h0..h4]: ``encoder1(x)`` then the five swinViT hidden states, as SwinUNETR.forward uses them."""
        return [self.network.encoder1(x), *self._hidden_states(x)]

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """SwinUNETR.forward after its swinViT call, on ``encode``'s features."""
        net = self.network
        enc0, h = features[0], features[1:]
        enc1, enc2, enc3 = net.encoder2(h[0]), net.encoder3(h[1]), net.encoder4(h[2])
        dec3 = net.decoder5(net.encoder10(h[4]), h[3])
        dec0 = net.decoder2(net.decoder3(net.decoder4(dec3, enc3), enc2), enc1)
        return net.out(net.decoder1(dec0, enc0))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._hidden_states(x)[-1].flatten(2).mean(-1)  # swinViT only: the decoder side is not run

    def encoder_stages(self) -> list[nn.Module]:
        # patch embedding and each Swin stage return channel-first maps, so SparK's re-masking applies
        vit = self.network.swinViT
        return [vit.patch_embed, vit.layers1[0], vit.layers2[0], vit.layers3[0], vit.layers4[0]]

    def key_prefixes(self) -> dict[str, Any]:
        keys = self.network.state_dict().keys()
        return {"stem": "swinViT.patch_embed", "encoder": "swinViT", "decoder": list(_DECODER),
                "in_proj": present(keys, ["swinViT.patch_embed.proj.weight", "encoder1.layer.conv1.conv.weight",
                                          "encoder1.layer.conv3.conv.weight"]),
                "seg_layers": "out"}


@register_monai("monai_swinunetr", family="monai.SwinUNETR", dense=True, dims=[2, 3], sparse_masking=True,
                input="multiple of patch_size**5 (32); instance norm needs >1 bottleneck voxel")
def monai_swinunetr(in_channels: int = 1, out_channels: int | None = None, feature_size: int = 24,
                    spatial_dims: int = 3, **kwargs: Any) -> MonaiSwinUNETRBackbone:
    """SwinUNETR (MONAI defaults: depths (2,2,2,2), heads (3,6,12,24), window 7); f=48 matches Tang et al."""
    return MonaiSwinUNETRBackbone(in_channels, out_channels, feature_size, spatial_dims, **kwargs)

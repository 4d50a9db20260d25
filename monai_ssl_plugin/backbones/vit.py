"""MONAI's ViT and UNETR as backbones, and the key map from MONAI's MaskedAutoEncoderViT onto them.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021; Hatamizadeh et al., "UNETR:
Transformers for 3D Medical Image Segmentation", WACV 2022; He et al., "Masked Autoencoders Are
Scalable Vision Learners", CVPR 2022; Touvron et al., "Training data-efficient image transformers"
(DeiT), ICML 2021 (the ViT-Tiny width used by the ``*_small`` presets: 192 hidden, 3 heads, MLP 768).

UNETR hard-codes its ViT: 12 blocks, 16-voxel patches, learnable position embeddings, no class token,
taking hidden states 3, 6, 9 and the normalised output. A plain ``ViT`` built with those settings
(``monai_vit*`` presets) has exactly the keys of ``UNETR.vit`` (``{"": "vit."}`` maps one onto the
other); :func:`mae_vit_key_map` maps a ``MaskedAutoEncoderViT`` encoder onto either.

Shapes (3D, image (D, H, W) fixed at construction, grid g = (D/16, H/16, W/16), hidden size h):
``ViT.encode`` [t3, t6, t9, t_out], each (B, h, *g); ``UNETR.encode`` [enc1 (B, feature_size, D, H, W),
t3, t6, t9, t_out]; ``UNETR.decode`` (B, out_channels, D, H, W); ``embed`` (B, h), the mean token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import UNETR, ViT
from torch import nn

from monai_ssl_plugin.backbones._monai import build_network, check_spatial_dims, json_kwargs, present, register_monai
from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.errors import PluginError

# What UNETR fixes inside its ViT (monai.networks.nets.unetr): a ViT must match these to share keys.
UNETR_VIT = {"patch_size": 16, "num_layers": 12, "pos_embed_type": "learnable", "classification": False}
# ViT-Tiny (DeiT): small enough for CPU runs, still the standard 12-block depth UNETR needs.
_SMALL = {"hidden_size": 192, "mlp_dim": 768, "num_heads": 3}
_UNETR_DECODER = ["encoder1", "encoder2", "encoder3", "encoder4", "decoder5", "decoder4", "decoder3", "decoder2",
                  "out"]


def _sides(size: Sequence[int] | int, dims: int) -> list[int]:
    return [int(size)] * dims if isinstance(size, int) else [int(s) for s in size]


def _grid(img_size: Sequence[int] | int, patch_size: Sequence[int] | int, dims: int) -> list[int]:
    img, patch = _sides(img_size, dims), _sides(patch_size, dims)
    if len(img) != dims or len(patch) != dims or any(i % p for i, p in zip(img, patch)):
        raise PluginError(f"img_size {img} must have {dims} sides, each a multiple of the patch size {patch}.",
                          "Choose an img_size (the training patch size) divisible by the patch size.")
    return [i // p for i, p in zip(img, patch)]


def _check_size(x: torch.Tensor, grid: Sequence[int], patch: Sequence[int], network: str) -> None:
    # position embeddings are learnt for one token grid: any other input size fails deep inside
    expected = [g * p for g, p in zip(grid, patch)]
    if list(x.shape[2:]) != expected:
        raise PluginError(f"{network} was built for inputs of size {expected}; got {list(x.shape[2:])}.",
                          f"Crop patches of {expected}, or rebuild the backbone with img_size={list(x.shape[2:])}.")


def _tokens(vit: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """ViT.forward without its classification head: (normalised output tokens, per-block hidden states)."""
    x = vit.patch_embedding(x)
    if hasattr(vit, "cls_token"):
        x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    hidden = []
    for block in vit.blocks:
        x = block(x)
        hidden.append(x)
    return vit.norm(x), hidden


def _to_map(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """(B, N, h) patch tokens → (B, h, *grid), as UNETR.proj_feat does (class token dropped)."""
    tokens = tokens[:, -math.prod(grid):]
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid).contiguous()


class MonaiViTBackbone(BackboneAdapter):
    """Adapter over a plain ``monai.networks.nets.ViT`` (no decoder); keyword arguments are ``ViT``'s own.

    Defaults follow :data:`UNETR_VIT`, so the pretrained keys are those of ``UNETR.vit``. ``encode``
    returns the hidden states at depths L/4, L/2, 3L/4 (3, 6, 9 for L = 12, UNETR's skips) and the
    normalised output, as channel-first token maps.
    """

    family = "monai.ViT"
    has_decoder = False

    def __init__(self, in_channels: int = 1, img_size: Sequence[int] | int = 96, spatial_dims: int = 3,
                 **kwargs: Any):
        check_spatial_dims(spatial_dims, "ViT")
        kw = {**UNETR_VIT, **kwargs}
        ctor = json_kwargs({"in_channels": in_channels, "img_size": img_size, "spatial_dims": spatial_dims, **kw},
                           "ViT")
        patch = _sides(ctor["patch_size"], spatial_dims)
        grid = _grid(ctor["img_size"], patch, spatial_dims)
        network = build_network(ViT, ctor)
        hidden = int(ctor.get("hidden_size", 768))
        super().__init__(network, spatial_dims=spatial_dims, in_channels=in_channels, embed_dim=hidden,
                         out_channels=0, constructor=ctor)
        self.grid, self.patch = grid, patch
        self.stem_stride = patch  # for make_light_decoder: token maps are 1/patch of the input
        n = len(network.blocks)
        self.skip_layers = [n // 4, n // 2, 3 * n // 4]  # 3, 6, 9 for 12 blocks: UNETR's skips
        self.feature_channels = [hidden] * 4

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        _check_size(x, self.grid, self.patch, "ViT")
        out, hidden = _tokens(self.network, x)
        return [_to_map(hidden[i], self.grid) for i in self.skip_layers] + [_to_map(out, self.grid)]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(x, self.grid, self.patch, "ViT")
        out, _ = _tokens(self.network, x)
        return out[:, -math.prod(self.grid):].mean(1)  # patch tokens only (a class token, if any, is left out)

    def encoder_stages(self) -> list[nn.Module]:
        # transformer blocks emit (B, N, h) tokens, not maps, and attend globally: SparK's per-stage
        # re-masking does not apply; masked pretexts mask the input only
        return []

    def key_prefixes(self) -> dict[str, Any]:
        keys = self.network.state_dict().keys()
        return {"stem": "patch_embedding", "encoder": ["patch_embedding", "blocks", "norm"], "decoder": None,
                "in_proj": present(keys, ["patch_embedding.patch_embeddings.weight"]),
                "head": "classification_head" if hasattr(self.network, "classification_head") else None}


class MonaiUNETRBackbone(BackboneAdapter):
    """Adapter over ``monai.networks.nets.UNETR``; keyword arguments are ``UNETR``'s own.

    Args:
        in_channels: input channels.
        out_channels: dense output channels (defaults to ``in_channels``: reconstruction targets).
        img_size: the fixed input size (each side a multiple of 16).
        spatial_dims: 2 or 3.
        **kwargs: other ``UNETR`` arguments (``feature_size``, ``hidden_size``, ``mlp_dim``,
            ``num_heads``, ``proj_type``, ``norm_name``, ``res_block``, ``qkv_bias``, ...).
    """

    family = "monai.UNETR"
    has_decoder = True

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, img_size: Sequence[int] | int = 96,
                 spatial_dims: int = 3, **kwargs: Any):
        check_spatial_dims(spatial_dims, "UNETR")
        out_channels = in_channels if out_channels is None else out_channels
        ctor = json_kwargs({"in_channels": in_channels, "out_channels": out_channels, "img_size": img_size,
                            "spatial_dims": spatial_dims, **kwargs}, "UNETR")
        grid = _grid(ctor["img_size"], UNETR_VIT["patch_size"], spatial_dims)
        network = build_network(UNETR, ctor)
        super().__init__(network, spatial_dims=spatial_dims, in_channels=in_channels,
                         embed_dim=int(network.hidden_size), out_channels=out_channels, constructor=ctor)
        self.grid = grid
        self.patch = [UNETR_VIT["patch_size"]] * spatial_dims
        f = int(ctor.get("feature_size", 16))
        self.feature_channels = [f] + [int(network.hidden_size)] * 4

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[enc1, t3, t6, t9, t_out]: UNETR's full-resolution conv skip, then its ViT token maps."""
        _check_size(x, self.grid, self.patch, "UNETR")
        out, hidden = self.network.vit(x)
        net = self.network
        return [net.encoder1(x), *(net.proj_feat(hidden[i]) for i in (3, 6, 9)), net.proj_feat(out)]

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """UNETR.forward after its ViT call, on ``encode``'s features."""
        net = self.network
        enc1, t3, t6, t9, out = features
        dec3 = net.decoder5(out, net.encoder4(t9))
        dec2 = net.decoder4(dec3, net.encoder3(t6))
        dec1 = net.decoder3(dec2, net.encoder2(t3))
        return net.out(net.decoder2(dec1, enc1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(x, self.grid, self.patch, "UNETR")
        return self.network.vit(x)[0].mean(1)  # the decoder side is not run

    def encoder_stages(self) -> list[nn.Module]:
        return []  # see MonaiViTBackbone.encoder_stages

    def key_prefixes(self) -> dict[str, Any]:
        keys = self.network.state_dict().keys()
        return {"stem": "vit.patch_embedding", "encoder": "vit", "decoder": list(_UNETR_DECODER),
                "in_proj": present(keys, ["vit.patch_embedding.patch_embeddings.weight",
                                          "encoder1.layer.conv1.conv.weight", "encoder1.layer.conv3.conv.weight"]),
                "seg_layers": "out"}


def mae_vit_key_map(num_layers: int = 12, dst_prefix: str = "vit.") -> dict[str, str]:
    """Key map (for :func:`monai_ssl_plugin.transfer.keymap.remap_keys`) from ``MaskedAutoEncoderViT`` to a ViT.

    MAE-ViT keeps the encoder's final LayerNorm as the last element of ``blocks`` (``blocks.{L}``),
    where ``ViT`` names it ``norm``; patch embedding and blocks 0..L-1 keep their names. Its
    ``cls_token``, ``mask_tokens`` and ``decoder_*`` have no counterpart and are dropped. Use
    ``dst_prefix="vit."`` for UNETR, ``""`` for a plain ViT. Source and target must agree on
    hidden_size, mlp_dim (MAE-ViT defaults to 512, UNETR to 3072), num_heads, qkv_bias, 16-voxel
    patches and 12 layers; MAE-ViT's default sin-cos position embedding is copied into UNETR's learnable one.
    """
    return {"patch_embedding.": f"{dst_prefix}patch_embedding.", f"blocks.{num_layers}.": f"{dst_prefix}norm.",
            "blocks.": f"{dst_prefix}blocks."}


_VIT_CAPS = {"family": "monai.ViT", "dense": False, "dims": [2, 3], "sparse_masking": False, "light_decoder": True,
             "input": "exactly img_size (multiple of 16)"}
_UNETR_CAPS = {"family": "monai.UNETR", "dense": True, "dims": [2, 3], "sparse_masking": False,
               "input": "exactly img_size (multiple of 16)"}


@register_monai("monai_vit", **_VIT_CAPS)
def monai_vit(in_channels: int = 1, img_size: Sequence[int] | int = 96, spatial_dims: int = 3,
              **kwargs: Any) -> MonaiViTBackbone:
    """ViT with UNETR's encoder settings (ViT-B width by default: hidden 768, 12 heads, MLP 3072)."""
    return MonaiViTBackbone(in_channels, img_size, spatial_dims, **kwargs)


@register_monai("monai_vit_small", **_VIT_CAPS)
def monai_vit_small(in_channels: int = 1, img_size: Sequence[int] | int = 96, spatial_dims: int = 3,
                    **kwargs: Any) -> MonaiViTBackbone:
    """ViT-Tiny width (192 hidden, 3 heads, MLP 768), UNETR's 12 blocks: the keys of ``monai_unetr_small``'s ``vit``."""
    return MonaiViTBackbone(in_channels, img_size, spatial_dims, **{**_SMALL, **kwargs})


@register_monai("monai_unetr", **_UNETR_CAPS)
def monai_unetr(in_channels: int = 1, out_channels: int | None = None, img_size: Sequence[int] | int = 96,
                spatial_dims: int = 3, **kwargs: Any) -> MonaiUNETRBackbone:
    """UNETR with MONAI's defaults (ViT-B: hidden 768, 12 heads, MLP 3072; feature_size 16)."""
    return MonaiUNETRBackbone(in_channels, out_channels, img_size, spatial_dims, **kwargs)


@register_monai("monai_unetr_small", **_UNETR_CAPS)
def monai_unetr_small(in_channels: int = 1, out_channels: int | None = None, img_size: Sequence[int] | int = 96,
                      spatial_dims: int = 3, **kwargs: Any) -> MonaiUNETRBackbone:
    """UNETR over a ViT-Tiny-width encoder (192 hidden, 3 heads, MLP 768; feature_size 16) for CPU runs."""
    return MonaiUNETRBackbone(in_channels, out_channels, img_size, spatial_dims, **{**_SMALL, **kwargs})

"""Masked autoencoding with a Vision Transformer: MONAI's ``MaskedAutoEncoderViT``, exported for ``UNETR.vit``.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (mask 75 % of the patch
tokens, encode only the visible ones, a light transformer decoder predicts the voxels of the masked
patches, MSE on masked patches); Chen et al., "Masked Image Modeling Advances 3D Medical Image
Analysis", WACV 2023 (MAE on 3D CT/MRI with ViT/UNETR); recipe (ViT variants):
AdamW lr 3e-4, weight decay 0.05, betas (0.9, 0.98), warm-up.

The model is MONAI's :class:`~monai.networks.nets.MaskedAutoEncoderViT`, reused as is except for
where its token mask comes from (the plugin's one masking routine,
:func:`~monai_ssl_plugin.transforms.masking.random_block_mask`, with one block per token). Its
encoder *is* the backbone's ViT: ``patch_embedding`` and the transformer blocks are the very
modules of the adapter's network (``ViT`` or ``UNETR.vit``), and MAE-ViT's final encoder LayerNorm
(``blocks.{L}``) is the ViT's ``norm``. So the checkpoint's ``network`` holds exactly the keys of
``monai.networks.nets.ViT`` (``patch_embedding.*``, ``blocks.0..L-1.*``, ``norm.*``), which
``UNETR.vit`` loads under ``vit.`` — the mapping of
:func:`monai_ssl_plugin.backbones.mae_vit_key_map`. ``cls_token``, ``mask_tokens`` and
``decoder_*`` stay in the pretext.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from monai.networks.nets import MaskedAutoEncoderViT
from torch import nn

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.backbones.vit import MonaiViTBackbone, mae_vit_key_map
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.losses.masked_reconstruction import MaskedReconstructionLoss
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.transforms.masking import random_block_mask

__all__ = ["MaskedAutoEncoderViTBackbone", "MaskedAutoEncoderViTPretext", "mae_vit_backbone", "mae_vit_network",
           "patchify", "unpatchify"]

# ViT widths: "small" = ViT-Tiny (DeiT; the plugin's *_small presets), "base" = ViT-B (UNETR's default)
VIT_WIDTHS = {"small": {"hidden_size": 192, "mlp_dim": 768, "num_heads": 3},
              "base": {"hidden_size": 768, "mlp_dim": 3072, "num_heads": 12}}


class MaskedAutoEncoderViTBackbone(MonaiViTBackbone):
    """The encoder of a ``MaskedAutoEncoderViT`` as a backbone: a MONAI ``ViT`` with UNETR's encoder settings.

    ``network`` is a plain ``monai.networks.nets.ViT`` (so ``network.state_dict()`` loads strictly
    into ``ViT`` and, under ``vit.``, into ``UNETR``); the record calls the family
    ``monai.MaskedAutoEncoderViT``, its ``constructor`` holds the ``MaskedAutoEncoderViT`` encoder
    arguments, and ``key_prefixes()`` adds how MAE-ViT keys became these keys (``key_map``) and
    where they load (``load_into``).

    Args:
        in_channels, img_size, spatial_dims: as for ``ViT`` (``img_size`` = the training patch).
        hidden_size, mlp_dim, num_heads, num_layers, patch_size, qkv_bias: encoder settings; they
            must match the downstream UNETR (12 layers, 16-voxel patches are all UNETR builds).
    """

    family = "monai.MaskedAutoEncoderViT"

    def __init__(self, in_channels: int = 1, img_size: Sequence[int] | int = 96, spatial_dims: int = 3,
                 hidden_size: int = 192, mlp_dim: int = 768, num_heads: int = 3, num_layers: int = 12,
                 patch_size: int = 16, qkv_bias: bool = False):
        super().__init__(in_channels, img_size, spatial_dims, hidden_size=hidden_size, mlp_dim=mlp_dim,
                         num_heads=num_heads, num_layers=num_layers, patch_size=patch_size, qkv_bias=qkv_bias)
        self.vit_constructor = dict(self.constructor)  # ViT(**vit_constructor) is the downstream encoder
        self.constructor = {"in_channels": in_channels, "img_size": self.vit_constructor["img_size"],
                            "patch_size": patch_size, "hidden_size": hidden_size, "mlp_dim": mlp_dim,
                            "num_layers": num_layers, "num_heads": num_heads, "qkv_bias": qkv_bias,
                            "pos_embed_type": "learnable", "spatial_dims": spatial_dims}

    def key_prefixes(self) -> dict[str, Any]:
        prefixes = super().key_prefixes()
        prefixes.update({
            "exported_as": "monai.ViT",  # the keys are ViT's: ViT(**vit_constructor) loads them strictly
            "key_map": mae_vit_key_map(len(self.network.blocks), dst_prefix=""),  # MaskedAutoEncoderViT -> these
            "load_into": {"monai.UNETR": "vit.", "monai.ViT": ""},
            "dropped": ["cls_token", "mask_tokens", "decoder_embed", "decoder_pos_embedding", "decoder_blocks",
                        "decoder_pred"],
            "vit_constructor": dict(self.vit_constructor),
        })
        return prefixes


def mae_vit_backbone(width: str = "small", in_channels: int = 1, img_size: Sequence[int] | int = 96,
                     spatial_dims: int = 3, **kwargs: Any) -> MaskedAutoEncoderViTBackbone:
    """:class:`MaskedAutoEncoderViTBackbone` at a named width (``"small"``: ViT-Tiny, matches
    ``monai_unetr_small``; ``"base"``: ViT-B, matches MONAI's default ``UNETR``); ``kwargs`` override."""
    if width not in VIT_WIDTHS:
        raise ValueError(f"width must be one of {sorted(VIT_WIDTHS)}, got {width!r}")
    if isinstance(img_size, (list, tuple)) and len(img_size) != spatial_dims:
        spatial_dims = len(img_size)
    return MaskedAutoEncoderViTBackbone(in_channels, img_size, spatial_dims, **{**VIT_WIDTHS[width], **kwargs})


def mae_vit_network(backbone: str = "small", in_channels: int = 1, img_size: Sequence[int] | int = 96,
                    **kwargs: Any) -> BackboneAdapter:
    """The network the ``mae_vit_ssl_pretraining`` bundle pretrains, by name.

    ``"small"`` / ``"base"``: :func:`mae_vit_backbone` (the MAE-ViT encoder, exported with ViT keys);
    a registered ViT or UNETR adapter (``monai_vit_small``, ``monai_vit``, ``monai_unetr_small``,
    ``monai_unetr``): that adapter, built at ``img_size`` and exported with its own keys (a UNETR's
    convolutional decoder is exported untrained and the record says so). ``kwargs`` go to the
    constructor (e.g. ``hidden_size``, ``mlp_dim``, ``num_heads``, ``qkv_bias``).
    """
    img = [int(s) for s in img_size] if isinstance(img_size, (list, tuple)) else int(img_size)
    dims = len(img) if isinstance(img, list) else int(kwargs.pop("spatial_dims", 3))
    kwargs.pop("spatial_dims", None)
    if backbone in VIT_WIDTHS:
        return mae_vit_backbone(backbone, in_channels=in_channels, img_size=img, spatial_dims=dims, **kwargs)
    from monai_ssl_plugin.backbones import create_backbone

    if not str(backbone).startswith(("monai_vit", "monai_unetr")):
        raise PluginError(f"mae_vit pretrains a Vision Transformer; {backbone!r} is not one.",
                          "Use --backbone small | base | monai_vit_small | monai_vit | monai_unetr_small | monai_unetr.")
    return create_backbone(backbone, in_channels=in_channels, img_size=img, spatial_dims=dims, **kwargs)


def _vit_of(backbone: BackboneAdapter) -> nn.Module:
    """The ``monai.networks.nets.ViT`` inside a ViT or UNETR adapter."""
    network = backbone.network
    vit = getattr(network, "vit", network)
    if not all(hasattr(vit, a) for a in ("patch_embedding", "blocks", "norm")) or not hasattr(backbone, "patch"):
        raise ValueError("mae_vit needs a ViT or UNETR backbone (monai_vit*, monai_unetr*), "
                         f"got {type(backbone).__name__}")
    return vit


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """(B, C, *spatial) -> (B, N, prod(patch) * C) tokens in the patch embedding's (row-major) order."""
    b, c, *spatial = x.shape
    dims = len(spatial)
    grid = [s // p for s, p in zip(spatial, patch)]
    shape = [b, c]
    for g, p in zip(grid, patch):
        shape += [g, p]
    x = x.reshape(shape)
    # (B, C, g0, p0, g1, p1, ...) -> (B, g0, g1, ..., p0, p1, ..., C)
    order = [0] + [2 + 2 * d for d in range(dims)] + [3 + 2 * d for d in range(dims)] + [1]
    return x.permute(order).reshape(b, math.prod(grid), math.prod(patch) * c)


def unpatchify(tokens: torch.Tensor, patch: Sequence[int], grid: Sequence[int], channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, N, prod(patch) * C) -> (B, C, *grid * patch)."""
    b, dims = tokens.shape[0], len(grid)
    x = tokens.reshape(b, *grid, *patch, channels)
    order = [0, 1 + 2 * dims]
    for d in range(dims):
        order += [1 + d, 1 + dims + d]
    return x.permute(order).reshape(b, channels, *[g * p for g, p in zip(grid, patch)])


class _BlockMaskedMAE(MaskedAutoEncoderViT):
    """``MaskedAutoEncoderViT`` whose token mask is set by the pretext (from ``random_block_mask``)."""

    token_keep: torch.Tensor | None = None

    def _masking(self, x: torch.Tensor, masking_ratio: float | None = None):
        keep = self.token_keep
        if keep is None or keep.shape != x.shape[:2]:
            raise RuntimeError("the mae_vit pretext sets the token mask before each forward")
        batch = x.shape[0]
        selected = keep.nonzero()[:, 1].view(batch, -1)  # same count per sample; ascending token order
        x_masked = x[torch.arange(batch, device=x.device)[:, None], selected]
        return x_masked, selected, (~keep).int()


@register_pretext("mae_vit", paradigm="generative")
class MaskedAutoEncoderViTPretext(nn.Module):
    """MAE on a ViT: mask 75 % of the tokens, reconstruct their voxels with MAE-ViT's decoder, MSE on them.

    Args:
        backbone: a ViT or UNETR adapter (``mae_vit_backbone``, ``monai_vit*``, ``monai_unetr*``); its
            ViT becomes the MAE encoder (shared modules, so composed hybrids train the same weights).
            Inputs must be exactly its ``img_size``.
        mask_ratio: share of tokens masked (MAE: 0.75), the same count in every sample.
        decoder_hidden_size, decoder_mlp_dim, decoder_num_layers, decoder_num_heads: MAE-ViT's decoder
            (MONAI defaults 384 / 512 / 4 / 12; He et al.: 8 blocks of 512).
        norm_pix_loss: normalise each target patch by its mean and std (He et al.'s variant).
        sincos_init: initialise the ViT's learnable position embedding with MAE's fixed sin-cos one
            (where MONAI's table exists: hidden size divisible by 6 in 3D, by 4 in 2D; the decoder's
            position embedding is sin-cos under the same condition, else learnable).

    Shapes: image (B, C, *img) -> tokens (B, N, hidden) of which N_keep = N - round(ratio * N) are
    encoded -> decoder prediction (B, N, prod(patch) * C) -> image layout (B, C, *img); loss on
    the masked tokens' voxels. Returns ``{"loss", "reconstruction"}``.

    Only the encoder transfers (``trains_decoder = False``): MAE-ViT's decoder is pretext-owned
    and a UNETR's convolutional decoder is not touched.
    """

    needs = ("image",)
    trains_decoder = False

    def __init__(self, backbone: BackboneAdapter, mask_ratio: float = 0.75, decoder_hidden_size: int = 384,
                 decoder_mlp_dim: int = 512, decoder_num_layers: int = 4, decoder_num_heads: int = 12,
                 norm_pix_loss: bool = False, sincos_init: bool = True):
        super().__init__()
        vit = _vit_of(backbone)
        if not 0.0 < float(mask_ratio) < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.backbone = backbone
        self.patch = [int(p) for p in backbone.patch]
        self.grid = [int(g) for g in backbone.grid]
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        first = vit.blocks[0]
        hidden = int(vit.norm.normalized_shape[0])
        self.encoder_settings = {"hidden_size": hidden, "mlp_dim": int(first.mlp.linear1.out_features),
                                 "num_layers": len(vit.blocks), "num_heads": int(first.attn.num_heads),
                                 "qkv_bias": first.attn.qkv.bias is not None}
        self.decoder_settings = {"decoder_hidden_size": int(decoder_hidden_size),
                                 "decoder_mlp_dim": int(decoder_mlp_dim),
                                 "decoder_num_layers": int(decoder_num_layers),
                                 "decoder_num_heads": int(decoder_num_heads)}
        sincos_divisor = 6 if backbone.spatial_dims == 3 else 4  # what MONAI's sin-cos table needs
        self.decoder_settings["decoder_pos_embed_type"] = (
            "sincos" if self.decoder_settings["decoder_hidden_size"] % sincos_divisor == 0 else "learnable")
        img_size = [g * p for g, p in zip(self.grid, self.patch)]
        model = _BlockMaskedMAE(in_channels=backbone.in_channels, img_size=img_size, patch_size=self.patch,
                                masking_ratio=self.mask_ratio, spatial_dims=backbone.spatial_dims,
                                **self.encoder_settings, **self.decoder_settings)
        # MAE-ViT's encoder is the backbone's ViT: same modules, same parameters
        model.patch_embedding = vit.patch_embedding
        model.blocks = nn.Sequential(*vit.blocks, vit.norm)
        self.model = model
        sincos_init = bool(sincos_init) and hidden % sincos_divisor == 0
        if sincos_init and isinstance(vit.patch_embedding.position_embeddings, nn.Parameter):
            with torch.no_grad():
                table = build_sincos_position_embedding(self.grid, hidden, backbone.spatial_dims)
                vit.patch_embedding.position_embeddings.copy_(table.to(vit.patch_embedding.position_embeddings))
        self.sincos_init = bool(sincos_init)
        self.criterion = MaskedReconstructionLoss("mse")
        self.last_outputs: dict[str, torch.Tensor] = {}

    def settings(self) -> dict[str, Any]:
        img_size = [g * p for g, p in zip(self.grid, self.patch)]
        return {"mask_ratio": self.mask_ratio, "patch_size": self.patch, "img_size": img_size,
                **self.encoder_settings, **self.decoder_settings, "norm_pix_loss": self.norm_pix_loss,
                "sincos_init": self.sincos_init, "loss": "mse on masked tokens",
                "network": "monai.networks.nets.MaskedAutoEncoderViT (encoder exported with monai.ViT keys)"}

    def _target(self, image: torch.Tensor) -> torch.Tensor:
        if not self.norm_pix_loss:
            return image
        tokens = patchify(image, self.patch)
        mean, var = tokens.mean(-1, keepdim=True), tokens.var(-1, keepdim=True)
        return unpatchify((tokens - mean) / (var + 1e-6).sqrt(), self.patch, self.grid, image.shape[1])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        expected = [g * p for g, p in zip(self.grid, self.patch)]
        if list(image.shape[2:]) != expected:
            raise ValueError(f"mae_vit was built for inputs of size {expected}; got {list(image.shape[2:])}")
        keep = random_block_mask(image.shape[0], image.shape[2:], self.patch, self.mask_ratio, device=image.device)
        corner = (slice(None), 0) + tuple(slice(None, None, p) for p in self.patch)
        self.model.token_keep = keep[corner].flatten(1).bool()  # one value per token, row-major like the embedding
        try:
            tokens, _ = self.model(image)
        finally:
            self.model.token_keep = None
        prediction = unpatchify(tokens, self.patch, self.grid, image.shape[1])
        loss = self.criterion(prediction, self._target(image), keep.to(image.dtype))
        self.last_outputs = {"prediction": prediction.detach(), "keep_mask": keep}
        return {"loss": loss, "reconstruction": loss.detach()}

"""Models Genesis: restore the original volume from a corrupted one (MSE).

Zhou et al., "Models Genesis: Generic Autodidactic Models for 3D Medical Image Analysis", MICCAI
2019, and "Models Genesis", Medical Image Analysis 67, 2021: flip (input and target alike, up to 3
times at rate 0.4), local pixel shuffling (p 0.5), non-linear Bezier intensity mapping (p 0.9) and
painting (p 0.9; out-painting 0.8 / in-painting 0.2), the network restores the (flipped) original,
MSE loss; 64x64x32 cubes, batch 6, SGD lr 1 (nnU-Net variant: lr 0.1).

Also home of :class:`DenseOutput`, the one "dense prediction from a backbone" helper of the
restorative pretexts (the network's own decoder, or a pretext-owned light decoder).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.backbones.resnet import LightDecoder, make_light_decoder
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.transforms.models_genesis import models_genesis

__all__ = ["DenseOutput", "ModelsGenesis", "Restorative", "to_unit_range"]


# adapters whose first ``encode`` level is a full-resolution convolution on the raw image that belongs to the
# network's *decoder* (SwinUNETR / UNETR ``encoder1``), with the stride of their next level: a light decoder
# reads only the transformer's levels, so only the encoder (``swinViT`` / ``vit``) learns
DECODER_SIDE_STEM = {"monai.SwinUNETR": 2, "monai.UNETR": 16}


class DenseOutput(nn.Module):
    """A dense output (B, C_in, *spatial) from a backbone adapter, as the restorative pretexts need it.

    * ``decoder="auto"`` (default): the network's own decoder when it has one whose output channels
      equal the input channels (the whole U-Net is pretrained and exported), otherwise a
      pretext-owned :func:`~monai_ssl_plugin.backbones.resnet.make_light_decoder` (ResNet, ViT:
      only the encoder is exported; the light decoder never enters ``backbone.network``).
    * ``"network"``: require the network's decoder.
    * ``"light"``: always a light decoder. For SwinUNETR and UNETR it reads the transformer's
      levels only (``swinViT`` hidden states / ViT token maps), not ``encoder1``, which is on the
      decoder side of those networks: only the encoder is pretrained (Swin UNETR pretraining).

    The backbone is passed to :meth:`encode` / :meth:`decode`, not stored, so the pretext owns it
    once. ``trains_decoder`` tells :func:`monai_ssl_plugin.checkpoint.build_record` whether the
    network's decoder was pretrained.
    """

    def __init__(self, backbone: BackboneAdapter, decoder: str = "auto", width: int = 64):
        super().__init__()
        if decoder not in ("auto", "network", "light"):
            raise ValueError(f"decoder must be 'auto', 'network' or 'light', got {decoder!r}")
        own = backbone.has_decoder and backbone.out_channels == backbone.in_channels
        if decoder == "network" and not own:
            raise ValueError(f"{type(backbone).__name__} has no decoder with {backbone.in_channels} output channel(s) "
                             f"(has_decoder={backbone.has_decoder}, out_channels={backbone.out_channels}); "
                             "build it with out_channels=in_channels or use decoder='light'")
        if decoder == "auto" and backbone.has_decoder and not own:
            raise ValueError(f"{type(backbone).__name__} decodes to {backbone.out_channels} channel(s) but restoration "
                             f"needs {backbone.in_channels}: build it with out_channels=in_channels (the output "
                             "layer is never transferred), or pass decoder='light'")
        self.kind = "network" if (own and decoder != "light") else "light"
        self.encoder_only = self.kind == "light" and backbone.family in DECODER_SIDE_STEM
        self.light: nn.Module | None = None
        if self.encoder_only:
            stride = [DECODER_SIDE_STEM[backbone.family]] * backbone.spatial_dims
            self.light = LightDecoder(backbone.feature_channels[1:], backbone.in_channels, backbone.spatial_dims,
                                      width=width, stem_stride=stride)
        elif self.kind == "light":
            self.light = make_light_decoder(backbone, backbone.in_channels, width)

    @property
    def trains_decoder(self) -> bool:
        return self.kind == "network"

    def encode(self, backbone: BackboneAdapter, x: torch.Tensor) -> list[torch.Tensor]:
        """The features :meth:`decode` reads; the last is the deepest (pool it for ``embed``)."""
        if self.encoder_only and backbone.family == "monai.SwinUNETR":
            return backbone._hidden_states(x)  # swinViT only (checks the input size)
        if self.encoder_only:  # UNETR: the ViT's token maps, as UNETR's encode gives them after encoder1
            return backbone.encode(x)[1:]  # encoder1's output is left unused (no gradient reaches it)
        return backbone.encode(x)

    def decode(self, backbone: BackboneAdapter, features: list[torch.Tensor], size) -> torch.Tensor:
        if self.light is None:
            return backbone.decode(features)
        return self.light(features, size=size)

    def forward(self, backbone: BackboneAdapter, x: torch.Tensor) -> torch.Tensor:
        return self.decode(backbone, self.encode(backbone, x), x.shape[2:])


class Restorative(nn.Module):
    """What the restorative pretexts share: a :class:`DenseOutput` of the backbone trained to undo a
    corruption made without gradients (Models Genesis, the denoising autoencoder).

    A pretext sets ``self.backbone`` and ``self.dense`` in ``__init__`` and calls :meth:`restore` in
    ``forward``; ``last_outputs`` keeps the step's input, target and prediction (for figures).
    """

    needs = ("image",)
    backbone: BackboneAdapter
    dense: DenseOutput

    @property
    def trains_decoder(self) -> bool:
        return self.dense.trains_decoder

    def restore(self, corrupted: torch.Tensor, target: torch.Tensor,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predict ``target`` from ``corrupted``: ``{"loss", "reconstruction"}``."""
        prediction = self.dense(self.backbone, corrupted)
        loss = loss_fn(prediction, target)
        self.last_outputs = {"input": corrupted, "target": target, "prediction": prediction.detach()}
        return {"loss": loss, "reconstruction": loss.detach()}


def to_unit_range(x: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample and channel min-max scaling to [0, 1]: ``(x01, low, scale)`` with ``x = low + scale * x01``."""
    flat = x.detach().flatten(2)
    low = flat.amin(-1).view(*x.shape[:2], *([1] * (x.dim() - 2)))
    scale = (flat.amax(-1).view_as(low) - low).clamp_min(eps)
    return (x - low) / scale, low, scale


@register_pretext("models_genesis", paradigm="generative")
class ModelsGenesis(Restorative):
    """Corrupt with the four Models Genesis transformations, restore the original, MSE.

    The corruptions (:func:`monai_ssl_plugin.transforms.models_genesis.models_genesis`, batched on the
    training device) expect intensities in [0, 1] (Models Genesis: CT clipped to [-1000, 1000] HU
    and scaled). The plugin's data are normalised as nnU-Net does (z-score), so with
    ``rescale=True`` each sample and channel is min-max mapped to [0, 1] for the corruption and
    mapped back afterwards: the network sees and restores volumes in the data's own intensity
    scale, the one fine-tuning will use, while the Bezier curve, the noise of the painting and the
    clamping act on the sample's full range as in the paper.

    Args:
        backbone: an adapter; see :class:`DenseOutput` for the decoder used (``decoder``).
        flip_prob, local_shuffle_prob, nonlinear_prob, paint_prob, inpaint_prob: published rates.
        n_blocks: local-shuffle blocks per sample (10,000 at 64x64x32).
        rescale: min-max to [0, 1] around the corruption (see above); ``False`` if the data are
            already in [0, 1].
        decoder, decoder_width: dense output, see :class:`DenseOutput`.

    Shapes: image (B, C, *spatial) -> corrupted, target (B, C, *spatial) -> prediction (B, C, *spatial).
    Returns ``{"loss", "reconstruction"}``; ``last_outputs`` keeps input, target and prediction.
    """

    def __init__(self, backbone: BackboneAdapter, flip_prob: float = 0.4, local_shuffle_prob: float = 0.5,
                 nonlinear_prob: float = 0.9, paint_prob: float = 0.9, inpaint_prob: float = 0.2,
                 n_blocks: int = 10_000, rescale: bool = True, decoder: str = "auto", decoder_width: int = 64):
        super().__init__()
        self.backbone = backbone
        self.rates = {"flip_prob": float(flip_prob), "local_shuffle_prob": float(local_shuffle_prob),
                      "nonlinear_prob": float(nonlinear_prob), "paint_prob": float(paint_prob),
                      "inpaint_prob": float(inpaint_prob)}
        self.n_blocks = int(n_blocks)
        self.rescale = bool(rescale)
        self.dense = DenseOutput(backbone, decoder, decoder_width)
        self.last_outputs: dict[str, torch.Tensor] = {}

    def settings(self) -> dict[str, Any]:
        return {**self.rates, "n_blocks": self.n_blocks, "rescale": self.rescale, "loss": "mse",
                "decoder": self.dense.kind}

    def corrupt(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(corrupted, target)`` in the image's intensity scale; ``target`` is the flipped original."""
        if not self.rescale:
            return models_genesis(image, n_blocks=self.n_blocks, **self.rates)
        unit, low, scale = to_unit_range(image)
        corrupted, target = models_genesis(unit, n_blocks=self.n_blocks, **self.rates)
        # the flip reorders voxels only: the per-sample (low, scale) still apply to the target
        return low + scale * corrupted, low + scale * target

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            corrupted, target = self.corrupt(batch["image"])
        return self.restore(corrupted, target, F.mse_loss)

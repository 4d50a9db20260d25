"""Denoising / in-painting autoencoder: the corruption pipeline of MONAI's self-supervised tutorial, L1 restore.

Vincent et al., "Extracting and Composing Robust Features with Denoising Autoencoders", ICML 2008;
Pathak et al., "Context Encoders: Feature Learning by Inpainting", CVPR 2016; MONAI tutorial
``self_supervised_pretraining`` (ViTAutoEnc on 96^3 ROIs: ``OneOf(RandCoarseDropoutd`` in-painting,
6 holes of side 5-32, ``RandCoarseDropoutd`` out-painting, 6 holes of side 20-64``)`` then
``RandCoarseShuffled`` (p 0.8, 10 holes of side 8); L1 reconstruction of the original).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.pretext.generative.models_genesis import DenseOutput, Restorative
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.transforms._random import bernoulli
from monai_ssl_plugin.transforms.coarse import coarse_dropout, coarse_shuffle, monai_ssl_view

__all__ = ["DenoisingAutoencoder"]

REFERENCE_ROI = 96  # the tutorial's ROI side: its hole sizes are for 96^3


@register_pretext("denoising_ae", paradigm="generative")
class DenoisingAutoencoder(Restorative):
    """Coarse dropout (in- or out-painting, one of the two per sample) + coarse shuffle, restore with L1.

    The corruption runs batched on the training device. At the tutorial's 96^3 ROI (``hole_scale``
    1) it is exactly :func:`~monai_ssl_plugin.transforms.coarse.monai_ssl_view`; for other
    patch sizes the hole sides are scaled by ``hole_scale`` (``"auto"``: smallest patch side / 96,
    so a 48^3 patch gets holes of the same relative size) and the same pipeline is composed from
    :func:`~monai_ssl_plugin.transforms.coarse.coarse_dropout` and
    :func:`~monai_ssl_plugin.transforms.coarse.coarse_shuffle`. Holes are filled with uniform
    noise in each sample's [min, max) (MONAI's default).

    Args:
        backbone: an adapter; see :class:`~monai_ssl_plugin.pretext.generative.models_genesis.DenseOutput`.
        hole_scale: ``"auto"`` or a factor on the tutorial's hole sides.
        shuffle_prob: probability of the coarse shuffle (tutorial: 0.8).
        loss: ``"l1"`` (tutorial) or ``"mse"``.
        decoder, decoder_width: dense output, see ``DenseOutput``.

    Shapes: image (B, C, *spatial) -> corrupted (B, C, *spatial) -> prediction (B, C, *spatial).
    Returns ``{"loss", "reconstruction"}``; ``last_outputs`` keeps input, target (the clean image) and prediction.
    """

    def __init__(self, backbone: BackboneAdapter, hole_scale: float | str = "auto", shuffle_prob: float = 0.8,
                 loss: str = "l1", decoder: str = "auto", decoder_width: int = 64):
        super().__init__()
        if loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {loss!r}")
        self.backbone = backbone
        self.hole_scale = hole_scale if hole_scale == "auto" else float(hole_scale)
        self.shuffle_prob = float(shuffle_prob)
        self.loss_kind = loss
        self.dense = DenseOutput(backbone, decoder, decoder_width)
        self.last_outputs: dict[str, torch.Tensor] = {}

    def settings(self) -> dict[str, Any]:
        return {"hole_scale": self.hole_scale, "shuffle_prob": self.shuffle_prob, "loss": self.loss_kind,
                "decoder": self.dense.kind, "reference_roi": REFERENCE_ROI}

    def _scale(self, spatial: tuple[int, ...]) -> float:
        return min(spatial) / REFERENCE_ROI if self.hole_scale == "auto" else float(self.hole_scale)

    def corrupt(self, image: torch.Tensor) -> torch.Tensor:
        """The tutorial's corruption, batched; holes scaled to the patch (see the class docstring)."""
        scale = self._scale(tuple(image.shape[2:]))
        if abs(scale - 1.0) < 1e-6 and abs(self.shuffle_prob - 0.8) < 1e-9:
            return monai_ssl_view(image)

        def side(v: int) -> int:
            return max(1, round(v * scale))

        batch, dev = image.shape[0], image.device
        use_in = bernoulli(0.5, (batch,), None, dev)  # OneOf(in-painting, out-painting)
        out = coarse_dropout(image, holes=6, spatial_size=side(5), max_spatial_size=side(32), dropout_holes=True,
                             apply=use_in)
        out = coarse_dropout(out, holes=6, spatial_size=side(20), max_spatial_size=side(64), dropout_holes=False,
                             apply=~use_in)
        return coarse_shuffle(out, holes=10, spatial_size=side(8), prob=self.shuffle_prob)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        with torch.no_grad():
            corrupted = self.corrupt(image)
        return self.restore(corrupted, image, F.l1_loss if self.loss_kind == "l1" else F.mse_loss)

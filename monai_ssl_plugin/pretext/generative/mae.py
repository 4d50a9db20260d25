"""Masked image modelling for CNN U-Nets (MAE / SparK-3D, as in nnssl's BaseMAE).

He et al., CVPR 2022; Tian et al. (SparK), ICLR 2023; Wald et al., "Revisiting MAE pre-training
for 3D medical image segmentation", CVPR 2025 (16³ blocks, 75 % masked, MSE on masked voxels,
full U-Net reconstructs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.losses.masked_reconstruction import MaskedReconstructionLoss
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.transforms.masking import random_block_mask, resize_mask


@register_pretext("mae", paradigm="generative")
class MaskedImageModelling(nn.Module):
    """Mask blocks of the input, reconstruct the whole volume, score only the masked voxels.

    Args:
        backbone: an adapter with a decoder whose ``out_channels`` equal its ``in_channels``.
        mask_ratio: share of blocks masked, or a ``(lo, hi)`` range drawn per sample (SparK).
        block_size: block side in voxels (16 in nnssl at 160³; scale it with the patch).
        sparse: SparK's emulation of sparse convolution: re-apply the mask after every encoder
            stage at that stage's resolution, so masked regions carry no information upward.
        loss: ``"mse"`` or ``"l1"``.

    ``forward(batch)`` takes ``batch["image"]`` (B, C, *spatial) and returns
    ``{"loss", "reconstruction"}`` losses; ``last_outputs`` keeps the prediction and mask of
    the last step for inspection (probes, image logging).
    """

    needs = ("image",)

    def __init__(self, backbone: BackboneAdapter, mask_ratio: float | tuple[float, float] = 0.75,
                 block_size: int = 16, sparse: bool = True, loss: str = "mse"):
        super().__init__()
        if not backbone.has_decoder or backbone.out_channels != backbone.in_channels:
            raise ValueError("masked image modelling needs a backbone whose decoder outputs as many channels as its "
                             f"input ({type(backbone).__name__}: in {backbone.in_channels}, out {backbone.out_channels})")
        self.backbone = backbone
        self.mask_ratio = tuple(mask_ratio) if isinstance(mask_ratio, (list, tuple)) else float(mask_ratio)
        self.block_size = int(block_size)
        self.sparse = sparse
        self.criterion = MaskedReconstructionLoss(loss)
        self._keep: torch.Tensor | None = None
        self.last_outputs: dict[str, torch.Tensor] = {}
        if sparse:
            for stage in backbone.encoder_stages():
                stage.register_forward_hook(self._remask)

    def settings(self) -> dict[str, Any]:
        return {"mask_ratio": self.mask_ratio, "block_size": self.block_size, "sparse": self.sparse,
                "loss": self.criterion.kind}

    def _remask(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if self._keep is None:  # outside a pretext step (e.g. export, probing): leave the network alone
            return None
        return output * resize_mask(self._keep, output.shape[2:])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        keep = random_block_mask(image.shape[0], image.shape[2:], self.block_size, self.mask_ratio,
                                 device=image.device).to(image.dtype)
        self._keep = keep if self.sparse else None
        try:
            prediction = self.backbone(image * keep)
        finally:
            self._keep = None
        loss = self.criterion(prediction, image, keep)
        self.last_outputs = {"prediction": prediction.detach(), "keep_mask": keep}
        return {"loss": loss, "reconstruction": loss.detach()}

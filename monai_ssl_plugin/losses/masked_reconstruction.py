"""Reconstruction loss restricted to masked voxels (MAE, He et al. CVPR 2022; SparK, Tian et al. ICLR 2023)."""

from __future__ import annotations

import torch
from torch import nn


class MaskedReconstructionLoss(nn.Module):
    """Mean squared (or absolute) error over the voxels the network could not see.

    Args:
        kind: ``"mse"`` (MAE / nnssl default) or ``"l1"``.

    Shapes: ``prediction`` and ``target`` (B, C, *spatial); ``keep_mask`` (B, 1, *spatial) with
    1 = visible, 0 = masked. Visible voxels contribute nothing: reconstructing them is trivial and
    would dilute the signal. Returns a scalar; 0 when no voxel is masked.
    """

    def __init__(self, kind: str = "mse"):
        super().__init__()
        if kind not in ("mse", "l1"):
            raise ValueError(f"kind must be 'mse' or 'l1', got {kind!r}")
        self.kind = kind

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
        err = prediction - target
        err = err * err if self.kind == "mse" else err.abs()
        masked = (1.0 - keep_mask).expand_as(err)
        return (err * masked).sum() / masked.sum().clamp_min(1.0)

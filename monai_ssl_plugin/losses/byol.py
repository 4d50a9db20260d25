"""Cosine regression onto a stop-gradient target: BYOL (Grill et al., NeurIPS 2020) and SimSiam
(Chen & He, CVPR 2021).

Both regress the online prediction p onto the other view's target projection z with the gradient
stopped at z; they differ only by an affine rescaling of -cos(p, z), so one function computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss


def negative_cosine_similarity(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-cos(p, sg(z))`` averaged over the batch; the target gets no gradient.

    Shapes: ``prediction``, ``target`` (B, D). Returns a scalar in [-1, 1].
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    return -F.cosine_similarity(prediction, target.detach(), dim=-1).mean()


class _SymmetrisedCosineLoss(_Loss):
    # loss per view order = offset + scale * (-cos); the two orders are summed or averaged
    scale: float = 1.0
    offset: float = 0.0
    average_views: bool = False

    def forward(
        self,
        prediction_1: torch.Tensor,
        target_2: torch.Tensor,
        prediction_2: torch.Tensor | None = None,
        target_1: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if (prediction_2 is None) != (target_1 is None):
            raise ValueError("pass both prediction_2 and target_1 for the symmetrised loss, or neither")
        loss = self.offset + self.scale * negative_cosine_similarity(prediction_1, target_2)
        if prediction_2 is not None:
            loss = loss + self.offset + self.scale * negative_cosine_similarity(prediction_2, target_1)
            if self.average_views:
                loss = 0.5 * loss
        return loss


class BYOLLoss(_SymmetrisedCosineLoss):
    """BYOL: ``2 - 2 cos(p, sg(z'))``, symmetrised by summing both view orders as in the paper.

    ``2 - 2cos`` is the squared distance of the L2-normalised vectors. Identical directions give
    0; the symmetrised loss lies in [0, 8].

    Shapes: ``prediction_1`` (B, D), the online predictor output for view 1; ``target_2`` (B, D),
    the EMA target projection of view 2; optionally ``prediction_2`` and ``target_1`` for the
    symmetric term. Returns a scalar.
    """

    scale, offset, average_views = 2.0, 2.0, False


class SimSiamLoss(_SymmetrisedCosineLoss):
    """SimSiam: ``-cos(p, sg(z'))``, symmetrised as ``0.5 D(p1, z2) + 0.5 D(p2, z1)`` as in the paper.

    Range [-1, 1]. Its minimum, -1, is also what a collapsed network reaches; watch the embedding
    std (:mod:`monai_ssl_plugin.pretext.collapse`). Shapes as :class:`BYOLLoss`.
    """

    scale, offset, average_views = 1.0, 0.0, True

"""VoCo volume-contrast loss (Wu, Zhuang & Chen, CVPR 2024): predict where a random crop lies
among a grid of base crops from its similarity to them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss


def _batched(x: torch.Tensor) -> torch.Tensor:
    return x if x.ndim == 3 else x.unsqueeze(0)


def voco_logits(crops: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """``relu(cos(crop_m, base_k))``: (B, M, C), (B, K, C) -> (B, M, K), each in [0, 1]."""
    return F.relu(F.normalize(_batched(crops), dim=-1) @ F.normalize(_batched(bases), dim=-1).transpose(1, 2))


def voco_regulariser(bases: torch.Tensor) -> torch.Tensor:
    """Mean over base pairs i < j of ``relu(cos(b_i, sg(b_j)))^2``, averaged over the batch.

    Pushes the base embeddings of one volume apart, so they can act as distinct position classes;
    as in the reference code only the first base of each pair receives the gradient.
    Shapes: ``bases`` (B, K, C) or (K, C), K >= 2.
    """
    b = F.normalize(_batched(bases), dim=-1)
    k = b.shape[1]
    if k < 2:
        raise ValueError("the regulariser needs at least 2 base crops")
    sim = F.relu(b @ b.detach().transpose(1, 2)).pow(2)
    upper = torch.ones(k, k, dtype=torch.bool, device=b.device).triu(1)
    return sim[:, upper].mean()


def voco_prediction_terms(
    logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, negative)`` prediction terms, each averaged over the batch.

    * positive, on bases the crop overlaps (y > 0): ``sum y * -log(1 - |y - l| + eps) / sum y``,
      so bases with a larger share of the crop weigh more;
    * negative, on bases it does not overlap (y = 0): ``mean l^2``.

    Shapes: ``logits``, ``targets`` (B, M, K) or (M, K); targets are overlap ratios in [0, 1].
    """
    logits, targets = _batched(logits), _batched(targets).to(logits.dtype)
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    pos = (-targets * torch.log(1 - (targets - logits).abs() + eps)).sum((1, 2)) / (targets.sum((1, 2)) + eps)
    neg_mask = (targets == 0).to(logits.dtype)
    neg = (neg_mask * logits.pow(2)).sum((1, 2)) / (neg_mask.sum((1, 2)) + eps)
    return pos.mean(), neg.mean()


class VoCoLoss(_Loss):
    """``pred_weight * (positive + negative) + reg_weight * regulariser``.

    Logits are ``relu(cos(crop, base))`` (:func:`voco_logits`). With the EMA teacher of the
    reference code (momentum 0.9; the recipes note that a port without it does not converge)
    pass the teacher embeddings too: the logits become the mean of student-crop vs teacher-base
    and teacher-crop vs student-base, and the regulariser acts on the student bases.

    Args:
        pred_weight: weight of the prediction terms (1, reference code).
        reg_weight: weight of the base regulariser (1, reference code).

    Shapes: ``crops`` (B, M, C): embeddings of M random crops per volume; ``bases`` (B, K, C):
    the K (e.g. 4x4 = 16) base crops; ``targets`` (B, M, K): overlap ratio of crop m with base k;
    ``teacher_crops``/``teacher_bases`` as ``crops``/``bases``. The leading B may be omitted.
    Returns a scalar.
    """

    def __init__(self, pred_weight: float = 1.0, reg_weight: float = 1.0) -> None:
        super().__init__()
        self.pred_weight, self.reg_weight = pred_weight, reg_weight

    def terms(
        self,
        crops: torch.Tensor,
        bases: torch.Tensor,
        targets: torch.Tensor,
        teacher_crops: torch.Tensor | None = None,
        teacher_bases: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The unweighted ``(positive, negative, regulariser)`` terms."""
        if (teacher_crops is None) != (teacher_bases is None):
            raise ValueError("pass both teacher_crops and teacher_bases, or neither")
        if teacher_crops is None:
            logits = voco_logits(crops, bases)
        else:
            logits = 0.5 * (voco_logits(crops, teacher_bases.detach()) + voco_logits(teacher_crops.detach(), bases))
        pos, neg = voco_prediction_terms(logits, targets)
        return pos, neg, voco_regulariser(bases)

    def forward(
        self,
        crops: torch.Tensor,
        bases: torch.Tensor,
        targets: torch.Tensor,
        teacher_crops: torch.Tensor | None = None,
        teacher_bases: torch.Tensor | None = None,
    ) -> torch.Tensor:
        pos, neg, reg = self.terms(crops, bases, targets, teacher_crops, teacher_bases)
        return self.pred_weight * (pos + neg) + self.reg_weight * reg

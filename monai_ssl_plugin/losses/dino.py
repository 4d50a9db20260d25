"""DINO self-distillation loss (Caron et al., ICCV 2021): student/teacher cross-entropy over crops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai_ssl_plugin.distributed import gather_with_grad


class DINOLoss(_Loss):
    """Cross-entropy between the centred, sharpened teacher and the student, over every crop pair.

    ``P_t = softmax((g_t - c) / t_t)`` on the global crops only, ``P_s = softmax(g_s / t_s)`` on
    all crops; ``L = mean over pairs (teacher crop a, student crop b), a != b of
    mean_batch sum_k -P_t[k] log P_s[k]``. The centre ``c`` is an EMA of the batch mean of the
    teacher outputs, gathered over processes: ``c <- m c + (1 - m) mean(g_t)``. Centring stops one
    dimension from dominating, sharpening (low ``t_t``) stops the uniform collapse.

    Args:
        out_dim: K, the head's output dimension.
        n_global_crops: number of global crops (2); they come first in the student output.
        student_temp: t_s (0.1).
        teacher_temp: t_t after warm-up (0.04, reference code default; the paper's warm-up goes
            0.04 -> 0.07 over 30 epochs; lower it, e.g. 0.02, on small datasets).
        warmup_teacher_temp: t_t at epoch 0.
        warmup_teacher_temp_epochs: length of the linear warm-up (0 = none).
        center_momentum: m (0.9).

    ``center`` is a buffer (saved for resume) updated in training mode only, after the loss, with
    no gradient.

    Shapes: ``student_output`` (n_crops * B, K), crop-major (global crops first, then local), or a
    sequence of n_crops (B, K) tensors; ``teacher_output`` (n_global_crops * B, K) or a sequence
    of n_global_crops (B, K). ``epoch`` may be fractional. Returns a scalar.
    """

    center: torch.Tensor

    def __init__(
        self,
        out_dim: int,
        n_global_crops: int = 2,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.n_global_crops = n_global_crops
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: float) -> float:
        """Linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp``, then constant."""
        if self.warmup_teacher_temp_epochs <= 0:
            return self.teacher_temp
        frac = min(max(epoch / self.warmup_teacher_temp_epochs, 0.0), 1.0)
        return self.warmup_teacher_temp + frac * (self.teacher_temp - self.warmup_teacher_temp)

    def teacher_probs(self, teacher_output: torch.Tensor, epoch: float = 0) -> torch.Tensor:
        """Centred, sharpened teacher distribution (no gradient): (N, K) -> (N, K)."""
        return F.softmax((teacher_output.detach() - self.center) / self.teacher_temperature(epoch), dim=-1)

    def forward(
        self,
        student_output: torch.Tensor | Sequence[torch.Tensor],
        teacher_output: torch.Tensor | Sequence[torch.Tensor],
        epoch: float = 0,
    ) -> torch.Tensor:
        teacher = teacher_output if torch.is_tensor(teacher_output) else torch.cat(list(teacher_output))
        if teacher.shape[0] % self.n_global_crops:
            raise ValueError(
                f"teacher_output rows {teacher.shape[0]} are not a multiple of n_global_crops={self.n_global_crops}"
            )
        batch = teacher.shape[0] // self.n_global_crops
        student = student_output.split(batch) if torch.is_tensor(student_output) else tuple(student_output)
        if len(student) < self.n_global_crops or any(s.shape != (batch, teacher.shape[1]) for s in student):
            raise ValueError(
                f"student_output must hold >= {self.n_global_crops} crops of shape {(batch, teacher.shape[1])}"
            )

        t_probs = self.teacher_probs(teacher, epoch).split(batch)
        s_logp = [F.log_softmax(s / self.student_temp, dim=-1) for s in student]
        total, n_pairs = teacher.new_zeros(()), 0
        for a, p_t in enumerate(t_probs):
            for b, logp_s in enumerate(s_logp):
                if a == b:  # same view: nothing to predict
                    continue
                total = total + (-p_t * logp_s).sum(-1).mean()
                n_pairs += 1
        if n_pairs == 0:
            raise ValueError("no student/teacher crop pair: pass at least one crop besides the global one")
        if self.training:
            self.update_center(teacher)
        return total / n_pairs

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """EMA of the global-batch mean of the raw teacher outputs (N, K)."""
        # gathering one (1, K) sum per process is cheaper than gathering the outputs
        sums = gather_with_grad(teacher_output.detach().sum(0, keepdim=True))
        batch_center = sums.sum(0, keepdim=True) / (teacher_output.shape[0] * sums.shape[0])
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)

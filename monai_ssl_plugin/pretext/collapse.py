"""Representation-collapse metrics and a framework-free monitor that flags collapse early.

* per-dimension std of L2-normalised embeddings: about 1/sqrt(D) when they spread over the
  sphere, 0 when every input maps to the same vector (Chen & He, SimSiam, 2021);
* effective rank (Roy & Vetterli, EUSIPCO 2007): exp of the entropy of the L1-normalised
  singular values; D for isotropic embeddings, 1 for rank one (dimensional collapse);
* DINO teacher entropy: per-sample entropy near log K means uniform collapse; entropy of the
  batch-mean distribution near 0 means one prototype wins for every input (Caron et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = [
    "CollapseMonitor",
    "CollapseReport",
    "effective_rank",
    "embedding_std",
    "mean_distribution_entropy",
    "teacher_entropy",
]


def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the std over the batch of L2-normalised embeddings: (N, D) -> scalar.

    Healthy ~ 1/sqrt(D), collapsed 0. The std is the population one (divide by N), defined at N = 1.
    """
    z = F.normalize(embeddings.detach().float().flatten(1), dim=1)
    return z.std(0, correction=0).mean()


def effective_rank(embeddings: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Roy & Vetterli effective rank ``exp(-sum p_i log p_i)``, ``p = s / sum(s)``: (N, D) -> scalar.

    ``s`` are the singular values of the (uncentred) embedding matrix, so identical embeddings
    give 1. At most ``min(N, D)``: accumulate several batches before reading it (see
    :class:`CollapseMonitor`). Computed in float64.
    """
    s = torch.linalg.svdvals(embeddings.detach().double().flatten(1))
    p = s / s.sum().clamp_min(eps)
    return torch.exp(-torch.special.xlogy(p, p).sum()).float()


def teacher_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean per-sample entropy (nats) of (N, K) probabilities, e.g. :meth:`DINOLoss.teacher_probs`."""
    p = probs.detach().double()
    return (-torch.special.xlogy(p, p).sum(-1)).mean().float()


def mean_distribution_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the batch-mean of (N, K) probabilities: how many prototypes are in use."""
    p = probs.detach().double().mean(0)
    return (-torch.special.xlogy(p, p).sum()).float()


@dataclass
class CollapseReport:
    """Metrics of one :meth:`CollapseMonitor.update`, with the failed checks in ``messages``."""

    metrics: dict[str, float]
    messages: list[str] = field(default_factory=list)

    @property
    def collapsed(self) -> bool:
        return bool(self.messages)

    @property
    def message(self) -> str:
        """One line listing every failed check; empty when healthy."""
        return "; ".join(self.messages)


class CollapseMonitor:
    """Keeps a window of recent embeddings / teacher outputs and checks them against thresholds.

    Plain Python: the engine calls :meth:`update` (e.g. every N iterations) and logs
    ``report.metrics`` / warns with ``report.message``. Pass ``None`` to disable a check.

    Args:
        window: number of most recent rows kept for the statistics; the effective rank needs
            more rows than the 1-8 of a 3D batch.
        min_std_ratio: flag when ``embedding_std * sqrt(D)`` (1 healthy, 0 collapsed) is below.
        min_effective_rank: flag when the effective rank is below (1 = full collapse).
        max_teacher_entropy_ratio: flag uniform collapse when the per-sample teacher entropy
            divided by log K is above.
        min_teacher_usage_ratio: flag one-prototype collapse when the entropy of the mean teacher
            distribution divided by ``log(min(N, K))`` is below.
        min_rows: rows needed before any embedding check fires.

    Metrics: ``embedding_std``, ``embedding_std_ratio``, ``effective_rank``; with teacher
    probabilities also ``teacher_entropy``, ``teacher_entropy_ratio``,
    ``teacher_mean_entropy``, ``teacher_usage_ratio``.
    """

    def __init__(
        self,
        window: int = 256,
        min_std_ratio: float | None = 0.1,
        min_effective_rank: float | None = 2.0,
        max_teacher_entropy_ratio: float | None = 0.99,
        min_teacher_usage_ratio: float | None = 0.05,
        min_rows: int = 2,
    ) -> None:
        self.window = window
        self.min_std_ratio = min_std_ratio
        self.min_effective_rank = min_effective_rank
        self.max_teacher_entropy_ratio = max_teacher_entropy_ratio
        self.min_teacher_usage_ratio = min_teacher_usage_ratio
        self.min_rows = min_rows
        self._embeddings: torch.Tensor | None = None
        self._probs: torch.Tensor | None = None

    def reset(self) -> None:
        self._embeddings = self._probs = None

    def _push(self, old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
        new = new.detach().float().cpu().flatten(1)
        merged = new if old is None or old.shape[1] != new.shape[1] else torch.cat([old, new])
        return merged[-self.window :]

    def update(
        self, embeddings: torch.Tensor | None = None, teacher_probs: torch.Tensor | None = None
    ) -> CollapseReport:
        """Add (B, D) embeddings and/or (B, K) teacher probabilities; return metrics over the window."""
        if embeddings is not None:
            self._embeddings = self._push(self._embeddings, embeddings)
        if teacher_probs is not None:
            self._probs = self._push(self._probs, teacher_probs)
        report = CollapseReport(metrics={})
        m = report.metrics
        z = self._embeddings
        if z is not None and z.shape[0] >= self.min_rows:
            d = z.shape[1]
            m["embedding_std"] = float(embedding_std(z))
            m["embedding_std_ratio"] = m["embedding_std"] * math.sqrt(d)
            m["effective_rank"] = float(effective_rank(z))
            if self.min_std_ratio is not None and m["embedding_std_ratio"] < self.min_std_ratio:
                report.messages.append(
                    f"embedding collapse: per-dimension std {m['embedding_std']:.3g} is "
                    f"{m['embedding_std_ratio']:.3g} x the healthy 1/sqrt({d})"
                )
            if self.min_effective_rank is not None and m["effective_rank"] < self.min_effective_rank:
                report.messages.append(
                    f"rank collapse: effective rank {m['effective_rank']:.3g} < {self.min_effective_rank} "
                    f"over {z.shape[0]} embeddings of dim {d}"
                )
        p = self._probs
        if p is not None and p.shape[0] >= 1 and p.shape[1] >= 2:
            n, k = p.shape
            m["teacher_entropy"] = float(teacher_entropy(p))
            m["teacher_entropy_ratio"] = m["teacher_entropy"] / math.log(k)
            m["teacher_mean_entropy"] = float(mean_distribution_entropy(p))
            # with N sharp distributions at most N prototypes can be in use
            m["teacher_usage_ratio"] = min(m["teacher_mean_entropy"] / math.log(max(min(n, k), 2)), 1.0)
            max_ratio = self.max_teacher_entropy_ratio
            if max_ratio is not None and m["teacher_entropy_ratio"] > max_ratio:
                report.messages.append(
                    f"uniform teacher collapse: entropy {m['teacher_entropy']:.3g} nats is "
                    f"{m['teacher_entropy_ratio']:.3g} x log K (centring dominates: lower teacher_temp)"
                )
            if self.min_teacher_usage_ratio is not None and m["teacher_usage_ratio"] < self.min_teacher_usage_ratio:
                report.messages.append(
                    f"teacher collapse to one prototype: mean-distribution entropy {m['teacher_mean_entropy']:.3g} "
                    "nats (sharpening dominates: raise teacher_temp, check centring)"
                )
        return report

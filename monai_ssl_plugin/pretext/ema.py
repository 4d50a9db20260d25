"""The one momentum (EMA) teacher update shared by BYOL, MoCo, DINO and VoCo, and its schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from monai_ssl_plugin.distributed import unwrap

__all__ = ["CosineMomentum", "cosine_momentum", "ema_update", "update_teacher"]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float, buffers: str = "ema") -> None:
    """In place: ``target <- momentum * target + (1 - momentum) * online``.

    Applied to every parameter, matched by name (frozen ones included). Floating-point buffers (e.g.
    BatchNorm running stats) follow ``buffers``: ``"ema"`` averages them like parameters (timm's
    ModelEma), ``"copy"`` copies them, ``"none"`` leaves them; integer buffers (counters) are
    copied unless ``"none"``.

    Args:
        target: the teacher / momentum encoder (not trained by the optimiser).
        online: the student / online encoder; DDP and DataParallel wrappers are unwrapped.
        momentum: in [0, 1]; 1 freezes the target, 0 copies the online network.
        buffers: ``"ema"``, ``"copy"`` or ``"none"``.

    Raises:
        ValueError: if the two modules do not have the same parameter and buffer names and shapes.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if buffers not in ("ema", "copy", "none"):
        raise ValueError(f"buffers must be 'ema', 'copy' or 'none', got {buffers!r}")
    target, online = unwrap(target), unwrap(online)
    pairs = [(dict(target.named_parameters()), dict(online.named_parameters()))]
    if buffers != "none":
        pairs.append((dict(target.named_buffers()), dict(online.named_buffers())))
    for is_buffer, (tgt, onl) in enumerate(pairs):
        if tgt.keys() != onl.keys():
            diff = sorted(set(tgt) ^ set(onl))
            kind = "buffers" if is_buffer else "parameters"
            raise ValueError(f"target and online modules differ in {kind}: {diff[:5]}")
        for name, t in tgt.items():
            o = onl[name]
            if t.shape != o.shape:
                raise ValueError(f"shape mismatch for {name!r}: target {tuple(t.shape)} vs online {tuple(o.shape)}")
            if not t.is_floating_point() or (is_buffer and buffers == "copy"):
                t.copy_(o)
            else:
                # lerp: t + (1 - m) (o - t) == m t + (1 - m) o
                t.lerp_(o.to(t.dtype), 1.0 - momentum)


def cosine_momentum(step: int, total: int, base: float, final: float = 1.0) -> float:
    """Momentum rising from ``base`` at step 0 to ``final`` at ``total`` on a half cosine (BYOL, DINO).

    ``final - (final - base) * (cos(pi * step / total) + 1) / 2``; steps outside [0, total] are
    clamped. BYOL: base 0.996; DINO: 0.996 (0.992-0.996); MoCo and VoCo use a constant momentum.
    """
    if total <= 0:
        return final
    frac = min(max(step / total, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * frac) + 1.0) / 2.0


@torch.no_grad()
def update_teacher(momentum: float, pairs: Iterable[tuple[nn.Module, nn.Module]]) -> None:
    """One EMA step of a teacher made of several modules (backbone and head): each (teacher, student)
    pair with the same ``momentum``, so the teacher's parts never drift apart."""
    for teacher, student in pairs:
        ema_update(teacher, student, momentum)


class CosineMomentum:
    """The teacher momentum of BYOL and DINO: constant ``base_momentum`` without ``total_steps``, else
    rising to 1 on a half cosine over ``total_steps`` (:func:`cosine_momentum`).

    A pretext calls :meth:`_init_momentum` in ``__init__`` and :meth:`_step_momentum` in ``after_step``;
    ``momentum`` is the momentum of the last update (logged).
    """

    base_momentum: float
    total_steps: int | None
    momentum: float

    def _init_momentum(self, base_momentum: float, total_steps: int | None) -> None:
        self.base_momentum = float(base_momentum)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.momentum = self.base_momentum

    def momentum_at(self, iteration: int) -> float:
        if self.total_steps is None:
            return self.base_momentum
        return cosine_momentum(iteration, self.total_steps, self.base_momentum, 1.0)

    def _step_momentum(self, iteration: int, pairs: Iterable[tuple[nn.Module, nn.Module]]) -> None:
        """The teacher EMA after step ``iteration`` (the trainer's 1-based count of completed steps)."""
        self.momentum = self.momentum_at(iteration)
        update_teacher(self.momentum, pairs)

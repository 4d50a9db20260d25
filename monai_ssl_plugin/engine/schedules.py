"""Iteration-level learning-rate schedules: linear warm-up, then poly or cosine decay.

Both are ``torch.optim.lr_scheduler.LambdaLR`` objects stepped once per iteration by
``monai.handlers.LrScheduleHandler(lr_scheduler, epoch_level=False)``. The factor at iteration
``i`` (0-based, the iteration about to run) is:

- warm-up, ``i < warmup_iters``: ``(i + 1) / warmup_iters``, so the first step already trains
  and the last warm-up step reaches the base rate;
- decay, ``i >= warmup_iters``: with ``t = (i - warmup_iters) / (total_iters - warmup_iters)``,
  poly ``(1 - t) ** exponent`` (nnU-Net / nnssl, exponent 0.9) or cosine
  ``min_factor + (1 - min_factor) * (1 + cos(pi t)) / 2``; ``t`` is clamped to [0, 1].

The lambdas are closures, so ``LambdaLR.state_dict()`` does not store them: a resumed run takes
its schedule from the (possibly longer) new configuration and only its position from the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from monai_ssl_plugin.errors import PluginError


def _check(total_iters: int, warmup_iters: int) -> None:
    if total_iters < 1:
        raise PluginError(f"The schedule needs at least one iteration (total_iters={total_iters}).",
                          "Set train#trainer#max_epochs and train#epoch_length to positive numbers.")
    if not 0 <= warmup_iters <= total_iters:
        raise PluginError(f"warmup_iters={warmup_iters} is outside [0, total_iters={total_iters}].",
                          "Lower the warm-up (e.g. 5% of the run) or train longer.")


def _warmup_then(decay: Callable[[float], float], total_iters: int, warmup_iters: int) -> Callable[[int], float]:
    def factor(i: int) -> float:
        if i < warmup_iters:
            return (i + 1) / warmup_iters
        span = max(1, total_iters - warmup_iters)
        return decay(min(1.0, max(0.0, (i - warmup_iters) / span)))

    return factor


def warmup_poly(optimizer: torch.optim.Optimizer, total_iters: int, warmup_iters: int = 0,
                exponent: float = 0.9) -> LambdaLR:
    """Linear warm-up over ``warmup_iters``, then ``(1 - t) ** exponent`` down to 0 at ``total_iters``."""
    _check(total_iters, warmup_iters)
    return LambdaLR(optimizer, _warmup_then(lambda t: (1.0 - t) ** exponent, total_iters, warmup_iters))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_iters: int, warmup_iters: int = 0,
                  min_factor: float = 0.0) -> LambdaLR:
    """Linear warm-up over ``warmup_iters``, then a half cosine from the base rate to ``min_factor`` × base."""
    _check(total_iters, warmup_iters)
    if not 0.0 <= min_factor <= 1.0:
        raise PluginError(f"min_factor={min_factor} is outside [0, 1].", "Give the final rate as a share of the base rate.")
    return LambdaLR(optimizer, _warmup_then(lambda t: min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t)),
                                            total_iters, warmup_iters))


SCHEDULES = {"poly": warmup_poly, "cosine": warmup_cosine}


def build_schedule(optimizer: torch.optim.Optimizer, kind: str, total_iters: int, warmup_iters: int = 0,
                   **kwargs: float) -> LambdaLR:
    """``SCHEDULES[kind](optimizer, total_iters, warmup_iters, **kwargs)`` with a readable error for unknown kinds."""
    if kind not in SCHEDULES:
        raise PluginError(f"Unknown learning-rate schedule {kind!r}.", f"Use one of: {', '.join(SCHEDULES)}.")
    return SCHEDULES[kind](optimizer, total_iters, warmup_iters, **kwargs)


def warmup_iterations(total_iters: int, fraction: float = 0.05, maximum: int | None = None) -> int:
    """Warm-up length as a share of the run (at least 1 iteration, at most ``maximum``)."""
    n = max(1, int(round(fraction * total_iters)))
    return min(n, maximum) if maximum else min(n, total_iters)

"""Fixtures of the pretext tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn


def _train_losses(pretext: nn.Module, image: torch.Tensor, n: int = 6, lr: float = 1e-3, seed: int = 1) -> list[float]:
    """Losses of ``n`` Adam steps on one batch, each taken before its step. The RNG is re-seeded every
    step, so the pretext's random draws repeat and the objective is a fixed function: a working
    gradient path must lower it."""
    opt = torch.optim.Adam(pretext.parameters(), lr=lr)
    losses = []
    for _ in range(n):
        torch.manual_seed(seed)
        out = pretext({"image": image})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses


@pytest.fixture
def train_losses() -> Callable[..., list[float]]:
    """``train_losses(pretext, image, n=6, lr=1e-3, seed=1)``: see :func:`_train_losses`."""
    return _train_losses

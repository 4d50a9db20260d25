"""Seeded random draws for the batched transforms.

Every transform in this package takes ``generator: torch.Generator | int | None``:

* an ``int`` seeds a fresh generator on the data's device, so the same seed gives the same
  output on that device;
* a ``torch.Generator`` is used as is; draws are made on the generator's device and moved to the
  data's device (a CUDA generator keeps large noise tensors on the GPU; a CPU generator gives
  results that do not depend on the data's device, at the cost of a host-to-device copy);
* ``None`` uses torch's global RNG on the data's device.

All per-sample decisions (apply or not, sizes, positions) are drawn as tensors, never with
Python's ``random``, so one draw serves the whole batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

GeneratorLike = torch.Generator | int | None

__all__ = [
    "GeneratorLike",
    "resolve_generator",
    "uniform",
    "normal",
    "integers",
    "bernoulli",
    "random_bits",
]


def resolve_generator(generator: GeneratorLike, device: torch.device | str) -> torch.Generator | None:
    """Turn a seed into a generator on ``device``; pass generators and ``None`` through."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator)!r}")
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(generator)
    return gen


def _draw_device(generator: torch.Generator | None, device: torch.device | str) -> torch.device:
    return torch.device(device) if generator is None else generator.device


def uniform(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str,
    low: float | Tensor = 0.0,
    high: float | Tensor = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniform samples in ``[low, high)`` of ``shape`` on ``device``; bounds broadcast."""
    u = torch.rand(tuple(shape), generator=generator, device=_draw_device(generator, device), dtype=dtype)
    u = u.to(device)
    if isinstance(low, Tensor) or isinstance(high, Tensor) or low != 0.0 or high != 1.0:
        u = low + u * (high - low)
    return u


def normal(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal samples of ``shape`` on ``device``."""
    z = torch.randn(tuple(shape), generator=generator, device=_draw_device(generator, device), dtype=dtype)
    return z.to(device)


def integers(
    low: int | Tensor,
    high: int | Tensor,
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str,
) -> Tensor:
    """Integers uniform in ``[low, high]`` (both inclusive, like ``random.randint``) as int64.

    ``low``/``high`` may be tensors broadcastable to ``shape`` (per-sample ranges); where
    ``high < low`` the result is ``low``.
    """
    # float64 keeps the floor unbiased for every range this package uses (< 2**31).
    u = uniform(shape, generator, device, dtype=torch.float64)
    if isinstance(low, int) and isinstance(high, int):  # the common case, in three tensor ops
        span = max(high - low + 1, 1)
        return (u * span).long().clamp_(max=span - 1).add_(low)
    low_t = torch.as_tensor(low, device=device, dtype=torch.int64)
    high_t = torch.as_tensor(high, device=device, dtype=torch.int64)
    span = (high_t - low_t + 1).clamp(min=1)
    return low_t + torch.minimum((u * span).long(), span - 1)


def bernoulli(
    p: float | Tensor, shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """Boolean tensor of ``shape``, ``True`` with probability ``p``."""
    return uniform(shape, generator, device) < p


def random_bits(n: int, bits: int, generator: torch.Generator | None, device: torch.device | str) -> Tensor:
    """``n`` random non-negative int32 values below ``2**bits`` (``bits`` <= 31).

    Draws half as many 64-bit words and splits them: random-number generation, not the
    arithmetic, dominates the cost of sort keys for millions of elements.
    """
    if not 1 <= bits <= 31:
        raise ValueError("bits must be in [1, 31]")
    dev = _draw_device(generator, device)
    words = torch.randint(
        -(2**63), 2**63 - 1, ((n + 1) // 2,), generator=generator, device=dev, dtype=torch.int64
    )
    return words.view(torch.int32)[:n].to(device).bitwise_and_((1 << bits) - 1)

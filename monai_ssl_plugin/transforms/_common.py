"""The opening every batched transform shares: the batch checked once, the generator resolved,
and which samples a corruption touches, drawn the same way everywhere (:func:`open_batch`); box
corruptions (coarse dropout / shuffle, in- / out-painting) then draw their boxes (:func:`open_boxes`).

Keeping these draws in one place keeps every transform's random stream in the same order, which
the seeded outputs (and the tests pinning them) depend on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ._random import GeneratorLike, bernoulli, integers, resolve_generator, uniform


def spatial_shape(x: Tensor) -> tuple[int, ...]:
    """The spatial shape of a batch ``(B, C, *spatial)``; refuses anything but 2 or 3 spatial dims."""
    if x.dim() not in (4, 5):
        raise ValueError(f"expected a batch (B, C, *spatial) with 2 or 3 spatial dims, got shape {tuple(x.shape)}")
    return tuple(x.shape[2:])


class Opening(NamedTuple):
    """What a transform knows after its opening draw."""

    spatial: tuple[int, ...]
    gen: torch.Generator | None
    batch: int
    device: torch.device
    selected: Tensor | None  # (B,) bool: the samples to corrupt (None when the transform has no prob)


def open_batch(x: Tensor, generator: GeneratorLike, prob: float | None = None, apply: Tensor | None = None
               ) -> Opening:
    """Check ``x``, resolve ``generator`` on its device and, with ``prob``, draw which samples to corrupt."""
    spatial = spatial_shape(x)
    gen = resolve_generator(generator, x.device)
    batch, dev = x.shape[0], x.device
    selected = None if prob is None else samples_to_corrupt(prob, apply, batch, gen, dev)
    return Opening(spatial, gen, batch, dev, selected)


# (spatial, batch, gen, device) -> starts, sizes (B, K, D) and active (B, K): a box corruption's draw
BoxDraw = Callable[[tuple[int, ...], int, torch.Generator | None, torch.device], tuple[Tensor, Tensor, Tensor]]


class BoxOpening(NamedTuple):
    """What a box corruption (holes, painted windows) knows after its opening draw."""

    gen: torch.Generator | None
    selected: Tensor  # (B,) bool: the samples to corrupt
    starts: Tensor  # (B, K, D) first voxel of each box
    sizes: Tensor  # (B, K, D) sides of each box
    active: Tensor  # (B, K) bool: the boxes drawn for each sample, whether or not it is selected

    @property
    def active_selected(self) -> Tensor:
        """(B, K) bool: ``active`` with the boxes of the samples not selected cleared."""
        return self.active & self.selected[:, None]


def open_boxes(x: Tensor, generator: GeneratorLike, prob: float, apply: Tensor | None, draw: BoxDraw
               ) -> BoxOpening:
    """:func:`open_batch` with ``prob``, then the boxes from ``draw``: every box corruption draws
    which samples first and its boxes second, from the same generator, so its stream order is fixed."""
    spatial, gen, batch, dev, selected = open_batch(x, generator, prob, apply)
    starts, sizes, active = draw(spatial, batch, gen, dev)
    return BoxOpening(gen, selected, starts, sizes, active)


def samples_to_corrupt(
    prob: float, apply: Tensor | None, batch: int, gen: torch.Generator | None, device: torch.device
) -> Tensor:
    """(B,) bool: which samples a corruption touches. Drawn even when ``apply`` is given, so the
    generator advances the same way whichever way the caller chooses samples."""
    drawn = bernoulli(prob, (batch,), gen, device)
    if apply is None:
        return drawn
    apply = torch.as_tensor(apply, device=device, dtype=torch.bool)
    if apply.shape != (batch,):
        raise ValueError(f"apply must have shape ({batch},), got {tuple(apply.shape)}")
    return apply


def per_dim(value: int | Sequence[int], spatial: Sequence[int], name: str) -> tuple[int, ...]:
    """Broadcast an int to every spatial dim; non-positive entries mean "the full dim" (MONAI)."""
    vals = [int(value)] * len(spatial) if isinstance(value, int) else [int(v) for v in value]
    if len(vals) != len(spatial):
        raise ValueError(f"{name} needs {len(spatial)} values, got {vals}")
    return tuple(s if v <= 0 else v for v, s in zip(vals, spatial))


def chain_active(
    n_max: int, continue_prob: float, batch: int, gen: torch.Generator | None, device: torch.device, first_always: bool
) -> Tensor:
    """(B, n_max) bool: windows drawn by ``while count < n_max and random() < continue_prob``.

    The cumulative product turns the sequential "keep going" draws into one tensor op.
    """
    keep = uniform((batch, n_max), gen, device) < continue_prob
    if first_always:
        keep[:, 0] = True
    return torch.cumprod(keep.to(torch.int8), dim=1).bool()


def stream_seeds(batch: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
    """(B,) int64 seeds of the compiled CPU kernels' per-sample random streams, drawn from ``gen``."""
    return integers(0, 2**53 - 1, (batch,), gen, device)


def drop_samples(region: Tensor, selected: Tensor) -> Tensor:
    """Clear ``region`` ((B, *spatial) bool) in place for the samples not ``selected``."""
    skip = (~selected).nonzero().squeeze(1)
    return region.index_fill_(0, skip, False) if skip.numel() else region


def on_samples(x: Tensor, selected: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Apply ``fn(x_subset, sample_index)`` to the selected samples only; copy the others.

    Skips the expensive work for samples a probability test left out (Bezier LUTs, shuffles).
    """
    if bool(selected.all()):
        return fn(x, torch.arange(x.shape[0], device=x.device))
    out = x.clone(memory_format=torch.contiguous_format)
    if bool(selected.any()):
        idx = selected.nonzero().squeeze(1)
        out[idx] = fn(x[idx], idx)
    return out

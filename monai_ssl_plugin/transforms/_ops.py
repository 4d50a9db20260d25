"""The one table from an operation to its two implementations: batched tensor ops, which run on
any device, and compiled CPU loops (numba, :mod:`._cpu_kernels`), which touch each voxel-write once.

The transforms draw their random parameters (which samples, box positions and sizes) before they
pick an implementation, from the same generator, so both implementations see the same boxes; each
then draws its own fill randomness (hash seeds for the tensor form, one stream per sample for the
compiled loops). :func:`implementation` picks the compiled loop for float CPU tensors when numba
is installed, the tensor form otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import _cpu_kernels
from ._boxes import (_INT32_SEGMENTS, _box_mask, _fill_noise, _hash_bell, _hash_uniform, _scatter_boxes_,
                     _shuffle_holes_, _uniform_boxes, paste_from_partners_, shuffle_boxes)
from ._common import drop_samples, on_samples, stream_seeds
from ._random import integers

__all__ = ["Implementations", "OPS", "compiled", "implementation"]


class Implementations(NamedTuple):
    """The tensor form and the compiled CPU form of one operation (same arguments, same result
    semantics; bit-identical only within one form)."""

    tensor: Callable[..., Any]
    compiled_cpu: Callable[..., Any]

    def pick(self, use_compiled: bool) -> Callable[..., Any]:
        return self.compiled_cpu if use_compiled else self.tensor


def compiled(x: Tensor, allowed: bool = True) -> bool:
    """True when ``x`` goes to the compiled CPU loops (and the caller's case allows them)."""
    return allowed and _cpu_kernels.available(x)


def implementation(op: str, x: Tensor, allowed: bool = True) -> Callable[..., Any]:
    """The implementation of ``op`` (a key of :data:`OPS`) for the batch ``x``."""
    return OPS[op].pick(compiled(x, allowed))


def _bounds(low: float, high: float) -> tuple[Tensor, Tensor]:
    return torch.tensor(float(low)), torch.tensor(float(high))


# -- Models Genesis local pixel shuffle: blocks of the original shuffled, later blocks win -------
def _shuffle_blocks_cpu(x: Tensor, selected: Tensor, starts: Tensor, sizes: Tensor, gen: torch.Generator | None
                        ) -> Tensor:
    seeds = stream_seeds(x.shape[0], gen, x.device)  # the reference's block loop, compiled
    return on_samples(x, selected, lambda xs, idx: _cpu_kernels.shuffle_boxes_cpu(xs, starts[idx], sizes[idx],
                                                                                   seeds[idx]))


def _shuffle_blocks_tensor(x: Tensor, selected: Tensor, starts: Tensor, sizes: Tensor, gen: torch.Generator | None
                           ) -> Tensor:
    """Samples in groups whose block count fits int32 sort keys on CPU (half the sort cost)."""
    batch, n_blocks, dev = x.shape[0], starts.shape[1], x.device
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    skipped = (~selected).nonzero().squeeze(1)
    if skipped.numel():
        out.index_copy_(0, skipped, x.index_select(0, skipped))
    chosen = selected.nonzero().squeeze(1).tolist()
    step = max(1, _INT32_SEGMENTS // max(1, n_blocks)) if dev.type == "cpu" else batch
    for i in range(0, len(chosen), step):
        part = chosen[i : i + step]
        if len(part) == 1:  # the default: one sample, written straight into the output
            b = part[0]
            shuffle_boxes(x[b : b + 1], starts[b : b + 1], sizes[b : b + 1], gen, out=out[b : b + 1])
        else:
            idx = torch.tensor(part, device=dev)
            out.index_copy_(0, idx, shuffle_boxes(x.index_select(0, idx), starts[idx], sizes[idx], gen))
    return out


# -- in-painting: the active boxes become uniform noise -----------------------------------------
def _in_paint_cpu(x: Tensor, starts: Tensor, ends: Tensor, active: Tensor, low: float, high: float,
                  gen: torch.Generator | None) -> Tensor:
    batch = x.shape[0]
    return _cpu_kernels.paint_boxes_cpu(x, starts, ends, active, torch.ones(batch, dtype=torch.int8),
                                        stream_seeds(batch, gen, x.device), *_bounds(low, high))


def _in_paint_tensor(x: Tensor, starts: Tensor, ends: Tensor, active: Tensor, low: float, high: float,
                     gen: torch.Generator | None) -> Tensor:
    return _uniform_boxes(x, starts, ends, active, low, high, gen)


# -- out-painting: everything but the active windows of the selected samples becomes noise --------
def _out_paint_cpu(x: Tensor, starts: Tensor, ends: Tensor, active: Tensor, selected: Tensor, low: float,
                   high: float, gen: torch.Generator | None) -> Tensor:
    # noise written once, the windows copied back: no mask, no blend
    return _cpu_kernels.paint_boxes_cpu(x, starts, ends, active, selected.to(torch.int8) * 2,
                                        stream_seeds(x.shape[0], gen, x.device), *_bounds(low, high))


def _out_paint_tensor(x: Tensor, starts: Tensor, ends: Tensor, active: Tensor, selected: Tensor, low: float,
                      high: float, gen: torch.Generator | None) -> Tensor:
    region = drop_samples(~_box_mask(tuple(x.shape[2:]), starts, ends, active & selected[:, None]), selected)
    return _fill_noise(x, region, low, high, gen)


# -- MONAI coarse dropout: holes (or all but the holes) filled with noise or a constant ----------
def _coarse_dropout_cpu(x: Tensor, starts: Tensor, sizes: Tensor, active: Tensor, selected: Tensor,
                        dropout_holes: bool, fill_value: float | tuple[float, float] | None,
                        gen: torch.Generator | None) -> Tensor:
    # NaN bounds: the kernel fills within each sample's own [min, max) (MONAI's default)
    low_t, high_t = (float("nan"),) * 2 if fill_value is None else map(float, fill_value)
    return _cpu_kernels.paint_boxes_cpu(
        x, starts, starts + sizes, active, selected.to(torch.int8) * (1 if dropout_holes else 2),
        stream_seeds(x.shape[0], gen, x.device), torch.tensor(low_t), torch.tensor(high_t),
    )


def _coarse_dropout_tensor(x: Tensor, starts: Tensor, sizes: Tensor, active: Tensor, selected: Tensor,
                           dropout_holes: bool, fill_value: float | tuple[float, float] | None,
                           gen: torch.Generator | None) -> Tensor:
    batch, spatial = x.shape[0], tuple(x.shape[2:])
    if fill_value is None:  # MONAI: uniform in [min, max) of each sample
        low, high = x.reshape(batch, -1).amin(1).float(), x.reshape(batch, -1).amax(1).float()
    elif isinstance(fill_value, (tuple, list)):
        low, high = float(fill_value[0]), float(fill_value[1])
    box_voxels = int((sizes.prod(-1) * active).sum())
    if dropout_holes and 2 * box_voxels < batch * math.prod(spatial):  # small holes: touch only them
        if fill_value is None or isinstance(fill_value, (tuple, list)):
            return _uniform_boxes(x, starts, starts + sizes, active, low, high, gen)
        out = x.clone(memory_format=torch.contiguous_format)
        value = float(fill_value)
        return _scatter_boxes_(
            out, starts, starts + sizes, active, lambda d, o: torch.full(d.shape, value, device=d.device)
        )
    in_holes = _box_mask(spatial, starts, starts + sizes, active)
    region = in_holes if dropout_holes else drop_samples(~in_holes, selected)
    if fill_value is None or isinstance(fill_value, (tuple, list)):
        return _fill_noise(x, region, low, high, gen)
    return x.masked_fill(region[:, None], float(fill_value))


# -- MONAI coarse shuffle, in place: each channel of each hole permuted, hole after hole ----------
def _coarse_shuffle_cpu_(out: Tensor, starts: Tensor, sizes: Tensor, active: Tensor, gen: torch.Generator | None
                         ) -> None:
    _cpu_kernels.channel_shuffle_boxes_cpu_(out, starts, sizes, active, stream_seeds(out.shape[0], gen, out.device))


# -- the ViTAutoEnc tutorial's dropout: in-paint or out-paint per row, noise in the sample's range -
Holes = tuple[Tensor, Tensor, Tensor]  # starts, sizes (R, K, D), active (R, K)


def _view_dropout_cpu(x: Tensor, n_views: int, use_in: Tensor, inner: Holes, outer: Holes,
                      gen: torch.Generator | None) -> Tensor:
    """Both branches in one compiled pass: mode 1 in-paints, 2 out-paints, every view read from ``x``."""
    (s_in, z_in, a_in), (s_out, z_out, a_out) = inner, outer
    source = torch.arange(x.shape[0]).repeat(n_views)
    low, high = _cpu_kernels.minmax_cpu(x)
    return _cpu_kernels.paint_boxes_cpu(
        x, torch.cat([s_in, s_out], 1), torch.cat([s_in + z_in, s_out + z_out], 1),
        torch.cat([a_in & use_in[:, None], a_out & ~use_in[:, None]], 1),
        torch.where(use_in, 1, 2).to(torch.int8), stream_seeds(use_in.numel(), gen, x.device), low[source],
        high[source], source=source,
    )


def _view_dropout_tensor(x: Tensor, n_views: int, use_in: Tensor, inner: Holes, outer: Holes,
                         gen: torch.Generator | None) -> Tensor:
    """The two branches touch disjoint rows: one out-painting region filled once, then the in-painted
    rows' holes."""
    (s_in, z_in, a_in), (s_out, z_out, a_out) = inner, outer
    rows, spatial, dev = use_in.numel(), tuple(x.shape[2:]), x.device
    xs = x.repeat(n_views, *([1] * (x.dim() - 1))) if n_views > 1 else x
    low, high = xs.reshape(rows, -1).amin(1).float(), xs.reshape(rows, -1).amax(1).float()
    region = drop_samples(~_box_mask(spatial, s_out, s_out + z_out, a_out & ~use_in[:, None]), ~use_in)
    out = _fill_noise(xs, region, low, high, gen)  # out-painted samples; the others are copied
    seed = integers(0, 2**31 - 1, (), gen, dev)
    _scatter_boxes_(  # in-painted samples: only their holes are touched
        out, s_in, s_in + z_in, a_in & use_in[:, None],
        lambda dest, owner: _hash_uniform(dest, seed).mul_((high - low)[owner]).add_(low[owner]),
    )
    return out


# -- Swin UNETR cut-out: noise boxes, then boxes pasted from a partner sample ----------------------
def _swin_cutout_tensor(x: Tensor, starts: Tensor, ends: Tensor, active: Tensor, seeds: Tensor, p_starts: Tensor,
                        p_ends: Tensor, p_active: Tensor, partner: Tensor, *, source: Tensor | None = None,
                        rotation: Tensor | None = None) -> tuple[Tensor, Tensor]:
    if rotation is not None:
        raise ValueError("rotation inside the cut-out needs the compiled CPU kernels; rotate first")
    original = x if source is None else x.index_select(0, source.to(x.device))
    out = original.clone(memory_format=torch.contiguous_format)

    def scaled_noise(dest: Tensor, owner: Tensor) -> Tensor:
        # bell-shaped noise min-max scaled to [0, 1] (reference: normal noise, min-max per block)
        noise = _hash_bell(dest, seeds)
        low, high = noise.aminmax()
        return noise.sub_(low).div_((high - low).clamp(min=1e-12))

    _scatter_boxes_(out, starts, ends, active, scaled_noise)
    paste_from_partners_(out, original, p_starts, p_ends, p_active, partner)  # no boxes, no partner: no-op
    return out, original


# -- 90-degree rotations of stacked views, written ``copies`` times ----------------------------------
def _rotations_cpu(x: Tensor, labels: Tensor, last_plane: Tensor | None, dims: tuple[int, int], repeats: int,
                   copies: int) -> tuple[Tensor, ...]:
    """One compiled pass instead of select / flip / copy per class (rotations in the last plane)."""
    out = _cpu_kernels.rot90_last_plane_cpu(x, last_plane, copies, torch.arange(x.shape[0]).repeat(repeats))
    return out if copies == 2 else (out,)


def _rotations_tensor(x: Tensor, labels: Tensor, last_plane: Tensor | None, dims: tuple[int, int], repeats: int,
                      copies: int) -> tuple[Tensor, ...]:
    source = x.repeat(repeats, *([1] * (x.dim() - 1))) if repeats > 1 else x
    out = torch.empty_like(source, memory_format=torch.contiguous_format)
    for k in range(4):  # four class groups, each one batched rot90
        idx = (labels == k).nonzero().squeeze(1)
        if idx.numel():
            out.index_copy_(0, idx, torch.rot90(source.index_select(0, idx), k, dims))
    return (out, out.clone()) if copies == 2 else (out,)


OPS: dict[str, Implementations] = {
    "local_pixel_shuffle": Implementations(_shuffle_blocks_tensor, _shuffle_blocks_cpu),
    "in_painting": Implementations(_in_paint_tensor, _in_paint_cpu),
    "out_painting": Implementations(_out_paint_tensor, _out_paint_cpu),
    "coarse_dropout": Implementations(_coarse_dropout_tensor, _coarse_dropout_cpu),
    "coarse_shuffle_": Implementations(_shuffle_holes_, _coarse_shuffle_cpu_),
    "view_dropout": Implementations(_view_dropout_tensor, _view_dropout_cpu),
    "swin_cutout": Implementations(_swin_cutout_tensor, _cpu_kernels.swin_cutout_cpu),
    "rotations90": Implementations(_rotations_tensor, _rotations_cpu),
}

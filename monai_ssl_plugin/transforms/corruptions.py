"""Restorative pretext corruptions as batched tensor operations on the data's device.

Every function takes a batch ``x`` of shape ``(B, C, *spatial)`` with two or three spatial dims,
a ``generator`` (``torch.Generator``, int seed or ``None``; see :mod:`._random`), draws one set of
random parameters for the whole batch as tensors, and returns new tensors (``x`` is never
modified). No Python loop runs over voxels or blocks. The only loops are over flip patterns
(<= 2**D), layers of overlapping holes (``coarse_shuffle``, usually 1-2), block-drawing rounds
(``swin_unetr_cutout``, usually 1-2) and -- on CPU only -- over the samples of
``local_pixel_shuffle``, whose 10,000 blocks per sample are sorted one sample at a time so the
sort keys fit int32 (half the cost of the batched int64 sort; on CUDA the batch is one call).

Box-shaped regions are filled through their voxel indices (cost ~ box volume) with counter-based
hash noise, so overlapping boxes write identical values and results stay deterministic; large
regions (out-painting) use a dense mask from a batched matrix product and blend drawn noise.

On CPU, when numba is installed, the box loops themselves -- local pixel shuffle, in-/out-painting,
cut-out and paste, coarse dropout and coarse shuffle -- run as compiled loops over the batch
(:mod:`._cpu_kernels`): the random parameters (which samples, box positions and sizes) are drawn
exactly as above from the same generator, and the per-voxel randomness comes from one seeded
stream per sample. Those loops touch each voxel-write once, where the tensor form needs several
memory passes (and, for the shuffle, a sort); the tensor form remains the path on CUDA.

Published settings implemented here:

* Models Genesis -- Zhou et al., "Models Genesis", Medical Image Analysis 67, 2021: flip (input
  and target alike), local pixel shuffling (p 0.5), non-linear Bezier intensity mapping (p 0.9)
  and painting (p 0.9; out-painting 0.8 / in-painting 0.2), in that order (:func:`models_genesis`).
* MONAI ``RandCoarseDropout`` / ``RandCoarseShuffle`` as batched ops (:func:`coarse_dropout`,
  :func:`coarse_shuffle`) and the view corruption of MONAI's ViTAutoEnc self-supervised tutorial
  (:func:`monai_ssl_view`).
* Swin UNETR pretraining -- Tang et al., "Self-Supervised Pre-Training of Swin Transformers for 3D
  Medical Image Analysis", CVPR 2022: 4-way rotation + cut-out of up to 30 % of the voxels
  (:func:`swin_unetr_cutout`, :func:`swin_unetr_augment`).

Block masking for MAE-style pretexts lives in :mod:`.masking` (``random_block_mask``), not here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from . import _cpu_kernels
from ._random import GeneratorLike, bernoulli, integers, random_bits, resolve_generator, uniform
from .views import last_plane_classes, random_rotations90, rotation_labels, rotation_plane

__all__ = [
    "random_flip",
    "local_pixel_shuffle",
    "shuffle_boxes",
    "bezier_lut",
    "apply_bezier",
    "bezier_intensity",
    "in_painting",
    "out_painting",
    "models_genesis",
    "coarse_dropout",
    "coarse_shuffle",
    "monai_ssl_view",
    "monai_ssl_views",
    "paste_from_partners_",
    "swin_unetr_cutout",
    "swin_unetr_augment",
    "SwinUNETRViews",
]


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _spatial_shape(x: Tensor) -> tuple[int, ...]:
    if x.dim() not in (4, 5):
        raise ValueError(f"expected a batch (B, C, *spatial) with 2 or 3 spatial dims, got shape {tuple(x.shape)}")
    return tuple(x.shape[2:])


def _per_dim(value: int | Sequence[int], spatial: Sequence[int], name: str) -> tuple[int, ...]:
    """Broadcast an int to every spatial dim; non-positive entries mean "the full dim" (MONAI)."""
    vals = [int(value)] * len(spatial) if isinstance(value, int) else [int(v) for v in value]
    if len(vals) != len(spatial):
        raise ValueError(f"{name} needs {len(spatial)} values, got {vals}")
    return tuple(s if v <= 0 else v for v, s in zip(vals, spatial))


def _samples_to_corrupt(
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


def _chain_active(
    n_max: int, continue_prob: float, batch: int, gen: torch.Generator | None, device: torch.device, first_always: bool
) -> Tensor:
    """(B, n_max) bool: windows drawn by ``while count < n_max and random() < continue_prob``.

    The cumulative product turns the sequential "keep going" draws into one tensor op.
    """
    keep = uniform((batch, n_max), gen, device) < continue_prob
    if first_always:
        keep[:, 0] = True
    return torch.cumprod(keep.to(torch.int8), dim=1).bool()


def _box_mask(
    spatial: Sequence[int], starts: Tensor, ends: Tensor, active: Tensor | None = None, method: str | None = None
) -> Tensor:
    """Union of axis-aligned boxes, ``(B, *spatial)`` bool.

    ``starts``/``ends``: (B, K, D) int, half-open ``[start, end)`` per axis; ``active``: (B, K)
    bool. Two exact strategies, picked by estimated cost:

    * few voxels in the boxes (cut-out, in-painting): enumerate the box voxels as one ragged
      batch and set them (duplicates all write ``True``, so the result is deterministic);
    * large boxes (out-painting): each box is the outer product of one 1-D indicator per axis,
      so the union count is a batched matrix product over K instead of K dense paintings.

    ``method`` ("paint" / "matmul") overrides the choice (tests check both agree).
    """
    batch, n_box, dims = starts.shape
    dev = starts.device
    n_vox = math.prod(spatial)
    if active is None:
        active = torch.ones(batch, n_box, dtype=torch.bool, device=dev)
    active = active & ((ends - starts) > 0).all(-1)
    box_vox = int(((ends - starts).clamp(min=0).prod(-1) * active).sum())
    rows = active.any(1).nonzero().squeeze(1)
    cols = active.any(0).nonzero().squeeze(1)
    mask = torch.zeros(batch, *spatial, dtype=torch.bool, device=dev)
    if rows.numel() == 0:
        return mask
    # cost model from CPU timings: ~4 passes per enumerated voxel vs one pass per 8 boxes per voxel
    paint = 4 * box_vox < rows.numel() * n_vox * max(1.0, cols.numel() / 8)
    if method == "paint" or (method is None and paint):
        which = active.nonzero()  # (P, 2): sample, box
        box_start = starts[which[:, 0], which[:, 1]]
        dest, _ = _box_elements(spatial, which[:, 0], box_start, ends[which[:, 0], which[:, 1]] - box_start)
        mask.view(-1).index_fill_(0, dest, True)
        return mask
    starts, ends, active = starts[rows][:, cols], ends[rows][:, cols], active[rows][:, cols]
    n_rows, n_box = active.shape
    ind = []
    for d, size in enumerate(spatial):
        coord = torch.arange(size, device=dev)
        ind.append(((coord >= starts[..., d, None]) & (coord < ends[..., d, None])).to(torch.float32))  # (R, K, S_d)
    ind[0] = ind[0] * active[..., None].to(torch.float32)
    if dims == 2:
        counts = torch.bmm(ind[0].transpose(1, 2), ind[1])  # (R, S0, S1)
    else:
        plane = (ind[0][:, :, :, None] * ind[1][:, :, None, :]).reshape(n_rows, n_box, -1)  # (R, K, S0*S1)
        counts = torch.bmm(plane.transpose(1, 2), ind[2])  # (R, S0*S1, S2)
    covered = (counts > 0.5).view(n_rows, *spatial)
    if n_rows == batch:
        return covered
    return mask.index_copy_(0, rows, covered)


def _window_starts(
    spatial: Sequence[int], sizes: Tensor, margin: int, gen: torch.Generator | None
) -> Tensor:
    """Uniform start of each window in ``[margin, S - size - margin]`` (falls back to
    ``[0, S - size]`` where the margin does not fit). ``sizes``: (B, K, D) -> starts (B, K, D)."""
    s = torch.tensor(spatial, device=sizes.device)
    room = s - sizes
    fits = room - 2 * margin >= 0
    low = torch.where(fits, torch.full_like(room, margin), torch.zeros_like(room))
    high = torch.where(fits, room - margin, room)
    return integers(low, high, sizes.shape, gen, sizes.device)


def _region_index(region: Tensor, channels: int) -> tuple[Tensor, Tensor]:
    """Flat indices into a (B, C, *spatial) tensor of the voxels in ``region`` ((B, *spatial)
    bool), for every channel: ``index`` (P, C) int64 and the sample of each voxel ``sample`` (P,)."""
    n_vox = region[0].numel()
    pos = region.reshape(-1).nonzero().squeeze(1)  # (P,) = sample * N + voxel
    sample = pos // n_vox
    if channels == 1:
        return pos[:, None], sample
    index = (pos + sample * (channels - 1) * n_vox)[:, None] + torch.arange(channels, device=region.device) * n_vox
    return index, sample


def _fill(
    x: Tensor,
    region: Tensor,
    draw: Callable[[int], Tensor],
    low: float | Tensor = 0.0,
    high: float | Tensor = 1.0,
) -> Tensor:
    """Copy of ``x`` with ``low + draw(n) * (high - low)`` written where ``region`` ((B, *spatial)
    bool, all channels); ``low``/``high`` may be (B,) per-sample bounds.

    Per sample, the cheaper of two exact strategies (CPU timings): a sample whose region covers
    more than a quarter of the volume draws values for the whole volume and blends them in with
    ``torch.lerp`` (weights 0/1, exact; about 3x faster than ``torch.where`` on CPU); the others
    draw values only for their region's voxels (indices from ``nonzero``) and ``scatter_`` them.
    Values are drawn for the dense samples first, then for the sparse ones, in sample order.
    """
    batch, ch = x.shape[:2]
    n_vox = region[0].numel()
    dev = x.device
    low_t = torch.as_tensor(low, device=dev, dtype=torch.float32).expand(batch)
    span_t = torch.as_tensor(high, device=dev, dtype=torch.float32).expand(batch) - low_t
    # summing the bytes: count_nonzero(dim=1) is ~10x slower on CPU (it widens to int64)
    counts = region.reshape(batch, -1).view(torch.uint8).sum(1, dtype=torch.int32)
    dense = 4 * counts > n_vox
    dense_idx = dense.nonzero().squeeze(1)
    sparse_idx = (~dense & (counts > 0)).nonzero().squeeze(1)
    out = None
    if dense_idx.numel():
        n = dense_idx.numel()
        values = draw(n * ch * n_vox).view(n, ch, *region.shape[1:])
        bshape = (n,) + (1,) * (x.dim() - 1)
        values.mul_(span_t[dense_idx].view(bshape)).add_(low_t[dense_idx].view(bshape))
        weight = region.index_select(0, dense_idx)[:, None].to(torch.float32)
        blended = torch.lerp(x.index_select(0, dense_idx).float(), values, weight).to(x.dtype)
        if n == batch:
            out = blended
        else:
            out = x.clone(memory_format=torch.contiguous_format)
            out.index_copy_(0, dense_idx, blended)
    if out is None:
        out = x.clone(memory_format=torch.contiguous_format)
    if sparse_idx.numel():
        index, sample = _region_index(region.index_select(0, sparse_idx), ch)
        owner = sparse_idx[sample]  # sample in the full batch
        index = index + ((owner - sample) * ch * n_vox)[:, None]
        values = draw(index.numel()).view(index.shape)
        values.mul_(span_t[owner, None]).add_(low_t[owner, None])
        out.view(-1).scatter_(0, index.view(-1), values.view(-1).to(x.dtype))
    return out


def _fill_noise(
    x: Tensor, region: Tensor, low: float | Tensor, high: float | Tensor, gen: torch.Generator | None
) -> Tensor:
    """Copy of ``x`` with uniform noise in ``[low, high)`` where ``region`` ((B, *spatial) bool)."""
    return _fill(x, region, lambda n: uniform((n,), gen, x.device), low, high)


_MASK32 = 0xFFFFFFFF


def _mul32(h: Tensor, c: int) -> Tensor:
    """``(h * c) mod 2**32`` for int64 ``0 <= h < 2**32`` and a 32-bit constant, without
    int64 overflow (``c`` split into 16-bit halves)."""
    high = torch.bitwise_left_shift((h * (c >> 16)).bitwise_and_(0xFFFF), 16)
    return high.add_(h * (c & 0xFFFF)).bitwise_and_(_MASK32)


def _xorshift_(h: Tensor, shift: int) -> Tensor:
    # the functional shift: ``h >> shift`` with a Python int is ~10x slower on CPU (torch 2.x)
    return h.bitwise_xor_(torch.bitwise_right_shift(h, shift))


def _hash32(index: Tensor, seed: Tensor) -> Tensor:
    """32-bit integer hash (int64 holding [0, 2**32)) of ``index`` mixed with ``seed``: a
    golden-ratio multiply, then Wellons' "lowbias32" mixer."""
    h = _mul32(index.bitwise_and(_MASK32), 0x9E3779B1).add_(seed).bitwise_and_(_MASK32)
    h = _mul32(_xorshift_(h, 16), 0x7FEB352D)
    h = _mul32(_xorshift_(h, 15), 0x846CA68B)
    return _xorshift_(h, 16)


def _hash_uniform(index: Tensor, seed: Tensor) -> Tensor:
    """Counter-based uniform noise in [0, 1) (24 bits) keyed on ``index`` (int64, any shape)
    and ``seed`` (int64 scalar tensor).

    The value depends only on (index, seed), so writing it at ``index`` is deterministic even when
    an index occurs several times (overlapping boxes) -- plain random draws per occurrence would
    make the surviving value depend on the scatter order. Same result on every device.
    """
    return torch.bitwise_right_shift(_hash32(index, seed), 8).to(torch.float32).mul_(2.0**-24)


def _hash_bell(index: Tensor, seed: Tensor) -> Tensor:
    """Bell-shaped noise in [0, 1]: the mean of the four bytes of one 32-bit hash (Irwin-Hall,
    n = 4, close to a normal; cheap where ``ndtri`` of a uniform is ~25x slower on CPU)."""
    h = _hash32(index, seed)
    total = h.bitwise_and(0xFF)
    for shift in (8, 16, 24):
        total += torch.bitwise_right_shift(h, shift).bitwise_and_(0xFF)
    return total.to(torch.float32).mul_(1.0 / (4 * 255))


def _box_voxels(
    spatial: Sequence[int], channels: int, starts: Tensor, ends: Tensor, active: Tensor
) -> tuple[Tensor, Tensor]:
    """Flat indices into a (B, C, *spatial) tensor of every voxel (every channel) of the active
    boxes, duplicates included where boxes overlap: ``dest`` (M,) and its sample ``owner`` (M,).
    ``starts``/``ends``: (B, K, D) half-open boxes; ``active``: (B, K) bool."""
    dev = starts.device
    active = active & ((ends - starts) > 0).all(-1)
    which = active.nonzero()  # (P, 2): sample, box
    box_start = starts[which[:, 0], which[:, 1]].repeat_interleave(channels, 0)
    box_size = ends[which[:, 0], which[:, 1]].repeat_interleave(channels, 0) - box_start
    volume = (which[:, 0, None] * channels + torch.arange(channels, device=dev)).reshape(-1)  # sample * C + c
    dest, counts = _box_elements(spatial, volume, box_start, box_size)
    owner = torch.repeat_interleave(volume // channels, counts, output_size=dest.numel())
    return dest, owner


def _scatter_boxes_(
    out: Tensor, starts: Tensor, ends: Tensor, active: Tensor, values: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """Write ``values(dest, owner)`` into the box voxels of the contiguous tensor ``out`` in place.

    Cost scales with the box volume, not the batch volume (no mask, no ``nonzero``); ``values``
    must depend only on ``dest`` (and the owner sample) so repeated voxels get one value.
    """
    dest, owner = _box_voxels(out.shape[2:], out.shape[1], starts, ends, active)
    if dest.numel():
        out.view(-1).scatter_(0, dest, values(dest, owner).to(out.dtype))
    return out


def _uniform_boxes(
    x: Tensor,
    starts: Tensor,
    ends: Tensor,
    active: Tensor,
    low: float | Tensor,
    high: float | Tensor,
    gen: torch.Generator | None,
) -> Tensor:
    """Copy of ``x`` with the box voxels set to uniform noise in ``[low, high)`` (per-sample
    bounds allowed): hash noise keyed on the voxel index and one seed drawn from ``gen``."""
    batch = x.shape[0]
    seed = integers(0, 2**31 - 1, (), gen, x.device)
    low_t = torch.as_tensor(low, device=x.device, dtype=torch.float32).expand(batch)
    span_t = torch.as_tensor(high, device=x.device, dtype=torch.float32).expand(batch) - low_t

    def values(dest: Tensor, owner: Tensor) -> Tensor:
        return _hash_uniform(dest, seed).mul_(span_t[owner]).add_(low_t[owner])

    return _scatter_boxes_(x.clone(memory_format=torch.contiguous_format), starts, ends, active, values)


def _stream_seeds(batch: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
    """(B,) int64 seeds of the compiled CPU kernels' per-sample random streams, drawn from ``gen``."""
    return integers(0, 2**53 - 1, (batch,), gen, device)


def _drop_samples(region: Tensor, selected: Tensor) -> Tensor:
    """Clear ``region`` ((B, *spatial) bool) in place for the samples not ``selected``."""
    skip = (~selected).nonzero().squeeze(1)
    return region.index_fill_(0, skip, False) if skip.numel() else region


def _on_samples(x: Tensor, selected: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
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


# --------------------------------------------------------------------------------------------
# Models Genesis (Zhou et al., MedIA 2021)
# --------------------------------------------------------------------------------------------


def random_flip(
    x: Tensor,
    y: Tensor | None = None,
    generator: GeneratorLike = None,
    *,
    prob: float = 0.4,
    max_flips: int = 3,
) -> tuple[Tensor, Tensor]:
    """Models Genesis flip: up to ``max_flips`` times while ``random() < prob``, flip a random
    spatial axis -- applied to the input and the restoration target alike.

    Zhou et al., "Models Genesis", MedIA 2021 (flip rate 0.4, at most 3 flips).

    Args:
        x: (B, C, *spatial) input batch.
        y: (B, C', *spatial) target flipped with ``x`` (default: ``x`` itself).
        generator: generator or seed.
        prob: probability of each further flip.
        max_flips: maximum number of flips per sample.

    Returns:
        ``(x_flipped, y_flipped)``, same shapes as ``x`` and ``y``. Flipping an axis twice is the
        identity, so only the parity of the flips per axis is applied.
    """
    spatial = _spatial_shape(x)
    y = x if y is None else y
    if y.shape[0] != x.shape[0] or tuple(y.shape[2:]) != spatial:
        raise ValueError("y must share the batch size and spatial shape of x")
    gen = resolve_generator(generator, x.device)
    parity = _flip_parity(x.shape[0], len(spatial), prob, max_flips, gen, x.device)
    x_out = _flip_samples(x, parity)
    return x_out, (x_out.clone() if y is x else _flip_samples(y, parity))


def _flip_parity(
    batch: int, dims: int, prob: float, max_flips: int, gen: torch.Generator | None, device: torch.device
) -> Tensor:
    """(B, D) bool: axes flipped an odd number of times by the Models Genesis flip loop."""
    active = _chain_active(max_flips, prob, batch, gen, device, first_always=False)  # (B, F)
    axes = integers(0, dims - 1, (batch, max_flips), gen, device)  # (B, F)
    hits = (axes[..., None] == torch.arange(dims, device=device)) & active[..., None]  # (B, F, D)
    return hits.sum(1) % 2 == 1


def _flip_samples(x: Tensor, parity: Tensor) -> Tensor:
    """Flip each sample of ``x`` along the spatial axes where ``parity`` ((B, D) bool) is set.
    Samples are grouped by flip pattern (at most 2**D groups), one batched flip per group."""
    dims = parity.shape[1]
    code = (parity.long() << torch.arange(dims, device=parity.device)).sum(1)  # (B,) pattern id
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for pattern in code.unique().tolist():
        idx = (code == pattern).nonzero().squeeze(1)
        axes = [2 + d for d in range(dims) if pattern >> d & 1]
        part = x.index_select(0, idx)
        out.index_copy_(0, idx, part.flip(axes) if axes else part)
    return out


def _box_elements(
    spatial: Sequence[int], volume: Tensor, starts: Tensor, sizes: Tensor, dtype: torch.dtype = torch.int64
) -> tuple[Tensor, Tensor]:
    """Enumerate the voxels of K boxes (a ragged batch, no padding).

    Args:
        spatial: spatial shape (S_0, ..., S_{D-1}).
        volume: (K,) index of the volume each box lies in.
        starts, sizes: (K, D) int64 box corners and side lengths (sizes >= 1).
        dtype: integer dtype of ``dest``.

    Returns:
        ``dest`` (M,) flat index ``volume * prod(spatial) + linear voxel index`` of every box
        voxel, boxes one after another, each in row-major order; ``counts`` (K,) voxels per box.

    Expanded one axis at a time: each unit (box, then plane, row, voxel) splits into ``size_d``
    sub-units whose flat indices step by the axis stride, so one ``cumsum`` of the steps -- with
    a jump at the first sub-unit of every unit -- yields them. No division or modulo per voxel.
    """
    dev = starts.device
    n_vox = math.prod(spatial)
    strides = [math.prod(spatial[d + 1 :]) for d in range(len(spatial))]
    counts = sizes.prod(1)
    if counts.numel() == 0:
        return torch.empty(0, dtype=dtype, device=dev), counts
    unit_start = volume.long() * n_vox + (starts * torch.tensor(strides, device=dev)).sum(1)  # (K,)
    owner = torch.arange(counts.numel(), device=dev)  # box of each unit
    for d, stride in enumerate(strides):
        n_sub = sizes[:, d].index_select(0, owner)  # sub-units per unit
        last = d == len(strides) - 1
        step_dtype = dtype if last else torch.int64
        total = int(counts.sum()) if last else int(n_sub.sum())
        steps = torch.full((total,), stride, dtype=step_dtype, device=dev)
        jumps = torch.empty_like(unit_start)
        jumps[0] = unit_start[0]
        jumps[1:] = unit_start[1:] - (unit_start[:-1] + (n_sub[:-1] - 1) * stride)  # from the previous unit's last
        steps.index_copy_(0, torch.cumsum(n_sub, 0) - n_sub, jumps.to(step_dtype))
        unit_start = torch.cumsum(steps, 0, dtype=step_dtype)
        if not last:
            owner = torch.repeat_interleave(owner, n_sub, output_size=total)
    return unit_start, counts


def _gather_voxels(x: Tensor, source: Tensor, out: Tensor | None = None) -> Tensor:
    """``out[b, :, v] = x[b', :, v']`` for ``source[b * N + v] = b' * N + v'`` (all channels move
    together); ``source``: (B * N,) integer index over the flattened batch of N-voxel volumes.
    ``out`` (contiguous, shape of ``x``) receives the result without an extra copy."""
    if x.shape[1] == 1:
        if out is None:
            return x.reshape(-1).index_select(0, source).view(x.shape)
        torch.index_select(x.reshape(-1), 0, source, out=out.view(-1))
        return out
    rows = x.movedim(1, -1).reshape(-1, x.shape[1])  # (B * N, C): one row per voxel
    result = rows.index_select(0, source).view(x.shape[0], *x.shape[2:], x.shape[1]).movedim(-1, 1)
    return result.contiguous() if out is None else out.copy_(result)


# Segment ids below 2**14 leave 17 random bits in an int32 sort key (radix sort, 4 byte passes).
_INT32_SEGMENTS = 1 << 14


def _segment_permutation(counts: Tensor, gen: torch.Generator | None) -> Tensor:
    """(M,) int64: a uniform random permutation inside each consecutive segment of ``counts``.

    Sorting ``segment_id * 2**b + random b-bit key`` keeps segments in place and shuffles within
    them (random-key shuffle). Ties -- kept in input order by the stable sort -- are rare
    (17-bit keys: ~2 tied pairs in a 729-voxel block) and irrelevant for augmentation.
    """
    n_el = int(counts.sum())
    dev = counts.device
    n_seg = counts.numel()
    if n_seg <= _INT32_SEGMENTS:  # int32 keys: half the memory traffic of the radix sort
        seg = torch.arange(n_seg, device=dev, dtype=torch.int32) << 17
        keys = torch.repeat_interleave(seg, counts, output_size=n_el)
        keys |= random_bits(n_el, 17, gen, dev)
    else:
        keys = torch.repeat_interleave(torch.arange(n_seg, device=dev) << 24, counts, output_size=n_el)
        keys |= random_bits(n_el, 24, gen, dev)
    return torch.argsort(keys, stable=True)


def shuffle_boxes(
    x: Tensor, starts: Tensor, sizes: Tensor, generator: GeneratorLike = None, *, out: Tensor | None = None
) -> Tensor:
    """Shuffle the voxels inside given boxes, Models Genesis style (the core of
    :func:`local_pixel_shuffle`).

    Each box reads the *original* voxels, permutes them uniformly at random and writes them back
    in place; where boxes overlap the later box (higher index) wins, as in the reference loop. A
    box that no later box overlaps therefore holds exactly a permutation of its original voxels.
    All channels of a voxel move together.

    Vectorised over all boxes of all samples as one ragged batch: a sort of random keys gives
    every box its own permutation, ``scatter_reduce`` on the element index resolves overlaps to
    the latest box, and one gather builds the output.

    Args:
        x: (B, C, *spatial).
        starts, sizes: (B, K, D) int box corners and sides (boxes inside the volume, sides >= 1).
        generator: generator or seed.
        out: optional contiguous (B, C, *spatial) tensor to write the result into.

    Returns:
        (B, C, *spatial) copy with the boxes shuffled (``out`` if given).
    """
    spatial = _spatial_shape(x)
    batch, n_box, dims = starts.shape
    dev = x.device
    n_vox = batch * math.prod(spatial)
    gen = resolve_generator(generator, dev)
    # Boxes enumerated latest first, so "latest box wins" = smallest element index (amin).
    volume = torch.arange(batch, device=dev).repeat_interleave(n_box).flip(0)
    dest, counts = _box_elements(
        spatial, volume, starts.reshape(-1, dims).flip(0).long(), sizes.reshape(-1, dims).flip(0).long()
    )
    n_el = dest.numel()
    # source[i] for i < M: the voxel element i reads; source[M + v] = v (untouched voxels)
    source = torch.empty(n_el + n_vox, dtype=torch.int64, device=dev)
    torch.index_select(dest, 0, _segment_permutation(counts, gen), out=source[:n_el])
    torch.arange(n_vox, out=source[n_el:])
    pick = torch.arange(n_el, n_el + n_vox, device=dev)  # default: the identity entry
    pick.scatter_reduce_(0, dest, torch.arange(n_el, device=dev), reduce="amin")
    return _gather_voxels(x, source.index_select(0, pick), out)


def local_pixel_shuffle(
    x: Tensor,
    generator: GeneratorLike = None,
    *,
    prob: float = 1.0,
    n_blocks: int = 10_000,
    max_block_frac: float = 0.1,
    apply: Tensor | None = None,
) -> Tensor:
    """Models Genesis local pixel shuffling: voxels permuted within many small random blocks.

    Zhou et al., "Models Genesis", MedIA 2021: 10,000 blocks per sample with sides drawn from
    ``1 .. dim // 10`` per axis (``max_block_frac``), each block's voxels read from the *original*
    image, shuffled, and written to the output; later blocks overwrite earlier ones (see
    :func:`shuffle_boxes`). All channels of a voxel move together.

    On CPU the blocks of as many samples as fit 2**14 blocks (one sample at the default 10,000)
    are shuffled per call of :func:`shuffle_boxes`: this keeps the sort keys in int32, which
    halves the dominant sort cost. On other devices the whole batch is one call.

    Args:
        x: (B, C, *spatial) batch, 2 or 3 spatial dims.
        generator: generator or seed.
        prob: per-sample probability of shuffling (Models Genesis pipeline: 0.5).
        n_blocks: blocks per sample.
        max_block_frac: maximum block side as a fraction of each spatial dim.
        apply: optional (B,) bool overriding the ``prob`` draw.

    Returns:
        (B, C, *spatial) shuffled copy.
    """
    spatial = _spatial_shape(x)
    gen = resolve_generator(generator, x.device)
    batch, dims, dev = x.shape[0], len(spatial), x.device
    selected = _samples_to_corrupt(prob, apply, batch, gen, dev)
    max_side = torch.tensor([max(1, int(s * max_block_frac)) for s in spatial], device=dev)
    sizes = integers(1, max_side, (batch, n_blocks, dims), gen, dev)
    starts = integers(0, torch.tensor(spatial, device=dev) - sizes, (batch, n_blocks, dims), gen, dev)
    if _cpu_kernels.available(x):  # the reference's block loop, compiled: each voxel-write once
        seeds = _stream_seeds(batch, gen, dev)
        return _on_samples(
            x, selected, lambda xs, idx: _cpu_kernels.shuffle_boxes_cpu(xs, starts[idx], sizes[idx], seeds[idx])
        )
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


def bezier_lut(control: Tensor, inverted: Tensor, size: int = 4096, n_curve: int = 16384) -> Tensor:
    """Per-sample intensity lookup table of the Models Genesis cubic Bezier mapping.

    The curve runs through P0 = (0, 0), P1 = (r1, r2), P2 = (r3, r4), P3 = (1, 1). With control
    points in [0, 1]^2 both coordinates are non-decreasing in the curve parameter t, so y(x) is a
    monotone map with y(0) = 0 and y(1) = 1. The inverted variant of Models Genesis pairs x(t) with
    y(1 - t): monotone decreasing, y(0) = 1, y(1) = 0.

    Args:
        control: (B, 2, 2) control points ``[[r1, r2], [r3, r4]]`` (x, y order).
        inverted: (B,) bool, use the inverted variant.
        size: LUT entries on a uniform grid over [0, 1].
        n_curve: samples of t used to invert x(t).

    Returns:
        (B, size) float32 table, ``lut[b, i] = f_b(i / (size - 1))``.
    """
    dev = control.device
    t = torch.linspace(0.0, 1.0, n_curve, device=dev)
    basis = torch.stack([3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])  # (3, T) for P1, P2, P3
    px = torch.cat([control[:, :, 0], torch.ones_like(control[:, :1, 0])], 1).float()  # (B, 3)
    py = torch.cat([control[:, :, 1], torch.ones_like(control[:, :1, 1])], 1).float()
    cx = px @ basis  # (B, T) non-decreasing
    cy = py @ basis
    cy = torch.where(inverted[:, None].to(dev), cy.flip(1), cy)
    grid = torch.linspace(0.0, 1.0, size, device=dev).expand(control.shape[0], size).contiguous()
    hi = torch.searchsorted(cx.contiguous(), grid).clamp(1, n_curve - 1)
    x0, x1 = cx.gather(1, hi - 1), cx.gather(1, hi)
    y0, y1 = cy.gather(1, hi - 1), cy.gather(1, hi)
    w = ((grid - x0) / (x1 - x0).clamp(min=1e-12)).clamp(0.0, 1.0)
    lut = y0 + w * (y1 - y0)
    lut[:, 0] = cy[:, 0]  # exact end points: f(0) = y(t=0), f(1) = y(t=1)
    lut[:, -1] = cy[:, -1]
    return lut


def apply_bezier(x: Tensor, control: Tensor, inverted: Tensor, lut_size: int = 4096) -> Tensor:
    """Map intensities of ``x`` (expected in [0, 1]) through per-sample Bezier curves.

    Deterministic core of :func:`bezier_intensity`; values are clamped to [0, 1] first, as
    ``np.interp`` does beyond the curve's ends in Models Genesis.

    Args:
        x: (B, C, *spatial).
        control: (B, 2, 2) control points, see :func:`bezier_lut`.
        inverted: (B,) bool.
        lut_size: LUT resolution (linear interpolation between entries).

    Returns:
        (B, C, *spatial) mapped copy, dtype of ``x``.
    """
    batch = x.shape[0]
    lut = bezier_lut(control, inverted, lut_size)  # (B, G)
    slope = torch.diff(lut, dim=1, append=lut[:, -1:])  # (B, G); the last entry is only hit at v = 1
    pos = x.reshape(batch, -1).float().clamp(0.0, 1.0).mul_(lut_size - 1)
    idx = pos.to(torch.int32)  # floor, since pos >= 0
    frac = pos.sub_(idx)
    # one flat table for the whole batch: int32 index_select is the fastest gather on CPU
    idx += (torch.arange(batch, device=x.device, dtype=torch.int32) * lut_size)[:, None]
    idx = idx.view(-1)
    out = lut.reshape(-1).index_select(0, idx).view(batch, -1)
    out.addcmul_(slope.reshape(-1).index_select(0, idx).view(batch, -1), frac)
    return out.to(x.dtype).view(x.shape)


def bezier_intensity(
    x: Tensor,
    generator: GeneratorLike = None,
    *,
    prob: float = 1.0,
    invert_prob: float = 0.5,
    apply: Tensor | None = None,
) -> Tensor:
    """Models Genesis non-linear intensity transformation (random cubic Bezier curve).

    Zhou et al., "Models Genesis", MedIA 2021: control points r1..r4 ~ U[0, 1], applied as a
    lookup on intensities in [0, 1]; half the time the mapping is inverted (``invert_prob``).
    Pipeline probability 0.9.

    Args:
        x: (B, C, *spatial) batch with intensities in [0, 1].
        generator: generator or seed.
        prob: per-sample probability of applying the mapping.
        invert_prob: probability of the inverted (decreasing) variant.
        apply: optional (B,) bool overriding the ``prob`` draw.

    Returns:
        (B, C, *spatial) mapped copy (unselected samples unchanged).
    """
    _spatial_shape(x)
    gen = resolve_generator(generator, x.device)
    batch = x.shape[0]
    selected = _samples_to_corrupt(prob, apply, batch, gen, x.device)
    control = uniform((batch, 2, 2), gen, x.device)
    inverted = bernoulli(invert_prob, (batch,), gen, x.device)
    return _on_samples(x, selected, lambda xs, idx: apply_bezier(xs, control[idx], inverted[idx]))


def in_painting(
    x: Tensor,
    generator: GeneratorLike = None,
    *,
    prob: float = 1.0,
    max_blocks: int = 5,
    continue_prob: float = 0.95,
    size_range: tuple[float, float] = (1 / 6, 1 / 3),
    margin: int = 3,
    noise_range: tuple[float, float] = (0.0, 1.0),
    apply: Tensor | None = None,
) -> Tensor:
    """Models Genesis in-painting: up to 5 blocks replaced by uniform noise.

    Zhou et al., "Models Genesis", MedIA 2021: while fewer than ``max_blocks`` blocks and
    ``random() < continue_prob``, a block with sides ``dim // 6 .. dim // 3`` is placed at least
    ``margin`` voxels from the border and filled with U[0, 1) noise (per voxel and channel).

    Args:
        x: (B, C, *spatial).
        generator: generator or seed.
        prob: per-sample probability of in-painting.
        max_blocks: maximum blocks per sample.
        continue_prob: probability of drawing each further block.
        size_range: block side range as fractions of each dim.
        margin: distance of the blocks from the border (dropped where it does not fit).
        noise_range: uniform noise bounds.
        apply: optional (B,) bool overriding the ``prob`` draw.

    Returns:
        (B, C, *spatial) corrupted copy.
    """
    spatial = _spatial_shape(x)
    gen = resolve_generator(generator, x.device)
    batch, dims, dev = x.shape[0], len(spatial), x.device
    selected = _samples_to_corrupt(prob, apply, batch, gen, dev)
    active = _chain_active(max_blocks, continue_prob, batch, gen, dev, first_always=False) & selected[:, None]
    low = torch.tensor([max(1, int(s * size_range[0])) for s in spatial], device=dev)
    high = torch.tensor([max(1, int(s * size_range[1])) for s in spatial], device=dev)
    sizes = integers(low, high, (batch, max_blocks, dims), gen, dev)
    starts = _window_starts(spatial, sizes, margin, gen)
    if _cpu_kernels.available(x):
        return _cpu_kernels.paint_boxes_cpu(
            x, starts, starts + sizes, active, torch.ones(batch, dtype=torch.int8), _stream_seeds(batch, gen, dev),
            torch.tensor(float(noise_range[0])), torch.tensor(float(noise_range[1])),
        )
    return _uniform_boxes(x, starts, starts + sizes, active, noise_range[0], noise_range[1], gen)


def out_painting(
    x: Tensor,
    generator: GeneratorLike = None,
    *,
    prob: float = 1.0,
    max_windows: int = 5,
    continue_prob: float = 0.95,
    size_range: tuple[float, float] = (3 / 7, 4 / 7),
    margin: int = 3,
    noise_range: tuple[float, float] = (0.0, 1.0),
    apply: Tensor | None = None,
) -> Tensor:
    """Models Genesis out-painting: the volume becomes uniform noise except 1-5 restored windows.

    Zhou et al., "Models Genesis", MedIA 2021: one window, plus further windows while
    ``random() < continue_prob`` (at most ``max_windows``), each with sides
    ``dim - randint(3 * dim // 7, 4 * dim // 7)`` (about 3/7-4/7 of the side) placed at least
    ``margin`` voxels from the border, keeps the original voxels; the rest is U[0, 1) noise.

    Args:
        x: (B, C, *spatial).
        generator: generator or seed.
        prob: per-sample probability of out-painting.
        max_windows: maximum restored windows per sample.
        continue_prob: probability of each further window.
        size_range: window side range as fractions of each dim.
        margin: distance of the windows from the border (dropped where it does not fit).
        noise_range: uniform noise bounds.
        apply: optional (B,) bool overriding the ``prob`` draw.

    Returns:
        (B, C, *spatial) corrupted copy.
    """
    spatial = _spatial_shape(x)
    gen = resolve_generator(generator, x.device)
    batch, dims, dev = x.shape[0], len(spatial), x.device
    selected = _samples_to_corrupt(prob, apply, batch, gen, dev)
    active = _chain_active(max_windows, continue_prob, batch, gen, dev, first_always=True)
    s = torch.tensor(spatial, device=dev)
    # side = dim - randint(a*dim, b*dim) with (a, b) = (1 - hi, 1 - lo) of the side fractions
    cut_low = torch.tensor([int(v * (1 - size_range[1])) for v in spatial], device=dev)
    cut_high = torch.tensor([int(v * (1 - size_range[0])) for v in spatial], device=dev)
    sizes = (s - integers(cut_low, cut_high, (batch, max_windows, dims), gen, dev)).clamp(min=1)
    starts = _window_starts(spatial, sizes, margin, gen)
    if _cpu_kernels.available(x):  # noise written once, the windows copied back: no mask, no blend
        return _cpu_kernels.paint_boxes_cpu(
            x, starts, starts + sizes, active, selected.to(torch.int8) * 2, _stream_seeds(batch, gen, dev),
            torch.tensor(float(noise_range[0])), torch.tensor(float(noise_range[1])),
        )
    region = _drop_samples(~_box_mask(spatial, starts, starts + sizes, active & selected[:, None]), selected)
    return _fill_noise(x, region, noise_range[0], noise_range[1], gen)


def models_genesis(
    x: Tensor,
    generator: GeneratorLike = None,
    *,
    flip_prob: float = 0.4,
    local_shuffle_prob: float = 0.5,
    nonlinear_prob: float = 0.9,
    paint_prob: float = 0.9,
    inpaint_prob: float = 0.2,
    n_blocks: int = 10_000,
) -> tuple[Tensor, Tensor]:
    """Models Genesis corruption pipeline in the published order.

    Zhou et al., "Models Genesis", MedIA 2021: flip (input and target alike) -> local pixel
    shuffle (p 0.5) -> non-linear Bezier intensity (p 0.9) -> painting (p 0.9; of which
    in-painting 0.2, out-painting 0.8). The network restores the target from the input (MSE).
    Every per-sample decision is a tensor draw from ``generator``.

    Args:
        x: (B, C, *spatial) batch with intensities in [0, 1] (CT: [-1000, 1000] HU -> [0, 1]).
        generator: generator or seed.
        flip_prob, local_shuffle_prob, nonlinear_prob, paint_prob, inpaint_prob: published rates.
        n_blocks: local-shuffle blocks per sample.

    Returns:
        ``(corrupted, target)``, both (B, C, *spatial); ``target`` is the flipped original.
    """
    _spatial_shape(x)
    gen = resolve_generator(generator, x.device)
    batch = x.shape[0]
    target = _flip_samples(x, _flip_parity(batch, x.dim() - 2, flip_prob, 3, gen, x.device))
    # every step below returns a new tensor, so the target is never aliased by the input
    corrupted = local_pixel_shuffle(target, gen, prob=local_shuffle_prob, n_blocks=n_blocks)
    corrupted = bezier_intensity(corrupted, gen, prob=nonlinear_prob)
    paint = bernoulli(paint_prob, (batch,), gen, x.device)
    inpaint = bernoulli(inpaint_prob, (batch,), gen, x.device)
    corrupted = in_painting(corrupted, gen, apply=paint & inpaint)
    corrupted = out_painting(corrupted, gen, apply=paint & ~inpaint)
    return corrupted, target


# --------------------------------------------------------------------------------------------
# MONAI RandCoarseDropout / RandCoarseShuffle, batched
# --------------------------------------------------------------------------------------------


def _coarse_holes(
    spatial: Sequence[int],
    batch: int,
    holes: int,
    spatial_size: int | Sequence[int],
    max_holes: int | None,
    max_spatial_size: int | Sequence[int] | None,
    gen: torch.Generator | None,
    device: torch.device,
) -> tuple[Tensor, Tensor, Tensor]:
    """Hole boxes as MONAI's ``RandCoarseTransform`` draws them: ``holes .. max_holes`` holes per
    sample, each side in ``spatial_size .. max_spatial_size`` (capped at the image), start uniform.

    Returns starts, sizes (B, K, D) and active (B, K) with K = ``max_holes or holes``.
    """
    if holes < 1:
        raise ValueError("holes must be >= 1")
    dims = len(spatial)
    n_max = holes if max_holes is None else max_holes
    if n_max < holes:
        raise ValueError("max_holes must be >= holes")
    n_holes = integers(holes, n_max, (batch, 1), gen, device)
    active = torch.arange(n_max, device=device) < n_holes  # (B, K)
    low = [min(v, d) for v, d in zip(_per_dim(spatial_size, spatial, "spatial_size"), spatial)]
    high = low if max_spatial_size is None else [
        max(min(v, d), lo) for v, d, lo in zip(_per_dim(max_spatial_size, spatial, "max_spatial_size"), spatial, low)
    ]
    # one draw per hole for its sides and its corner (the box drawing is many small tensor ops)
    u = uniform((batch, n_max, 2 * dims), gen, device, dtype=torch.float64)
    side_span = torch.tensor([h - lo + 1 for h, lo in zip(high, low)], device=device)
    sizes = (u[..., :dims] * side_span).long() + torch.tensor(low, device=device)  # uniform in [low, high]
    starts = (u[..., dims:] * (torch.tensor(spatial, device=device) - sizes + 1)).long()  # in [0, S - size]
    return starts, sizes, active


def coarse_dropout(
    x: Tensor,
    generator: GeneratorLike = None,
    *,
    holes: int,
    spatial_size: int | Sequence[int],
    max_holes: int | None = None,
    max_spatial_size: int | Sequence[int] | None = None,
    dropout_holes: bool = True,
    fill_value: float | tuple[float, float] | None = None,
    prob: float = 1.0,
    apply: Tensor | None = None,
) -> Tensor:
    """Batched MONAI ``RandCoarseDropout``: in-painting (fill the holes) or out-painting (keep the
    holes, fill the rest).

    DeVries & Taylor, "Improved Regularization of CNNs with Cutout", 2017; Pathak et al.,
    "Context Encoders", CVPR 2016; semantics of MONAI's ``RandCoarseDropout``. Unlike MONAI, every
    hole draws its size independently in ``[spatial_size, max_spatial_size]`` (MONAI lets each
    hole's minimum grow to the previous hole's size).

    Args:
        x: (B, C, *spatial).
        generator: generator or seed.
        holes: number of holes (minimum when ``max_holes`` is set).
        spatial_size: hole side (minimum when ``max_spatial_size`` is set); int or per dim,
            non-positive = full dim.
        max_holes: maximum number of holes.
        max_spatial_size: maximum hole side.
        dropout_holes: ``True`` fills the holes, ``False`` keeps the holes and fills the rest.
        fill_value: constant, ``(low, high)`` for uniform noise per voxel, or ``None`` for uniform
            noise in ``[min(x_b), max(x_b))`` of each sample (MONAI's default).
        prob: per-sample probability of applying.
        apply: optional (B,) bool overriding the ``prob`` draw.

    Returns:
        (B, C, *spatial) corrupted copy.
    """
    spatial = _spatial_shape(x)
    gen = resolve_generator(generator, x.device)
    batch, dev = x.shape[0], x.device
    selected = _samples_to_corrupt(prob, apply, batch, gen, dev)
    starts, sizes, active = _coarse_holes(spatial, batch, holes, spatial_size, max_holes, max_spatial_size, gen, dev)
    active = active & selected[:, None]
    noise_fill = fill_value is None or isinstance(fill_value, (tuple, list))
    if noise_fill and _cpu_kernels.available(x):
        # NaN bounds: the kernel fills within each sample's own [min, max) (MONAI's default)
        low_t, high_t = (float("nan"),) * 2 if fill_value is None else map(float, fill_value)
        return _cpu_kernels.paint_boxes_cpu(
            x, starts, starts + sizes, active, selected.to(torch.int8) * (1 if dropout_holes else 2),
            _stream_seeds(batch, gen, dev), torch.tensor(low_t), torch.tensor(high_t),
        )
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
    region = in_holes if dropout_holes else _drop_samples(~in_holes, selected)
    if fill_value is None or isinstance(fill_value, (tuple, list)):
        return _fill_noise(x, region, low, high, gen)
    return x.masked_fill(region[:, None], float(fill_value))


def coarse_shuffle(
    x: Tensor,
    generator: GeneratorLike = None,
    *,
    holes: int,
    spatial_size: int | Sequence[int],
    max_holes: int | None = None,
    max_spatial_size: int | Sequence[int] | None = None,
    prob: float = 1.0,
    apply: Tensor | None = None,
) -> Tensor:
    """Batched MONAI ``RandCoarseShuffle``: voxels shuffled within random boxes, each channel
    with its own permutation.

    Kang et al., "PatchShuffle Regularization", arXiv:1707.07103; semantics of MONAI's
    ``RandCoarseShuffle``: holes are shuffled one after another on the current image, so the
    output of each channel is a permutation of its input even where holes overlap. The loop runs
    over hole indices (at most ``max_holes``), each step shuffling that hole in every sample and
    channel at once.

    Args:
        x: (B, C, *spatial).
        generator: generator or seed.
        holes, spatial_size, max_holes, max_spatial_size: as in :func:`coarse_dropout`.
        prob: per-sample probability of applying (MONAI tutorial: 0.8).
        apply: optional (B,) bool overriding the ``prob`` draw.

    Returns:
        (B, C, *spatial) shuffled copy.
    """
    spatial = _spatial_shape(x)
    gen = resolve_generator(generator, x.device)
    batch, dev = x.shape[0], x.device
    selected = _samples_to_corrupt(prob, apply, batch, gen, dev)
    starts, sizes, active = _coarse_holes(spatial, batch, holes, spatial_size, max_holes, max_spatial_size, gen, dev)
    out = x.clone(memory_format=torch.contiguous_format)
    _coarse_shuffle_(out, starts, sizes, active & selected[:, None], gen)
    return out


def _coarse_shuffle_(out: Tensor, starts: Tensor, sizes: Tensor, active: Tensor, gen: torch.Generator | None) -> None:
    """MONAI ``RandCoarseShuffle`` of the active holes of contiguous ``out``, in place: the
    compiled loop on CPU, the layered tensor form elsewhere."""
    if _cpu_kernels.available(out):
        _cpu_kernels.channel_shuffle_boxes_cpu_(out, starts, sizes, active, _stream_seeds(out.shape[0], gen, out.device))
    else:
        _shuffle_holes_(out, starts, sizes, active, gen)


def _shuffle_holes_(out: Tensor, starts: Tensor, sizes: Tensor, active: Tensor, gen: torch.Generator | None) -> None:
    """Shuffle boxes of ``out`` in place, hole after hole, every channel with its own permutation
    (MONAI ``RandCoarseShuffle`` semantics). ``starts``/``sizes``: (B, K, D); ``active``: (B, K).

    Holes that do not overlap commute, so holes are grouped into layers -- a hole goes one layer
    above the highest earlier hole of its sample that it overlaps -- and each layer is shuffled
    at once; the order of overlapping holes is kept. Small holes rarely overlap: one or two
    layers instead of one step per hole.
    """
    batch, ch = out.shape[:2]
    spatial = out.shape[2:]
    n_hole = starts.shape[1]
    ends = starts + sizes
    # (B, K, K): hole j overlaps hole k (boxes intersect on every axis)
    overlap = ((starts[:, :, None] < ends[:, None, :]) & (starts[:, None, :] < ends[:, :, None])).all(-1)
    earlier = torch.ones(n_hole, n_hole, dtype=torch.bool, device=out.device).tril(-1)  # [k, j]: j < k
    overlap &= earlier & active[:, None, :] & active[:, :, None]
    layer = torch.zeros(batch, n_hole, dtype=torch.int64, device=out.device)
    for k in range(1, n_hole):  # tiny (B, K) work; the sequential dependency is inherent
        layer[:, k] = torch.where(overlap[:, k], layer + 1, 0).amax(1)
    flat = out.view(-1)
    for level in range(int(layer.max()) + 1 if n_hole else 0):
        pick = (active & (layer == level)).nonzero()  # (P, 2): sample, hole
        if pick.numel() == 0:
            continue
        volume = (pick[:, 0, None] * ch + torch.arange(ch, device=out.device)).reshape(-1)  # one per channel
        dest, counts = _box_elements(
            spatial,
            volume,
            starts[pick[:, 0], pick[:, 1]].repeat_interleave(ch, 0),
            sizes[pick[:, 0], pick[:, 1]].repeat_interleave(ch, 0),
        )
        source = dest.index_select(0, _segment_permutation(counts, gen))
        flat.scatter_(0, dest, flat.index_select(0, source))  # gathered before written


def monai_ssl_view(x: Tensor, generator: GeneratorLike = None) -> Tensor:
    """One corrupted view of MONAI's ViTAutoEnc self-supervised tutorial, batched.

    Per sample: OneOf(in-painting dropout with 6 holes of side 5-32, out-painting dropout with 6
    holes of side 20-64) -- fill uniform in the sample's [min, max) -- then coarse shuffle (p 0.8,
    10 holes of side 8). :func:`monai_ssl_views` makes the tutorial's two views in one pass.

    Args:
        x: (B, C, *spatial).
        generator: generator or seed.

    Returns:
        (B, C, *spatial) corrupted view.
    """
    return monai_ssl_views(x, generator, n_views=1)[0]


def monai_ssl_views(x: Tensor, generator: GeneratorLike = None, n_views: int = 2) -> tuple[Tensor, ...]:
    """``n_views`` independent :func:`monai_ssl_view` corruptions of the batch (the tutorial's
    ``image`` and ``image_2`` for its contrastive term), drawn and filled in one pass: each
    sample's [min, max) is found once and shared by its views, and on CPU one compiled call
    writes every view straight from ``x``.

    Args:
        x: (B, C, *spatial).
        generator: generator or seed.
        n_views: number of views.

    Returns:
        ``n_views`` (B, C, *spatial) corrupted views.
    """
    spatial = _spatial_shape(x)
    if n_views < 1:
        raise ValueError(f"n_views must be at least 1, got {n_views}")
    gen = resolve_generator(generator, x.device)
    batch, dev = x.shape[0], x.device
    rows = batch * n_views  # row r: view r // B of sample r % B
    use_in = bernoulli(0.5, (rows,), gen, dev)
    # The two dropout branches touch disjoint samples: build one region and fill once.
    s_in, z_in, a_in = _coarse_holes(spatial, rows, 6, 5, None, 32, gen, dev)
    s_out, z_out, a_out = _coarse_holes(spatial, rows, 6, 20, None, 64, gen, dev)
    if _cpu_kernels.available(x):  # both branches in one compiled pass: mode 1 in-paints, 2 out-paints
        source = torch.arange(batch).repeat(n_views)
        low, high = _cpu_kernels.minmax_cpu(x)
        out = _cpu_kernels.paint_boxes_cpu(
            x, torch.cat([s_in, s_out], 1), torch.cat([s_in + z_in, s_out + z_out], 1),
            torch.cat([a_in & use_in[:, None], a_out & ~use_in[:, None]], 1),
            torch.where(use_in, 1, 2).to(torch.int8), _stream_seeds(rows, gen, dev), low[source], high[source],
            source=source,
        )
    else:
        xs = x.repeat(n_views, *([1] * (x.dim() - 1))) if n_views > 1 else x
        low, high = xs.reshape(rows, -1).amin(1).float(), xs.reshape(rows, -1).amax(1).float()
        region = _drop_samples(~_box_mask(spatial, s_out, s_out + z_out, a_out & ~use_in[:, None]), ~use_in)
        out = _fill_noise(xs, region, low, high, gen)  # out-painted samples; the others are copied
        seed = integers(0, 2**31 - 1, (), gen, dev)
        _scatter_boxes_(  # in-painted samples: only their holes are touched
            out,
            s_in,
            s_in + z_in,
            a_in & use_in[:, None],
            lambda dest, owner: _hash_uniform(dest, seed).mul_((high - low)[owner]).add_(low[owner]),
        )
    shuffled = bernoulli(0.8, (rows,), gen, dev)
    s_sh, z_sh, a_sh = _coarse_holes(spatial, rows, 10, 8, None, None, gen, dev)
    _coarse_shuffle_(out, s_sh, z_sh, a_sh & shuffled[:, None], gen)
    return tuple(out.split(batch))


# --------------------------------------------------------------------------------------------
# Swin UNETR pretraining (Tang et al., CVPR 2022)
# --------------------------------------------------------------------------------------------


def _swin_blocks(
    spatial: Sequence[int],
    batch: int,
    max_drop: float,
    max_block: float,
    tolerance: float,
    gen: torch.Generator | None,
    device: torch.device,
    chunk: int = 128,
) -> tuple[Tensor, Tensor, Tensor]:
    """Swin UNETR cut-out blocks: starts, ends (B, K, D) and active (B, K).

    Reference loop: draw a target ``U(0, max_drop) * n_voxels``; add blocks (start in
    ``[0, S - tol]``, side ``tol .. max_block * S`` cut at the border) while the summed block
    volume is below the target. Vectorised: blocks come in chunks of ``chunk`` per sample, and a
    block is kept when the volume summed *before* it is below the target; a new chunk is drawn
    only while some sample is still short (usually one or two rounds).
    """
    dims = len(spatial)
    tol = [max(1, int(tolerance * v)) for v in spatial]
    big = [max(int(max_block * v), t) for v, t in zip(spatial, tol)]
    s = torch.tensor(spatial, device=device)
    start_span = torch.tensor([v - t + 1 for v, t in zip(spatial, tol)], device=device)  # start in [0, S - tol]
    side_span = torch.tensor([b - t + 1 for b, t in zip(big, tol)], device=device)  # side in [tol, big]
    tol_t = torch.tensor(tol, device=device)
    target = uniform((batch,), gen, device, 0.0, max_drop) * math.prod(spatial)
    done = torch.zeros(batch, device=device)
    all_starts, all_ends, all_active = [], [], []
    while True:
        u = uniform((batch, chunk, 2 * dims), gen, device, dtype=torch.float64)  # one draw per block
        starts = (u[..., :dims] * start_span).long()
        ends = torch.minimum(starts + tol_t + (u[..., dims:] * side_span).long(), s)
        vol = (ends - starts).prod(2).float()  # (B, chunk)
        before = done[:, None] + torch.cumsum(vol, 1) - vol
        active = before < target[:, None]
        done = done + (vol * active).sum(1)
        all_starts.append(starts)
        all_ends.append(ends)
        all_active.append(active)
        if not bool((done < target).any()):
            break
    return torch.cat(all_starts, 1), torch.cat(all_ends, 1), torch.cat(all_active, 1)


def swin_unetr_cutout(
    x: Tensor,
    generator: GeneratorLike = None,
    *,
    max_drop: float = 0.3,
    max_block: float = 0.25,
    tolerance: float = 0.05,
    paste: bool = True,
) -> Tensor:
    """Swin UNETR cut-out: up to 30 % of the voxels in blocks up to 1/4 of a side, filled with
    noise, then (for samples whose random partner is another sample) a second set of blocks
    pasted from that partner.

    Tang et al., "Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image
    Analysis", CVPR 2022. The reference fills with standard normal noise min-max scaled to
    [0, 1] per block; here the noise is bell-shaped (Irwin-Hall of four uniform bytes, close to a
    normal), min-max scaled per block by the compiled CPU kernel (each block its own noise stream)
    and over the call by the tensor form (keyed on the voxel index, see the module notes). The
    paste follows the reference's sequential loop: sample ``b`` pastes from partner ``p`` as
    finished when ``p < b`` and as the uncorrupted input when ``p > b``.

    Args:
        x: (B, C, *spatial).
        generator: generator or seed.
        max_drop: maximum fraction of voxels per round (target ~ U(0, max_drop)).
        max_block: maximum block side as a fraction of each dim.
        tolerance: minimum block side as a fraction of each dim.
        paste: run the paste-from-another-sample round.

    Returns:
        (B, C, *spatial) corrupted copy.
    """
    _spatial_shape(x)
    gen = resolve_generator(generator, x.device)
    view, _ = _swin_cutout(x, gen, max_drop, max_block, tolerance, paste)
    return view


def _swin_cutout(
    x: Tensor, gen: torch.Generator | None, max_drop: float, max_block: float, tolerance: float, paste: bool,
    *, source: Tensor | None = None, group: int | None = None, rotation: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`swin_unetr_cutout` of ``x[source]`` (e.g. two stacked views of one batch), pasting
    within consecutive groups of ``group`` samples (default: all); ``rotation``: (N,) classes to
    rotate by in the last plane first (compiled CPU path only). Returns ``(views, originals)``:
    the originals are what the views were cut from (the rotated samples with ``rotation``)."""
    spatial = _spatial_shape(x)
    dev = x.device
    n = x.shape[0] if source is None else source.numel()
    group = group or n
    compiled = _cpu_kernels.available(x)
    if rotation is not None and not compiled:
        raise ValueError("rotation inside the cut-out needs the compiled CPU kernels; rotate first")
    starts, ends, active = _swin_blocks(spatial, n, max_drop, max_block, tolerance, gen, dev)
    seeds = _stream_seeds(n, gen, dev) if compiled else integers(0, 2**31 - 1, (), gen, dev)
    if paste:
        first = torch.arange(n, device=dev) // group * group  # the first sample of each one's group
        partner = integers(0, group - 1, (n,), gen, dev) + first
        p_starts, p_ends, p_active = _swin_blocks(spatial, n, max_drop, max_block, tolerance, gen, dev)
    else:
        partner = torch.arange(n, device=dev)
        p_starts, p_ends, p_active = starts[:, :0], ends[:, :0], active[:, :0]
    if compiled:  # one plane-parallel pass: rotation, noise boxes and paste while the planes are in cache
        return _cpu_kernels.swin_cutout_cpu(x, starts, ends, active, seeds, p_starts, p_ends, p_active, partner,
                                            source=source, rotation=rotation)
    original = x if source is None else x.index_select(0, source.to(dev))
    out = original.clone(memory_format=torch.contiguous_format)

    def scaled_noise(dest: Tensor, owner: Tensor) -> Tensor:
        # bell-shaped noise min-max scaled to [0, 1] (reference: normal noise, min-max per block)
        noise = _hash_bell(dest, seeds)
        low, high = noise.aminmax()
        return noise.sub_(low).div_((high - low).clamp(min=1e-12))

    _scatter_boxes_(out, starts, ends, active, scaled_noise)
    if paste:
        paste_from_partners_(out, original, p_starts, p_ends, p_active, partner)
    return out, original


def paste_from_partners_(
    out: Tensor, original: Tensor, starts: Tensor, ends: Tensor, active: Tensor, partner: Tensor
) -> Tensor:
    """Swin UNETR's paste round in place, in the reference loop's sample order (tensor form; the
    compiled CPU path pastes inside :func:`._cpu_kernels.swin_cutout_cpu`).

    Sample ``b`` receives its active boxes from ``p = partner[b]`` (none when ``p == b``) as the
    reference's sequential loop (``aug_rand``) sees it: ``out[p]``, already finished, when
    ``p < b``; ``original[p]``, not yet corrupted, when ``p > b``.

    Args:
        out: (B, C, *spatial) contiguous, modified in place.
        original: the batch before the corruption, shaped like ``out``.
        starts, ends: (B, K, D) half-open boxes; ``active``: (B, K) bool; ``partner``: (B,) int.

    Returns:
        ``out``.
    """
    for b, p in enumerate(partner.tolist()):  # one sample at a time: later samples read finished ones
        if p != b:
            source = (out if p < b else original)[p].reshape(-1)
            _scatter_boxes_(out[b : b + 1], starts[b : b + 1], ends[b : b + 1], active[b : b + 1],
                            lambda dest, owner: source.index_select(0, dest))
    return out


class SwinUNETRViews(NamedTuple):
    """Two Swin UNETR views. ``view*``: cut-out inputs (B, C, *spatial); ``target*``: rotated
    originals to reconstruct (L1); ``rotation*``: (B,) int64 rotation classes 0-3 (CE)."""

    view1: Tensor
    view2: Tensor
    target1: Tensor
    target2: Tensor
    rotation1: Tensor
    rotation2: Tensor


def swin_unetr_augment(
    x: Tensor,
    generator: GeneratorLike = None,
    *,
    plane: tuple[int, int] = (-2, -1),
    max_drop: float = 0.3,
    max_block: float = 0.25,
) -> SwinUNETRViews:
    """Swin UNETR pretraining augmentation: two views, each a random 4-way rotation followed by
    cut-out.

    Tang et al., CVPR 2022: losses = rotation CE + contrastive (between the two views) + L1
    reconstruction of the rotated, un-cut volumes; 96^3 ROI.

    Args:
        x: (B, C, *spatial); the rotation plane's two dims must be equal.
        generator: generator or seed.
        plane: the two tensor dims to rotate in (Swin UNETR: the last two).
        max_drop, max_block: cut-out settings, see :func:`swin_unetr_cutout`.

    Returns:
        :class:`SwinUNETRViews`.
    """
    dims = rotation_plane(x, plane)
    gen = resolve_generator(generator, x.device)
    batch = x.shape[0]
    # both views as one stacked batch, each view pasting within itself
    if _cpu_kernels.available(x) and sorted(dims) == [x.dim() - 2, x.dim() - 1]:  # the compiled kernel's plane
        rotation = rotation_labels(batch, 2, gen, x.device)  # drawn as random_rotations90 draws them
        view, target = _swin_cutout(x, gen, max_drop, max_block, 0.05, True, source=torch.arange(batch).repeat(2),
                                    group=batch, rotation=last_plane_classes(rotation, dims, x.dim()))
    else:
        (target,), rotation = random_rotations90(x, plane, gen, repeats=2, copies=1)
        view, _ = _swin_cutout(target, gen, max_drop, max_block, 0.05, True, group=batch)
    first, second = slice(0, batch), slice(batch, 2 * batch)
    return SwinUNETRViews(view[first], view[second], target[first], target[second], rotation[first], rotation[second])

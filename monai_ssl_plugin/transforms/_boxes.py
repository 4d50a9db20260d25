"""Box primitives of the tensor implementations: box geometry and voxel enumeration, fills with
counter-based hash noise, and the shuffles of box contents.

Box-shaped regions are filled through their voxel indices (cost ~ box volume) with counter-based
hash noise, so overlapping boxes write identical values and results stay deterministic; large
regions (out-painting) use a dense mask from a batched matrix product and blend drawn noise. No
Python loop runs over voxels or boxes; the only loops are over layers of overlapping holes
(usually 1-2) and, in :func:`paste_from_partners_`, over samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._common import spatial_shape
from ._random import GeneratorLike, integers, random_bits, resolve_generator, uniform


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
    spatial = spatial_shape(x)
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

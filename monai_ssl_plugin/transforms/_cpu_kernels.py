"""Compiled CPU kernels (numba) for the box loops of the batched corruptions.

On CPU, the published per-block loops (Models Genesis: 10,000 blocks per sample) are cheapest as
what they are -- a loop over blocks -- once it runs as machine code: a block's voxels are read
from the original, permuted by Fisher-Yates and written, touching each voxel-write once. The
vectorised tensor form (ragged enumeration, a sort of random keys, ``scatter_reduce``) needs
about ten memory passes over the 1.3 M voxel-writes of a 96^3 sample, and its sort alone costs
more than the 10x target allows on this 2-core CPU (see docs/performance.md). The tensor form
stays the path on other devices (CUDA) and where numba is missing.

Random numbers: permutations use one SplitMix64 stream per sample (Steele et al., OOPSLA 2014);
noise fills use a counter-based 32-bit hash of (voxel index, sample seed), which vectorises.
Both are seeded from the caller's ``torch.Generator``, so results are reproducible per seed and
independent of the thread count. Bounded draws use Lemire's multiply-shift on 32 random bits
(bias < 2**-22 for blocks of <= 1,000 voxels).

Kernels work on NumPy views of contiguous CPU tensors (no copies) and release the GIL.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

try:  # optional: the tensor path covers every device without it
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - depends on the environment
    numba = None
    HAVE_NUMBA = False

__all__ = [
    "HAVE_NUMBA", "MODES", "available", "channel_shuffle_boxes_cpu_", "minmax_cpu", "paint_boxes_cpu",
    "paint_boxes_cpu_", "paste_boxes_cpu_", "rot90_last_plane_cpu", "shuffle_boxes_cpu",
]


def available(x: Tensor) -> bool:
    """True when the compiled kernels can serve ``x`` (CPU, numba installed, a NumPy dtype)."""
    return HAVE_NUMBA and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


if HAVE_NUMBA:

    @numba.njit(nogil=True, cache=True, inline="always")
    def _splitmix(state: np.uint64) -> tuple[np.uint64, np.uint64]:
        state = state + np.uint64(0x9E3779B97F4A7C15)
        z = state
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return state, z ^ (z >> np.uint64(31))

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _shuffle_kernel(x, out, starts, sizes, seeds):  # pragma: no cover - compiled
        # x, out: (B, C, N) flat views of (B, C, Z, Y, X); starts/sizes: (B, K, 3); seeds: (B,) uint64
        n_batch, n_ch = x.shape[0], x.shape[1]
        dims = (np.int64(out.shape[2]), np.int64(out.shape[3]), np.int64(out.shape[4]))
        n_box = starts.shape[1]
        stride_z = dims[1] * dims[2]
        stride_y = dims[2]
        for b in numba.prange(n_batch):
            xb = x[b].reshape(n_ch, -1)
            ob = out[b].reshape(n_ch, -1)
            max_vol = 1
            for k in range(n_box):
                max_vol = max(max_vol, sizes[b, k, 0] * sizes[b, k, 1] * sizes[b, k, 2])
            offsets = np.empty(max_vol, np.int64)
            state = seeds[b]
            for k in range(n_box):
                sz, sy, sx = sizes[b, k, 0], sizes[b, k, 1], sizes[b, k, 2]
                base = starts[b, k, 0] * stride_z + starts[b, k, 1] * stride_y + starts[b, k, 2]
                n = 0
                for i in range(sz):  # block voxels in row-major order, relative to its corner
                    for j in range(sy):
                        row = i * stride_z + j * stride_y
                        for m in range(sx):
                            offsets[n] = row + m
                            n += 1
                # Fisher-Yates: a uniform permutation of the block's offsets
                r = np.uint64(0)
                for i in range(n - 1, 0, -1):
                    if (n - 1 - i) % 2 == 0:  # one 64-bit draw serves two swaps (high, low 32 bits)
                        state, r = _splitmix(state)
                        word = r >> np.uint64(32)
                    else:
                        word = r & np.uint64(0xFFFFFFFF)
                    j = np.int64((word * np.uint64(i + 1)) >> np.uint64(32))
                    tmp = offsets[i]
                    offsets[i] = offsets[j]
                    offsets[j] = tmp
                v = 0
                for i in range(sz):  # destination v (row-major) reads the original at offsets[v]
                    for j in range(sy):
                        dest = base + i * stride_z + j * stride_y
                        for m in range(sx):
                            src = base + offsets[v]
                            for c in range(n_ch):
                                ob[c, dest + m] = xb[c, src]
                            v += 1


    @numba.njit(nogil=True, cache=True, inline="always")
    def _hash32(index, seed):
        # counter-based noise: golden-ratio multiply, then Wellons' "lowbias32" mixer (the same
        # design as the tensor path's hash). Stateless, so the loops vectorise and a voxel's value
        # depends only on (index, seed): overlapping boxes write identical values. Signed 64-bit
        # arithmetic masked to 32 bits gives the unsigned 32-bit values and lets LLVM vectorise the
        # multiplies with AVX2 (index < 2**31, seed < 2**32: no overflow).
        m32 = 0xFFFFFFFF
        h = (np.int64(index) * np.int64(0x9E3779B1) + np.int64(seed)) & m32
        h ^= h >> 16
        h = (h * 0x7FEB352D) & m32
        h ^= h >> 15
        h = (h * 0x846CA68B) & m32
        return h ^ (h >> 16)

    @numba.njit(nogil=True, cache=True, inline="always")
    def _hash_row(tmp, n, key, seed):  # pragma: no cover - compiled
        # tmp[m] = _hash32(key + m, seed) for m < n, one step of the hash per loop over a uint32
        # buffer: the stores truncate, so LLVM narrows every multiply to AVX2's 8-lane vpmulld
        # (3x the fused 64-bit loop on 96-voxel rows, same values; a row fits in L1)
        k = np.uint32(key)
        s = np.uint32(seed)
        for m in range(n):
            tmp[m] = (np.uint32(m) + k) * np.uint32(0x9E3779B1) + s
        for m in range(n):
            h = tmp[m]
            h ^= h >> np.uint32(16)
            tmp[m] = h * np.uint32(0x7FEB352D)
        for m in range(n):
            h = tmp[m]
            h ^= h >> np.uint32(15)
            tmp[m] = h * np.uint32(0x846CA68B)
        for m in range(n):
            h = tmp[m]
            tmp[m] = h ^ (h >> np.uint32(16))

    @numba.njit(nogil=True, cache=True, inline="always")
    def _noise_row(dst, start, n, key, seed, low32, step32, tmp):  # pragma: no cover - compiled
        # dst[start + m] = low + span * U(key + m) for m < n, in float32 (24-bit uniforms)
        _hash_row(tmp, n, key, seed)
        for m in range(n):
            dst[start + m] = low32 + step32 * np.float32(np.int32(tmp[m] >> np.uint32(8)))

    @numba.njit(nogil=True, cache=True, inline="always")
    def _bell(index, seed):
        h = _hash32(index, seed)  # Irwin-Hall of the four bytes, 0..1020: bell-shaped, close to a normal
        return (h & 255) + ((h >> 8) & 255) + ((h >> 16) & 255) + (h >> 24)

    @numba.njit(nogil=True, cache=True, fastmath=True)
    def _minmax(flat):  # pragma: no cover - compiled
        # (min, max) of a 1-D array; accumulators in the array's dtype and fastmath let LLVM
        # vectorise the reduction (NaN inputs give undefined extremes; the data guard refuses them)
        lo, hi = flat[0], flat[0]
        for i in range(flat.size):
            lo = min(lo, flat[i])
            hi = max(hi, flat[i])
        return np.float64(lo), np.float64(hi)

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _minmax_kernel(x, low, high):  # pragma: no cover - compiled
        for b in numba.prange(x.shape[0]):
            low[b], high[b] = _minmax(x[b].reshape(-1))

    @numba.njit(nogil=True, cache=True)
    def _fill_box(ob, xb, base, sz, sy, sx, stride_z, stride_y, mode, low, span, seed, tmp):  # pragma: no cover
        """One box of one sample: mode 1 uniform noise, 3 bell noise min-max scaled over the box
        (Swin UNETR), 4 copy from ``xb`` (the partner). ``tmp``: uint32 scratch of >= ``sx``."""
        n_ch = ob.shape[0]
        n_vox = ob.shape[1]
        if mode == 4:
            for c in range(n_ch):
                for i in range(sz):
                    for j in range(sy):
                        row = base + i * stride_z + j * stride_y
                        for m in range(sx):
                            ob[c, row + m] = xb[c, row + m]
            return
        low32, step32 = np.float32(low), np.float32(span * 5.9604644775390625e-08)
        lo_seen, hi_seen = 1 << 30, -1  # integer extremes of the bell noise: the loop vectorises
        for c in range(n_ch):
            for i in range(sz):
                for j in range(sy):
                    row = base + i * stride_z + j * stride_y
                    if mode == 1 and sx >= 32:  # long rows: the vectorised row hash pays off
                        _noise_row(ob[c], row, sx, c * n_vox + row, seed, low32, step32, tmp)
                    elif mode == 1:  # short rows: one fused scalar loop has less overhead
                        for m in range(sx):
                            ob[c, row + m] = low32 + step32 * np.float32(_hash32(c * n_vox + row + m, seed) >> 8)
                    else:
                        for m in range(sx):
                            v = _bell(c * n_vox + row + m, seed)
                            lo_seen = min(lo_seen, v)
                            hi_seen = max(hi_seen, v)
                            ob[c, row + m] = v
        if mode == 3:  # min-max scale the box's noise to [0, 1], as the reference does per block
            offset = np.float32(lo_seen)
            scale = np.float32(1.0 / max(hi_seen - lo_seen, 1))
            for c in range(n_ch):
                for i in range(sz):
                    for j in range(sy):
                        row = base + i * stride_z + j * stride_y
                        for m in range(sx):
                            ob[c, row + m] = (ob[c, row + m] - offset) * scale

    @numba.njit(nogil=True, cache=True)
    def _out_paint(ob, xb, starts, ends, active, b, lo, span, seed, tmp):  # pragma: no cover - compiled
        """Out-painting of one sample, row by row: originals inside the active boxes, uniform noise
        in ``[lo, lo + span)`` elsewhere, each run of a row written once (runs from the boxes' x
        intervals, sorted and merged: per-row work scales with the boxes, not the voxels)."""
        n_ch, n_z, n_y, n_x = ob.shape[0], ob.shape[1], ob.shape[2], ob.shape[3]
        n_box = starts.shape[1]
        low32, step32 = np.float32(lo), np.float32(span * 5.9604644775390625e-08)
        obf = ob.reshape(n_ch, -1)
        xbf = xb.reshape(n_ch, -1)
        n_vox = obf.shape[1]
        runs = np.empty((n_box, 2), np.int64)  # [start, end) of the boxes crossing the row
        for z in range(n_z):
            for y in range(n_y):
                n_run = 0
                for k in range(n_box):
                    if (active[b, k] and starts[b, k, 0] <= z < ends[b, k, 0]
                            and starts[b, k, 1] <= y < ends[b, k, 1]):
                        first, last = max(starts[b, k, 2], 0), min(ends[b, k, 2], n_x)
                        if first < last:
                            i = n_run  # insertion sort by start (a handful of boxes)
                            while i > 0 and runs[i - 1, 0] > first:
                                runs[i, 0], runs[i, 1] = runs[i - 1, 0], runs[i - 1, 1]
                                i -= 1
                            runs[i, 0], runs[i, 1] = first, last
                            n_run += 1
                row = (z * n_y + y) * n_x
                for c in range(n_ch):
                    if n_run == 0:  # the common row: all noise
                        _noise_row(obf[c], row, n_x, c * n_vox + row, seed, low32, step32, tmp)
                        continue
                    _hash_row(tmp, n_x, c * n_vox + row, seed)  # the whole row's hashes, one vector pass
                    done = 0  # voxels [0, done) of the row are written
                    i = 0
                    while i < n_run:
                        first, last = runs[i, 0], runs[i, 1]
                        i += 1
                        while i < n_run and runs[i, 0] <= last:  # merge overlapping boxes
                            last = max(last, runs[i, 1])
                            i += 1
                        for m in range(done, first):
                            obf[c, row + m] = low32 + step32 * np.float32(np.int32(tmp[m] >> np.uint32(8)))
                        for m in range(max(first, done), last):
                            obf[c, row + m] = xbf[c, row + m]
                        done = max(done, last)
                    for m in range(done, n_x):
                        obf[c, row + m] = low32 + step32 * np.float32(np.int32(tmp[m] >> np.uint32(8)))

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _paint_kernel(x, out, source, copy, starts, ends, active, mode, low, high, partner, seeds):  # pragma: no cover
        # per output sample b (x: (B_in, C, Z, Y, X); out: (B, C, Z, Y, X); starts/ends: (B, K, 3);
        # active: (B, K)), built from input sample source[b]: mode 0 copy; 1 uniform noise in the
        # boxes; 2 uniform noise outside the boxes (out-painting); 3 Swin UNETR bell noise in the
        # boxes; 4 boxes pasted from input sample partner[b]. copy False: out[b] already holds the
        # sample (in place; modes 1 and 3). low[b] NaN: the noise range is the sample's own
        # [min, max) (MONAI's default fill).
        n_batch, n_ch = out.shape[0], out.shape[1]
        stride_z = np.int64(x.shape[3]) * np.int64(x.shape[4])
        stride_y = np.int64(x.shape[4])
        n_box = starts.shape[1]
        for b in numba.prange(n_batch):
            xb = x[source[b]].reshape(n_ch, -1)
            ob = out[b].reshape(n_ch, -1)
            md = mode[b]
            seed = seeds[b] & np.uint64(0xFFFFFFFF)
            lo = np.float64(low[b])
            hi = np.float64(high[b])
            if np.isnan(lo) and (md == 1 or md == 2):
                lo, hi = _minmax(xb.reshape(-1))
            span = hi - lo
            tmp = np.empty(x.shape[4], np.uint32)  # a row of hashes
            if md == 2:
                _out_paint(out[b], x[source[b]], starts, ends, active, b, lo, span, seed, tmp)
                continue
            if copy:
                flat_o, flat_x = ob.reshape(-1), xb.reshape(-1)
                for v in range(flat_o.size):  # a flat loop compiles to a vector copy; ob[:] = xb did not
                    flat_o[v] = flat_x[v]
            if md == 0:
                continue
            src = x[partner[b]].reshape(n_ch, -1) if md == 4 else xb
            for k in range(n_box):
                if not active[b, k]:
                    continue
                sz = ends[b, k, 0] - starts[b, k, 0]
                sy = ends[b, k, 1] - starts[b, k, 1]
                sx = ends[b, k, 2] - starts[b, k, 2]
                if sz <= 0 or sy <= 0 or sx <= 0:
                    continue
                base = starts[b, k, 0] * stride_z + starts[b, k, 1] * stride_y + starts[b, k, 2]
                _fill_box(ob, src, base, sz, sy, sx, stride_z, stride_y, md, lo, span, seed, tmp)

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _paste_kernel(out, original, starts, ends, active, partner):  # pragma: no cover - compiled
        # Swin UNETR's sequential paste, in place: sample b, in order, receives its active boxes from
        # partner p = partner[b] as the reference loop sees it -- out[p] (finished) when p < b, the
        # original when p > b (not yet corrupted). Samples run in parallel by level: level 0 reads
        # no finished sample, level l reads one of level l - 1.
        n_batch, n_ch = out.shape[0], out.shape[1]
        stride_z = np.int64(out.shape[3]) * np.int64(out.shape[4])
        stride_y = np.int64(out.shape[4])
        level = np.zeros(n_batch, np.int64)
        no_tmp = np.empty(0, np.uint32)  # pasting hashes nothing
        for b in range(n_batch):
            if partner[b] < b:
                level[b] = level[partner[b]] + 1
        for lv in range(level.max() + 1 if n_batch else 0):
            for b in numba.prange(n_batch):
                p = partner[b]
                if level[b] != lv or p == b:
                    continue
                ob = out[b].reshape(n_ch, -1)
                src = out[p].reshape(n_ch, -1) if p < b else original[p].reshape(n_ch, -1)
                for k in range(starts.shape[1]):
                    sz = ends[b, k, 0] - starts[b, k, 0]
                    sy = ends[b, k, 1] - starts[b, k, 1]
                    sx = ends[b, k, 2] - starts[b, k, 2]
                    if not active[b, k] or sz <= 0 or sy <= 0 or sx <= 0:
                        continue
                    base = starts[b, k, 0] * stride_z + starts[b, k, 1] * stride_y + starts[b, k, 2]
                    _fill_box(ob, src, base, sz, sy, sx, stride_z, stride_y, 4, 0.0, 0.0, np.uint64(0), no_tmp)

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _rot90_kernel(x, source, out, out2, k):  # pragma: no cover
        # x: (B_in, M, H, H); out: (B, M, H, H); out[b] = torch.rot90(x[source[b]], k[b], (-2, -1)) in
        # one pass; out2 (shaped like out, or empty): a second copy written in the same pass
        n_batch, n_m, n = out.shape[0], out.shape[1], out.shape[2]
        both = out2.size > 0
        for b in numba.prange(n_batch):
            kb = k[b] % 4
            for p in range(n_m):
                src = x[source[b], p]
                dst = out[b, p]
                for i in range(n):  # one loop per class: no branch in the inner loop
                    if kb == 0:
                        for j in range(n):
                            dst[i, j] = src[i, j]
                    elif kb == 1:
                        for j in range(n):
                            dst[i, j] = src[j, n - 1 - i]
                    elif kb == 2:
                        for j in range(n):
                            dst[i, j] = src[n - 1 - i, n - 1 - j]
                    else:  # the source column read top-down (forward strides prefetch better)
                        for j in range(n):
                            dst[i, n - 1 - j] = src[j, i]
                if both:  # the plane is still in cache: the second copy costs a write
                    second = out2[b, p]
                    for i in range(n):
                        for j in range(n):
                            second[i, j] = dst[i, j]

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _channel_shuffle_kernel(out, starts, sizes, active, seeds):  # pragma: no cover
        # MONAI RandCoarseShuffle in place: boxes in order, each channel its own permutation of the
        # box's *current* values (so the result is a permutation of each channel's input).
        n_batch, n_ch = out.shape[0], out.shape[1]
        stride_z = np.int64(out.shape[3]) * np.int64(out.shape[4])
        stride_y = np.int64(out.shape[4])
        n_box = starts.shape[1]
        for b in numba.prange(n_batch):
            ob = out[b].reshape(n_ch, -1)
            max_vol = 1
            for k in range(n_box):
                max_vol = max(max_vol, sizes[b, k, 0] * sizes[b, k, 1] * sizes[b, k, 2])
            buf = np.empty(max_vol, out.dtype)
            state = seeds[b]
            for k in range(n_box):
                if not active[b, k]:
                    continue
                sz, sy, sx = sizes[b, k, 0], sizes[b, k, 1], sizes[b, k, 2]
                base = starts[b, k, 0] * stride_z + starts[b, k, 1] * stride_y + starts[b, k, 2]
                for c in range(n_ch):
                    n = 0
                    for i in range(sz):
                        for j in range(sy):
                            row = base + i * stride_z + j * stride_y
                            for m in range(sx):
                                buf[n] = ob[c, row + m]
                                n += 1
                    for i in range(n - 1, 0, -1):
                        state, r = _splitmix(state)
                        jj = np.int64(((r >> np.uint64(32)) * np.uint64(i + 1)) >> np.uint64(32))
                        tmp = buf[i]
                        buf[i] = buf[jj]
                        buf[jj] = tmp
                    n = 0
                    for i in range(sz):
                        for j in range(sy):
                            row = base + i * stride_z + j * stride_y
                            for m in range(sx):
                                ob[c, row + m] = buf[n]
                                n += 1


def _as_5d(t: Tensor) -> Tensor:
    return t if t.dim() == 5 else t.unsqueeze(2)  # 2-D: a depth-1 volume


def shuffle_boxes_cpu(x: Tensor, starts: Tensor, sizes: Tensor, seeds: Tensor, out: Tensor | None = None) -> Tensor:
    """Models Genesis local shuffle of given boxes, compiled CPU loop (see the module notes).

    Args:
        x: (B, C, *spatial) CPU tensor, 2 or 3 spatial dims.
        starts, sizes: (B, K, D) int box corners and sides, inside the volume, sides >= 1.
        seeds: (B,) int64 seeds of the per-sample random streams.
        out: optional contiguous tensor shaped like ``x`` to write into.

    Returns:
        (B, C, *spatial): a copy of ``x`` in which box k of each sample, in order, received a
        uniformly random permutation of its *original* voxels (all channels together); where
        boxes overlap the later box wins.
    """
    src = x.detach().contiguous()
    if out is None:
        out = torch.empty_like(src, memory_format=torch.contiguous_format)
    out.copy_(src)
    st, sz = _boxes_3d(starts, sizes, 1)
    _threads(x.shape[0])
    _shuffle_kernel(
        _as_5d(src).numpy(), _as_5d(out).numpy(), st.numpy(), sz.numpy(), seeds.to(torch.int64).numpy().view(np.uint64)
    )
    return out


def _threads(batch: int) -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS, batch)))


def _boxes_3d(starts: Tensor, other: Tensor, fill: int) -> tuple[Tensor, Tensor]:
    """int64 contiguous (B, K, 3) corners and sides/ends; 2-D boxes get a depth-1 z extent."""
    st = starts.to(torch.int64).contiguous()
    ot = other.to(torch.int64).contiguous()
    if st.shape[-1] == 2:
        st = torch.cat([torch.zeros_like(st[..., :1]), st], -1)
        ot = torch.cat([torch.full_like(ot[..., :1], fill), ot], -1)
    return st, ot


MODES = {"copy": 0, "noise_in": 1, "noise_out": 2, "bell_in": 3, "paste": 4}


def paint_boxes_cpu(
    x: Tensor,
    starts: Tensor,
    ends: Tensor,
    active: Tensor,
    mode: Tensor,
    seeds: Tensor,
    low: Tensor | None = None,
    high: Tensor | None = None,
    partner: Tensor | None = None,
    *,
    source: Tensor | None = None,
) -> Tensor:
    """Fill boxes per sample, compiled CPU loop; returns a new (B, C, *spatial) tensor.

    Args:
        x: (B_in, C, *spatial) CPU tensor (2 or 3 spatial dims).
        starts, ends: (B, K, D) half-open boxes; ``active``: (B, K) bool.
        mode: (B,) int, per sample (see ``MODES``): 0 copy; 1 uniform noise in ``[low, high)`` in
            the boxes (in-painting, cut-out); 2 uniform noise outside the boxes, originals inside
            (out-painting); 3 bell-shaped noise min-max scaled to [0, 1] per box (Swin UNETR);
            4 boxes copied from sample ``partner[b]`` of ``x``.
        seeds: (B,) int64 seeds of the per-sample random streams.
        low, high: (B,) noise bounds (default 0, 1); NaN in ``low``: the sample's own [min, max)
            (MONAI's default fill), found in the same pass. ``partner``: (B,) int (default: itself).
        source: (B,) int: output sample ``b`` is built from input sample ``source[b]`` (default
            ``b``, B = B_in): several views of one batch in one call, without copying the input.

    Noise values are 24-bit uniforms from a counter-based hash of (voxel index, sample seed), so a
    voxel covered by several boxes gets one value whichever box writes last.
    """
    src = x.detach().contiguous()
    order = torch.arange(src.shape[0]) if source is None else source.to("cpu", torch.int64).contiguous()
    out = torch.empty((order.numel(), *src.shape[1:]), dtype=src.dtype)
    _paint(src, out, order, True, starts, ends, active, mode, seeds, low, high, partner)
    return out


def paint_boxes_cpu_(
    out: Tensor,
    starts: Tensor,
    ends: Tensor,
    active: Tensor,
    mode: Tensor,
    seeds: Tensor,
    low: Tensor | None = None,
    high: Tensor | None = None,
) -> Tensor:
    """:func:`paint_boxes_cpu` in place on a contiguous CPU tensor: modes 1 and 3 touch only the
    boxes, mode 2 rewrites the outside (pasting, mode 4, reads other samples: see
    :func:`paste_boxes_cpu_`)."""
    if bool((mode.to(torch.int64) == MODES["paste"]).any()):
        raise ValueError("paint_boxes_cpu_ cannot paste in place; use paste_boxes_cpu_")
    _paint(out, out, torch.arange(out.shape[0]), False, starts, ends, active, mode, seeds, low, high, None)
    return out


def _paint(src: Tensor, out: Tensor, source: Tensor, copy: bool, starts: Tensor, ends: Tensor, active: Tensor,
           mode: Tensor, seeds: Tensor, low: Tensor | None, high: Tensor | None, partner: Tensor | None) -> None:
    batch = out.shape[0]
    st, en = _boxes_3d(starts, ends, 1)
    zeros = torch.zeros(batch, dtype=torch.float64)
    low64 = zeros if low is None else low.detach().to("cpu", torch.float64).expand(batch).contiguous()
    high64 = zeros + 1 if high is None else high.detach().to("cpu", torch.float64).expand(batch).contiguous()
    part = torch.arange(batch) if partner is None else partner.to("cpu", torch.int64).contiguous()
    _threads(batch)
    _paint_kernel(
        _as_5d(src).numpy(), _as_5d(out).numpy(), source.numpy(), copy, st.numpy(), en.numpy(),
        active.to(torch.bool).contiguous().numpy(), mode.to(torch.int8).contiguous().numpy(),
        low64.numpy(), high64.numpy(), part.numpy(), seeds.to(torch.int64).contiguous().numpy().view(np.uint64),
    )


def paste_boxes_cpu_(out: Tensor, original: Tensor, starts: Tensor, ends: Tensor, active: Tensor,
                     partner: Tensor) -> Tensor:
    """Swin UNETR's paste round in place, with the reference's sample order (compiled).

    Sample ``b`` receives its active boxes from sample ``p = partner[b]`` (none when ``p == b``) as
    the reference loop sees it: ``out[p]`` when ``p < b`` (already finished), ``original[p]`` when
    ``p > b`` (not yet corrupted).

    Args:
        out: (B, C, *spatial) contiguous CPU tensor, modified in place.
        original: the batch before this corruption, shaped like ``out``.
        starts, ends: (B, K, D) half-open boxes; ``active``: (B, K) bool; ``partner``: (B,) int.
    """
    st, en = _boxes_3d(starts, ends, 1)
    _threads(out.shape[0])
    _paste_kernel(_as_5d(out).numpy(), _as_5d(original.detach().contiguous()).numpy(), st.numpy(), en.numpy(),
                  active.to(torch.bool).contiguous().numpy(), partner.to("cpu", torch.int64).contiguous().numpy())
    return out


def minmax_cpu(x: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) float64 minimum and maximum of each sample: one compiled read, samples in parallel."""
    src = x.detach().contiguous()
    low, high = torch.empty(src.shape[0], dtype=torch.float64), torch.empty(src.shape[0], dtype=torch.float64)
    _threads(src.shape[0])
    _minmax_kernel(src.view(src.shape[0], -1).numpy(), low.numpy(), high.numpy())
    return low, high


def channel_shuffle_boxes_cpu_(out: Tensor, starts: Tensor, sizes: Tensor, active: Tensor, seeds: Tensor) -> Tensor:
    """MONAI ``RandCoarseShuffle`` in place on a contiguous CPU tensor: active boxes in order, each
    channel with its own uniform permutation of the box's current values (compiled loop).

    Args:
        out: (B, C, *spatial) contiguous CPU tensor, modified in place.
        starts, sizes: (B, K, D) box corners and sides; ``active``: (B, K) bool.
        seeds: (B,) int64 seeds of the per-sample random streams.
    """
    st, sz = _boxes_3d(starts, sizes, 1)
    _threads(out.shape[0])
    _channel_shuffle_kernel(
        _as_5d(out).numpy(), st.numpy(), sz.numpy(), active.to(torch.bool).contiguous().numpy(),
        seeds.to(torch.int64).contiguous().numpy().view(np.uint64),
    )
    return out


def rot90_last_plane_cpu(
    x: Tensor, k: Tensor, copies: int = 1, source: Tensor | None = None
) -> Tensor | tuple[Tensor, Tensor]:
    """``torch.rot90(x[b], k[b], (-2, -1))`` for every sample in one compiled pass (square last plane).

    Args:
        x: (B_in, ..., H, H) CPU tensor.
        k: (B,) int rotation classes (multiples of 90 degrees).
        copies: 2 writes a second, independent copy in the same pass (a target and the view that
            is corrupted in place).
        source: (B,) int: output sample ``b`` rotates input sample ``source[b]`` (default ``b``).

    Returns:
        New contiguous (B, ..., H, H) tensor (a pair of them for ``copies=2``).
    """
    src = x.detach().contiguous()
    order = torch.arange(src.shape[0]) if source is None else source.to("cpu", torch.int64).contiguous()
    outs = [torch.empty((order.numel(), *src.shape[1:]), dtype=src.dtype) for _ in range(copies)]
    n = src.shape[-1]
    planes = [o.view(o.shape[0], -1, n, n).numpy() for o in outs]
    second = planes[1] if copies == 2 else np.empty((0, 0, 0, 0), planes[0].dtype)
    _threads(order.numel())
    _rot90_kernel(src.view(src.shape[0], -1, n, n).numpy(), order.numpy(), planes[0], second,
                  k.to(torch.int64).contiguous().numpy())
    return outs[0] if copies == 1 else (outs[0], outs[1])

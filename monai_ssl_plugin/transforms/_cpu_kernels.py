"""Compiled CPU kernels (numba) for the box loops of the batched corruptions.

On CPU, the published per-block loops (Models Genesis: 10,000 blocks per sample) are cheapest as
what they are -- a loop over blocks -- once it runs as machine code: a block's voxels are read
from the original, permuted by Fisher-Yates and written, touching each voxel-write once. The
vectorised tensor form (ragged enumeration, a sort of random keys, ``scatter_reduce``) needs
about ten memory passes over the 1.3 M voxel-writes of a 96^3 sample, and its sort alone costs
more than the 10x target allows on this 2-core CPU (see docs/performance.md). The tensor form
stays the path on other devices (CUDA) and where numba is missing.

Random numbers: permutations use one SplitMix64 stream per sample (Steele et al., OOPSLA 2014);
noise fills use a counter-based 32-bit hash of (voxel index, sample seed) -- Swin UNETR's
per-box noise of (box-local index, box seed) -- which vectorises.
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
    "rot90_last_plane_cpu", "shuffle_boxes_cpu", "swin_cutout_cpu",
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

    @numba.njit(nogil=True, cache=True, inline="always")
    def _box_offset(starts, b, k, stride_z, stride_y):  # pragma: no cover - compiled
        # flat index of the first voxel of box k of sample b in a (Z, Y, X) volume
        return starts[b, k, 0] * stride_z + starts[b, k, 1] * stride_y + starts[b, k, 2]

    @numba.njit(nogil=True, cache=True, inline="always")
    def _largest_box(sizes, b):  # pragma: no cover - compiled
        # voxels of sample b's largest box (at least 1): the length of its scratch buffer
        max_vol = 1
        for k in range(sizes.shape[1]):
            max_vol = max(max_vol, sizes[b, k, 0] * sizes[b, k, 1] * sizes[b, k, 2])
        return max_vol

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _shuffle_kernel(x, out, starts, sizes, seeds):  # pragma: no cover - compiled
        # x, out: (B, C, N) flat views of (B, C, Z, Y, X); starts/sizes: (B, K, 3); seeds: (B,) uint64
        n_batch, n_ch = x.shape[0], x.shape[1]
        dims = (np.int64(out.shape[2]), np.int64(out.shape[3]), np.int64(out.shape[4]))
        n_box = starts.shape[1]
        stride_z = dims[1] * dims[2]
        stride_y = dims[2]
        touched = np.zeros(n_batch, np.float64)
        for b in numba.prange(n_batch):
            xb = x[b].reshape(n_ch, -1)
            ob = out[b].reshape(n_ch, -1)
            offsets = np.empty(_largest_box(sizes, b), np.int64)
            state = seeds[b]
            sink = 0.0
            for k in range(n_box):
                sz, sy, sx = sizes[b, k, 0], sizes[b, k, 1], sizes[b, k, 2]
                base = _box_offset(starts, b, k, stride_z, stride_y)
                # software prefetch: read the next block's rows now, so their cache misses overlap
                # this block's shuffle (12-15 % faster per batch at 96^3 on this machine)
                if k + 1 < n_box:
                    nxt = _box_offset(starts, b, k + 1, stride_z, stride_y)
                    for i in range(sizes[b, k + 1, 0]):
                        for j in range(sizes[b, k + 1, 1]):
                            sink += xb[0, nxt + i * stride_z + j * stride_y] + ob[0, nxt + i * stride_z + j * stride_y]
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
            touched[b] = sink  # kept, so the prefetching reads are not optimised away
        return touched


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
    def _fill_box(ob, base, sz, sy, sx, stride_z, stride_y, low, span, seed, tmp):  # pragma: no cover
        """Uniform noise in ``[low, low + span)`` over one box of one sample (all channels).
        ``tmp``: uint32 scratch of >= ``sx``."""
        n_ch = ob.shape[0]
        n_vox = ob.shape[1]
        low32, step32 = np.float32(low), np.float32(span * 5.9604644775390625e-08)
        for c in range(n_ch):
            for i in range(sz):
                for j in range(sy):
                    row = base + i * stride_z + j * stride_y
                    if sx >= 32:  # long rows: the vectorised row hash pays off
                        _noise_row(ob[c], row, sx, c * n_vox + row, seed, low32, step32, tmp)
                    else:  # short rows: one fused scalar loop has less overhead
                        for m in range(sx):
                            ob[c, row + m] = low32 + step32 * np.float32(_hash32(c * n_vox + row + m, seed) >> 8)

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
    def _paint_kernel(x, out, source, starts, ends, active, mode, low, high, seeds):  # pragma: no cover
        # per output sample b (x: (B_in, C, Z, Y, X); out: (B, C, Z, Y, X); starts/ends: (B, K, 3);
        # active: (B, K)), built from input sample source[b]: mode 0 copy; 1 uniform noise in the
        # boxes; 2 uniform noise outside the boxes (out-painting). low[b] NaN: the noise range is
        # the sample's own [min, max) (MONAI's default fill).
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
            if np.isnan(lo) and md != 0:
                lo, hi = _minmax(xb.reshape(-1))
            span = hi - lo
            tmp = np.empty(x.shape[4], np.uint32)  # a row of hashes
            if md == 2:
                _out_paint(out[b], x[source[b]], starts, ends, active, b, lo, span, seed, tmp)
                continue
            flat_o, flat_x = ob.reshape(-1), xb.reshape(-1)
            for v in range(flat_o.size):  # a flat loop compiles to a vector copy; ob[:] = xb did not
                flat_o[v] = flat_x[v]
            if md == 0:
                continue
            for k in range(n_box):
                if not active[b, k]:
                    continue
                sz = ends[b, k, 0] - starts[b, k, 0]
                sy = ends[b, k, 1] - starts[b, k, 1]
                sx = ends[b, k, 2] - starts[b, k, 2]
                if sz <= 0 or sy <= 0 or sx <= 0:
                    continue
                base = _box_offset(starts, b, k, stride_z, stride_y)
                _fill_box(ob, base, sz, sy, sx, stride_z, stride_y, lo, span, seed, tmp)

    @numba.njit(nogil=True, cache=True, inline="always")
    def _rot90_plane(src, dst, kb):  # pragma: no cover - compiled
        # dst = torch.rot90(src, kb, (0, 1)) for a square (n, n) plane, kb in 0..3
        n = dst.shape[0]
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

    @numba.njit(nogil=True, cache=True, inline="always")
    def _copy_plane(src, dst):  # pragma: no cover - compiled
        flat_s, flat_d = src.reshape(-1), dst.reshape(-1)
        for v in range(flat_d.size):  # a flat loop compiles to a vector copy
            flat_d[v] = flat_s[v]

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _rot90_kernel(x, source, out, out2, k):  # pragma: no cover
        # x: (B_in, M, H, H); out: (B, M, H, H); out[b] = torch.rot90(x[source[b]], k[b], (-2, -1)) in
        # one pass; out2 (shaped like out, or empty): a second copy written in the same pass
        n_batch, n_m = out.shape[0], out.shape[1]
        both = out2.size > 0
        for b in numba.prange(n_batch):
            for p in range(n_m):
                _rot90_plane(x[source[b], p], out[b, p], k[b] % 4)
                if both:  # the plane is still in cache: the second copy costs a write
                    _copy_plane(out[b, p], out2[b, p])

    @numba.njit(nogil=True, cache=True, inline="always")
    def _bell_sum(h):  # pragma: no cover - compiled
        # a 32-bit hash -> the sum of its four bytes, 0..1020 (Irwin-Hall: bell-shaped, close to a
        # normal); two bytes per add, in uint32 lanes (vectorises with AVX2)
        s = (h & np.uint32(0x00FF00FF)) + ((h >> np.uint32(8)) & np.uint32(0x00FF00FF))
        return (s & np.uint32(0xFFFF)) + (s >> np.uint32(16))

    @numba.njit(nogil=True, cache=True, inline="always")
    def _box_seed(seed, k):  # pragma: no cover - compiled
        return np.uint32(_hash32(k, seed))  # box k's own noise stream within the sample's

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _bell_extremes_kernel(n_ch, starts, ends, active, seeds, low, high):  # pragma: no cover
        # low/high (B, K) uint32: the extremes of each active box's bell noise over its C x volume
        # values, keyed by the box-local index (channel, z, y, x): one long vectorised run per chunk
        chunk = 2048
        for b in numba.prange(starts.shape[0]):
            tmp = np.empty(chunk, np.uint32)
            seed = seeds[b] & np.uint64(0xFFFFFFFF)
            for k in range(starts.shape[1]):
                vol = ((ends[b, k, 0] - starts[b, k, 0]) * (ends[b, k, 1] - starts[b, k, 1])
                       * (ends[b, k, 2] - starts[b, k, 2]))
                if not active[b, k] or vol <= 0:
                    continue
                box_seed = _box_seed(seed, k)
                lo, hi = np.uint32(0xFFFFFFFF), np.uint32(0)
                for first in range(0, n_ch * vol, chunk):
                    n = min(chunk, n_ch * vol - first)
                    _hash_row(tmp, n, first, box_seed)
                    for m in range(n):  # separate loops: each vectorises
                        tmp[m] = _bell_sum(tmp[m])
                    for m in range(n):
                        lo = min(lo, tmp[m])
                        hi = max(hi, tmp[m])
                low[b, k], high[b, k] = lo, hi

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _swin_kernel(x, source, rot, target, view, starts, ends, active, seeds, low, high,
                     p_starts, p_ends, p_active, partner):  # pragma: no cover - compiled
        # Swin UNETR cut-out of x[source[b]] (B_in, C, Z, Y, X) into view (B, C, Z, Y, X), plane by
        # plane: every step is voxel-local within a z-plane (rotation in (Y, X), boxes, paste from the
        # same position), so planes run in parallel and each plane's samples stay in cache.
        # target (shaped like view, or empty): written with x[source[b]] rotated by rot[b] * 90
        # degrees, and the view is cut from it. Per plane: every sample's original plane first, then
        # the views in sample order -- noise boxes (bell noise min-max scaled per box with the
        # extremes low/high), then the paste from partner p (p < b: its finished view; p > b: its
        # original), as the reference's sequential loop sees it.
        n_batch, n_ch, n_z = view.shape[0], view.shape[1], view.shape[2]
        n_y, n_x = view.shape[3], view.shape[4]
        rotate = target.size > 0
        for z in numba.prange(n_z):
            tmp = np.empty(n_y * n_x, np.uint32)
            noise = np.empty(n_y * n_x, np.float32)
            if rotate:
                for b in range(n_batch):
                    for c in range(n_ch):
                        _rot90_plane(x[source[b], c, z], target[b, c, z], rot[b] % 4)
            for b in range(n_batch):
                for c in range(n_ch):
                    _copy_plane(target[b, c, z] if rotate else x[source[b], c, z], view[b, c, z])
                seed = seeds[b] & np.uint64(0xFFFFFFFF)
                for k in range(starts.shape[1]):
                    z0, z1 = starts[b, k, 0], ends[b, k, 0]
                    y0, y1, x0, x1 = starts[b, k, 1], ends[b, k, 1], starts[b, k, 2], ends[b, k, 2]
                    if not active[b, k] or z < z0 or z >= z1 or y1 <= y0 or x1 <= x0:
                        continue
                    area = (y1 - y0) * (x1 - x0)
                    box_seed = _box_seed(seed, k)
                    offset = np.float32(low[b, k])
                    span = np.float32(max(np.int64(high[b, k]) - np.int64(low[b, k]), 1))
                    for c in range(n_ch):  # the box's slab in this plane: one contiguous key run
                        _hash_row(tmp, area, (c * (z1 - z0) + z - z0) * area, box_seed)
                        for m in range(area):
                            noise[m] = (np.float32(_bell_sum(tmp[m])) - offset) / span  # max -> exactly 1
                        dst = view[b, c, z]
                        for y in range(y1 - y0):
                            dst[y0 + y, x0:x1] = noise[y * (x1 - x0):(y + 1) * (x1 - x0)]
                p = partner[b]
                if p == b:
                    continue
                for k in range(p_starts.shape[1]):
                    z0, z1 = p_starts[b, k, 0], p_ends[b, k, 0]
                    y0, y1, x0, x1 = p_starts[b, k, 1], p_ends[b, k, 1], p_starts[b, k, 2], p_ends[b, k, 2]
                    if not p_active[b, k] or z < z0 or z >= z1 or y1 <= y0 or x1 <= x0:
                        continue
                    for c in range(n_ch):
                        dst = view[b, c, z]
                        if p < b:
                            src = view[p, c, z]
                        elif rotate:
                            src = target[p, c, z]
                        else:
                            src = x[source[p], c, z]
                        for y in range(y0, y1):
                            dst[y, x0:x1] = src[y, x0:x1]

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
            buf = np.empty(_largest_box(sizes, b), out.dtype)
            state = seeds[b]
            for k in range(n_box):
                if not active[b, k]:
                    continue
                sz, sy, sx = sizes[b, k, 0], sizes[b, k, 1], sizes[b, k, 2]
                base = _box_offset(starts, b, k, stride_z, stride_y)
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


def _seeds_u64(seeds: Tensor) -> np.ndarray:
    """(B,) uint64 view of the int64 seeds the kernels' random streams start from."""
    return seeds.to("cpu", torch.int64).contiguous().numpy().view(np.uint64)


def _source_order(src: Tensor, source: Tensor | None) -> Tensor:
    """(B,) int64 input sample of each output sample: ``source``, or each input sample once."""
    return torch.arange(src.shape[0]) if source is None else source.to("cpu", torch.int64).contiguous()


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
        _as_5d(src).numpy(), _as_5d(out).numpy(), st.numpy(), sz.numpy(), _seeds_u64(seeds)
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


MODES = {"copy": 0, "noise_in": 1, "noise_out": 2}


def paint_boxes_cpu(
    x: Tensor,
    starts: Tensor,
    ends: Tensor,
    active: Tensor,
    mode: Tensor,
    seeds: Tensor,
    low: Tensor | None = None,
    high: Tensor | None = None,
    *,
    source: Tensor | None = None,
) -> Tensor:
    """Fill boxes per sample, compiled CPU loop; returns a new (B, C, *spatial) tensor.

    Args:
        x: (B_in, C, *spatial) CPU tensor (2 or 3 spatial dims).
        starts, ends: (B, K, D) half-open boxes; ``active``: (B, K) bool.
        mode: (B,) int, per sample (see ``MODES``): 0 copy; 1 uniform noise in ``[low, high)`` in
            the boxes (in-painting, cut-out); 2 uniform noise outside the boxes, originals inside
            (out-painting).
        seeds: (B,) int64 seeds of the per-sample random streams.
        low, high: (B,) noise bounds (default 0, 1); NaN in ``low``: the sample's own [min, max)
            (MONAI's default fill), found in the same pass.
        source: (B,) int: output sample ``b`` is built from input sample ``source[b]`` (default
            ``b``, B = B_in): several views of one batch in one call, without copying the input.

    Noise values are 24-bit uniforms from a counter-based hash of (voxel index, sample seed), so a
    voxel covered by several boxes gets one value whichever box writes last.
    """
    mode8 = mode.to("cpu", torch.int8).contiguous()
    if mode8.numel() and (int(mode8.min()) < 0 or int(mode8.max()) >= len(MODES)):
        raise ValueError(f"paint mode must be one of {MODES}, got {mode.tolist()}")
    src = x.detach().contiguous()
    order = _source_order(src, source)
    out = torch.empty((order.numel(), *src.shape[1:]), dtype=src.dtype)
    batch = out.shape[0]
    st, en = _boxes_3d(starts, ends, 1)
    zeros = torch.zeros(batch, dtype=torch.float64)
    low64 = zeros if low is None else low.detach().to("cpu", torch.float64).expand(batch).contiguous()
    high64 = zeros + 1 if high is None else high.detach().to("cpu", torch.float64).expand(batch).contiguous()
    _threads(batch)
    _paint_kernel(
        _as_5d(src).numpy(), _as_5d(out).numpy(), order.numpy(), st.numpy(), en.numpy(),
        active.to(torch.bool).contiguous().numpy(), mode8.numpy(), low64.numpy(), high64.numpy(), _seeds_u64(seeds),
    )
    return out


def swin_cutout_cpu(
    x: Tensor,
    starts: Tensor,
    ends: Tensor,
    active: Tensor,
    seeds: Tensor,
    paste_starts: Tensor,
    paste_ends: Tensor,
    paste_active: Tensor,
    partner: Tensor,
    *,
    source: Tensor | None = None,
    rotation: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Swin UNETR cut-out (and optionally the 90-degree rotation before it) in one compiled pass.

    Sample ``b`` of the output is cut from ``original[b]`` = input sample ``source[b]``, rotated by
    ``rotation[b] * 90`` degrees in the last plane when ``rotation`` is given. Noise round: each
    active box, in order, gets bell-shaped noise (Irwin-Hall of four hashed bytes, close to a
    normal) min-max scaled to [0, 1] over the box and its channels -- the reference's per-block
    ``normal_()`` then min-max -- from the box's own stream (box-local index, sample seed, box
    number). Paste round, when ``partner[b] != b``: each active paste box is copied from sample
    ``p = partner[b]`` as the reference's sequential loop sees it -- the finished view ``p`` when
    ``p < b``, ``original[p]`` when ``p > b``.

    Args:
        x: (B_in, C, *spatial) CPU tensor, 2 or 3 spatial dims (with ``rotation``: a square last plane).
        starts, ends, active: (B, K, D), (B, K, D), (B, K) noise boxes (half-open, clipped to the volume).
        seeds: (B,) int64 seeds of the per-sample noise streams.
        paste_starts, paste_ends, paste_active: (B, K', D), (B, K', D), (B, K') paste boxes.
        partner: (B,) int, the sample each one pastes from (itself: no paste).
        source: (B,) int input sample of each output sample (default ``b``, B = B_in).
        rotation: (B,) int rotation classes, or None for no rotation.

    Returns:
        ``(view, original)``: (B, C, *spatial) contiguous tensors; ``original`` is the rotated
        input (a new tensor) with ``rotation``, else ``x[source]`` (``x`` itself without ``source``).
    """
    src = x.detach().contiguous()
    order = _source_order(src, source)
    shape = (order.numel(), *src.shape[1:])
    view = torch.empty(shape, dtype=src.dtype)
    target = torch.empty(shape if rotation is not None else (0,), dtype=src.dtype)
    st, en = _boxes_3d(starts, ends, 1)
    pst, pen = _boxes_3d(paste_starts, paste_ends, 1)
    act = active.to(torch.bool).contiguous().numpy()
    seeds64 = _seeds_u64(seeds)
    low = np.empty(act.shape, np.uint32)
    high = np.empty(act.shape, np.uint32)
    _threads(shape[0])
    _bell_extremes_kernel(shape[1], st.numpy(), en.numpy(), act, seeds64, low, high)
    x5, view5 = _as_5d(src), _as_5d(view)
    if rotation is None:
        rot, target5 = np.zeros(0, np.int64), np.empty((0,) * 5, view5.numpy().dtype)
    else:
        rot, target5 = rotation.to("cpu", torch.int64).contiguous().numpy(), _as_5d(target).numpy()
    _threads(x5.shape[2])  # planes in parallel
    _swin_kernel(
        x5.numpy(), order.numpy(), rot, target5, view5.numpy(), st.numpy(), en.numpy(), act, seeds64, low, high,
        pst.numpy(), pen.numpy(), paste_active.to(torch.bool).contiguous().numpy(),
        partner.to("cpu", torch.int64).contiguous().numpy(),
    )
    if rotation is not None:
        return view, target
    return view, (src if source is None else src.index_select(0, order))


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
        _seeds_u64(seeds),
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
    order = _source_order(src, source)
    outs = [torch.empty((order.numel(), *src.shape[1:]), dtype=src.dtype) for _ in range(copies)]
    n = src.shape[-1]
    planes = [o.view(o.shape[0], -1, n, n).numpy() for o in outs]
    second = planes[1] if copies == 2 else np.empty((0, 0, 0, 0), planes[0].dtype)
    _threads(order.numel())
    _rot90_kernel(src.view(src.shape[0], -1, n, n).numpy(), order.numpy(), planes[0], second,
                  k.to(torch.int64).contiguous().numpy())
    return outs[0] if copies == 1 else (outs[0], outs[1])

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
    "HAVE_NUMBA", "MODES", "available", "shuffle_boxes_cpu", "paint_boxes_cpu", "channel_shuffle_boxes_cpu_",
    "rot90_last_plane_cpu",
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
    def _hash32(index: np.uint64, seed: np.uint64) -> np.uint64:
        # counter-based noise: golden-ratio multiply, then Wellons' "lowbias32" mixer (the same
        # design as the tensor path's hash). Stateless, so the loops vectorise and a voxel's value
        # depends only on (index, seed): overlapping boxes write identical values.
        m32 = np.uint64(0xFFFFFFFF)
        h = (index * np.uint64(0x9E3779B1) + seed) & m32
        h ^= h >> np.uint64(16)
        h = (h * np.uint64(0x7FEB352D)) & m32
        h ^= h >> np.uint64(15)
        h = (h * np.uint64(0x846CA68B)) & m32
        return h ^ (h >> np.uint64(16))

    @numba.njit(nogil=True, cache=True, inline="always")
    def _uniform(index: np.uint64, seed: np.uint64) -> float:
        return np.float64(_hash32(index, seed) >> np.uint64(8)) * 5.9604644775390625e-08  # 24 bits / 2**24

    @numba.njit(nogil=True, cache=True, inline="always")
    def _bell(index: np.uint64, seed: np.uint64) -> float:
        h = _hash32(index, seed)  # Irwin-Hall of the four bytes: bell-shaped, close to a normal
        m8 = np.uint64(255)
        return np.float64((h & m8) + ((h >> np.uint64(8)) & m8) + ((h >> np.uint64(16)) & m8) + (h >> np.uint64(24)))

    @numba.njit(nogil=True, cache=True)
    def _fill_box(ob, xb, base, sz, sy, sx, stride_z, stride_y, mode, low, span, seed):  # pragma: no cover
        """One box of one sample: mode 1 uniform noise, 3 bell noise min-max scaled over the box
        (Swin UNETR), 4 copy from ``xb`` (the partner)."""
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
        lo_seen, hi_seen = np.inf, -np.inf
        for c in range(n_ch):
            for i in range(sz):
                for j in range(sy):
                    row = base + i * stride_z + j * stride_y
                    key = np.uint64(c * n_vox + row)
                    if mode == 1:
                        for m in range(sx):
                            ob[c, row + m] = low + span * _uniform(key + np.uint64(m), seed)
                    else:
                        for m in range(sx):
                            v = _bell(key + np.uint64(m), seed)
                            lo_seen = min(lo_seen, v)
                            hi_seen = max(hi_seen, v)
                            ob[c, row + m] = v
        if mode == 3:  # min-max scale the box's noise to [0, 1], as the reference does per block
            scale = 1.0 / max(hi_seen - lo_seen, 1e-12)
            for c in range(n_ch):
                for i in range(sz):
                    for j in range(sy):
                        row = base + i * stride_z + j * stride_y
                        for m in range(sx):
                            ob[c, row + m] = (ob[c, row + m] - lo_seen) * scale

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _paint_kernel(x, out, starts, ends, active, mode, low, high, partner, seeds):  # pragma: no cover
        # per sample b (x, out: (B, C, Z, Y, X); starts/ends: (B, K, 3); active: (B, K)):
        # mode 0 copy; 1 uniform noise in the boxes; 2 uniform noise outside the boxes (out-painting);
        # 3 Swin UNETR bell noise in the boxes; 4 boxes pasted from sample partner[b] of x.
        # low[b] NaN: the noise range is the sample's own [min, max) (MONAI's default fill).
        n_batch, n_ch = x.shape[0], x.shape[1]
        stride_z = np.int64(x.shape[3]) * np.int64(x.shape[4])
        stride_y = np.int64(x.shape[4])
        n_box = starts.shape[1]
        for b in numba.prange(n_batch):
            xb = x[b].reshape(n_ch, -1)
            ob = out[b].reshape(n_ch, -1)
            md = mode[b]
            seed = seeds[b] & np.uint64(0xFFFFFFFF)
            lo = np.float64(low[b])
            hi = np.float64(high[b])
            if np.isnan(lo) and (md == 1 or md == 2):
                lo, hi = np.inf, -np.inf
                for v in xb.reshape(-1):
                    lo = min(lo, np.float64(v))
                    hi = max(hi, np.float64(v))
            span = hi - lo
            if md == 2:  # out-painting, row by row: originals inside the boxes, noise only outside
                n_y, n_x = x.shape[3], x.shape[4]
                inside = np.zeros(n_x, np.bool_)
                for c in range(n_ch):
                    for z in range(x.shape[2]):
                        for y in range(n_y):
                            row = z * stride_z + y * stride_y
                            key = np.uint64(c * ob.shape[1] + row)
                            covered = False
                            for k in range(n_box):
                                if (active[b, k] and starts[b, k, 0] <= z < ends[b, k, 0]
                                        and starts[b, k, 1] <= y < ends[b, k, 1] and starts[b, k, 2] < ends[b, k, 2]):
                                    if not covered:
                                        inside[:] = False
                                        covered = True
                                    inside[max(starts[b, k, 2], 0):min(ends[b, k, 2], n_x)] = True
                            if covered:
                                for m in range(n_x):
                                    if inside[m]:
                                        ob[c, row + m] = xb[c, row + m]
                                    else:
                                        ob[c, row + m] = lo + span * _uniform(key + np.uint64(m), seed)
                            else:
                                for m in range(n_x):
                                    ob[c, row + m] = lo + span * _uniform(key + np.uint64(m), seed)
                continue
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
                _fill_box(ob, src, base, sz, sy, sx, stride_z, stride_y, md, lo, span, seed)

    @numba.njit(nogil=True, cache=True, parallel=True)
    def _rot90_kernel(x, out, k):  # pragma: no cover
        # x, out: (B, M, H, H); out[b] = torch.rot90(x[b], k[b], (-2, -1)) in one pass
        n_batch, n_m, n = x.shape[0], x.shape[1], x.shape[2]
        for b in numba.prange(n_batch):
            kb = k[b] % 4
            for p in range(n_m):
                src = x[b, p]
                dst = out[b, p]
                for i in range(n):
                    for j in range(n):
                        if kb == 0:
                            dst[i, j] = src[i, j]
                        elif kb == 1:
                            dst[i, j] = src[j, n - 1 - i]
                        elif kb == 2:
                            dst[i, j] = src[n - 1 - i, n - 1 - j]
                        else:
                            dst[i, j] = src[n - 1 - j, i]

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
) -> Tensor:
    """Fill boxes per sample, compiled CPU loop; returns a new (B, C, *spatial) tensor.

    Args:
        x: (B, C, *spatial) CPU tensor (2 or 3 spatial dims).
        starts, ends: (B, K, D) half-open boxes; ``active``: (B, K) bool.
        mode: (B,) int, per sample (see ``MODES``): 0 copy; 1 uniform noise in ``[low, high)`` in
            the boxes (in-painting, cut-out); 2 uniform noise outside the boxes, originals inside
            (out-painting); 3 bell-shaped noise min-max scaled to [0, 1] per box (Swin UNETR);
            4 boxes copied from sample ``partner[b]`` of ``x``.
        seeds: (B,) int64 seeds of the per-sample random streams.
        low, high: (B,) noise bounds (default 0, 1); NaN in ``low``: the sample's own [min, max)
            (MONAI's default fill), found in the same pass. ``partner``: (B,) int (default: itself).

    Noise values are 24-bit uniforms from a counter-based hash of (voxel index, sample seed), so a
    voxel covered by several boxes gets one value whichever box writes last.
    """
    batch = x.shape[0]
    src = x.detach().contiguous()
    out = torch.empty_like(src, memory_format=torch.contiguous_format)
    st, en = _boxes_3d(starts, ends, 1)
    zeros = torch.zeros(batch, dtype=torch.float64)
    low64 = zeros if low is None else low.detach().to("cpu", torch.float64).expand(batch).contiguous()
    high64 = zeros + 1 if high is None else high.detach().to("cpu", torch.float64).expand(batch).contiguous()
    part = torch.arange(batch) if partner is None else partner.to("cpu", torch.int64).contiguous()
    _threads(batch)
    _paint_kernel(
        _as_5d(src).numpy(), _as_5d(out).numpy(), st.numpy(), en.numpy(),
        active.to(torch.bool).contiguous().numpy(), mode.to(torch.int8).contiguous().numpy(),
        low64.numpy(), high64.numpy(), part.numpy(), seeds.to(torch.int64).contiguous().numpy().view(np.uint64),
    )
    return out


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


def rot90_last_plane_cpu(x: Tensor, k: Tensor) -> Tensor:
    """``torch.rot90(x[b], k[b], (-2, -1))`` for every sample in one compiled pass (square last plane).

    Args:
        x: (B, ..., H, H) CPU tensor.
        k: (B,) int rotation classes (multiples of 90 degrees).

    Returns:
        New contiguous tensor shaped like ``x``.
    """
    src = x.detach().contiguous()
    out = torch.empty_like(src, memory_format=torch.contiguous_format)
    n = src.shape[-1]
    _threads(src.shape[0])
    _rot90_kernel(src.view(src.shape[0], -1, n, n).numpy(), out.view(src.shape[0], -1, n, n).numpy(),
                  k.to(torch.int64).contiguous().numpy())
    return out

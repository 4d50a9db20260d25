"""Models Genesis corruptions as batched tensor operations (Zhou et al., "Models Genesis",
Medical Image Analysis 67, 2021).

Flip (input and target alike), local pixel shuffling (p 0.5), non-linear Bezier intensity mapping
(p 0.9) and painting (p 0.9; out-painting 0.8 / in-painting 0.2), in that order
(:func:`models_genesis`). Every function takes a batch ``x`` of shape ``(B, C, *spatial)`` with two
or three spatial dims and a ``generator`` (``torch.Generator``, int seed or ``None``; see
:mod:`._random`), draws one set of random parameters for the whole batch as tensors and returns new
tensors (``x`` is never modified). The box loops (shuffle, painting) run through :mod:`._ops`:
compiled on CPU, tensor ops elsewhere. On CPU without the compiled loops, the samples of
``local_pixel_shuffle`` are shuffled one at a time so the sort keys fit int32 (half the cost of
the batched int64 sort); on CUDA the batch is one call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._boxes import _window_starts, shuffle_boxes
from ._common import BoxDraw, chain_active, on_samples, open_batch, open_boxes
from ._ops import implementation
from ._random import GeneratorLike, bernoulli, integers, uniform

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
]


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
    spatial, gen, batch, dev, _ = open_batch(x, generator)
    y = x if y is None else y
    if y.shape[0] != batch or tuple(y.shape[2:]) != spatial:
        raise ValueError("y must share the batch size and spatial shape of x")
    parity = _flip_parity(batch, len(spatial), prob, max_flips, gen, dev)
    x_out = _flip_samples(x, parity)
    return x_out, (x_out.clone() if y is x else _flip_samples(y, parity))


def _flip_parity(
    batch: int, dims: int, prob: float, max_flips: int, gen: torch.Generator | None, device: torch.device
) -> Tensor:
    """(B, D) bool: axes flipped an odd number of times by the Models Genesis flip loop."""
    active = chain_active(max_flips, prob, batch, gen, device, first_always=False)  # (B, F)
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
    spatial, gen, batch, dev, selected = open_batch(x, generator, prob, apply)
    dims = len(spatial)
    max_side = torch.tensor([max(1, int(s * max_block_frac)) for s in spatial], device=dev)
    sizes = integers(1, max_side, (batch, n_blocks, dims), gen, dev)
    starts = integers(0, torch.tensor(spatial, device=dev) - sizes, (batch, n_blocks, dims), gen, dev)
    return implementation("local_pixel_shuffle", x)(x, selected, starts, sizes, gen)


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
    _, gen, batch, _, selected = open_batch(x, generator, prob, apply)
    control = uniform((batch, 2, 2), gen, x.device)
    inverted = bernoulli(invert_prob, (batch,), gen, x.device)
    return on_samples(x, selected, lambda xs, idx: apply_bezier(xs, control[idx], inverted[idx]))


def _windows(n_max: int, continue_prob: float, size_range: tuple[float, float], margin: int, *, out: bool
             ) -> BoxDraw:
    """The painting boxes as the box draw of :func:`~._common.open_boxes`, in the order both
    paintings draw them: how many (up to ``n_max`` while ``random() < continue_prob``; out-painting
    keeps at least one window), their sides, their starts at least ``margin`` from the border."""

    def draw(spatial: tuple[int, ...], batch: int, gen: torch.Generator | None, dev: torch.device
             ) -> tuple[Tensor, Tensor, Tensor]:
        active = chain_active(n_max, continue_prob, batch, gen, dev, first_always=out)
        shape = (batch, n_max, len(spatial))
        if out:  # side = dim - randint(a * dim, b * dim) with (a, b) = (1 - hi, 1 - lo), at least 1
            cut_low = torch.tensor([int(v * (1 - size_range[1])) for v in spatial], device=dev)
            cut_high = torch.tensor([int(v * (1 - size_range[0])) for v in spatial], device=dev)
            sizes = (torch.tensor(spatial, device=dev) - integers(cut_low, cut_high, shape, gen, dev)).clamp(min=1)
        else:  # side uniform in [dim * lo, dim * hi], at least 1
            low = torch.tensor([max(1, int(v * size_range[0])) for v in spatial], device=dev)
            high = torch.tensor([max(1, int(v * size_range[1])) for v in spatial], device=dev)
            sizes = integers(low, high, shape, gen, dev)
        return _window_starts(spatial, sizes, margin, gen), sizes, active

    return draw


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
    o = open_boxes(x, generator, prob, apply, _windows(max_blocks, continue_prob, size_range, margin, out=False))
    paint = implementation("in_painting", x)
    return paint(x, o.starts, o.starts + o.sizes, o.active_selected, noise_range[0], noise_range[1], o.gen)


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
        prob: per-sample probability of out-painting.
        max_windows: maximum restored windows per sample.
        size_range: window side range as fractions of each dim.
        x, generator, continue_prob, margin, noise_range, apply: as in :func:`in_painting`
            (``continue_prob`` and ``margin`` for windows instead of blocks).

    Returns:
        (B, C, *spatial) corrupted copy.
    """
    o = open_boxes(x, generator, prob, apply, _windows(max_windows, continue_prob, size_range, margin, out=True))
    paint = implementation("out_painting", x)
    return paint(x, o.starts, o.starts + o.sizes, o.active, o.selected, noise_range[0], noise_range[1], o.gen)


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
    _, gen, batch, _, _ = open_batch(x, generator)
    target = _flip_samples(x, _flip_parity(batch, x.dim() - 2, flip_prob, 3, gen, x.device))
    # every step below returns a new tensor, so the target is never aliased by the input
    corrupted = local_pixel_shuffle(target, gen, prob=local_shuffle_prob, n_blocks=n_blocks)
    corrupted = bezier_intensity(corrupted, gen, prob=nonlinear_prob)
    paint = bernoulli(paint_prob, (batch,), gen, x.device)
    inpaint = bernoulli(inpaint_prob, (batch,), gen, x.device)
    corrupted = in_painting(corrupted, gen, apply=paint & inpaint)
    corrupted = out_painting(corrupted, gen, apply=paint & ~inpaint)
    return corrupted, target

"""MONAI's ``RandCoarseDropout`` / ``RandCoarseShuffle`` as batched ops (:func:`coarse_dropout`,
:func:`coarse_shuffle`) and the view corruption of MONAI's ViTAutoEnc self-supervised tutorial
(:func:`monai_ssl_view`, :func:`monai_ssl_views`).

Inputs, generators and outputs as in :mod:`.models_genesis`; holes are drawn for the whole batch at
once and filled through :mod:`._ops` (compiled on CPU, tensor ops elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import BoxDraw, open_batch, open_boxes, per_dim
from ._ops import implementation
from ._random import GeneratorLike, bernoulli, integers, uniform

__all__ = ["coarse_dropout", "coarse_shuffle", "monai_ssl_view", "monai_ssl_views"]


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
    low = [min(v, d) for v, d in zip(per_dim(spatial_size, spatial, "spatial_size"), spatial)]
    high = low if max_spatial_size is None else [
        max(min(v, d), lo) for v, d, lo in zip(per_dim(max_spatial_size, spatial, "max_spatial_size"), spatial, low)
    ]
    # one draw per hole for its sides and its corner (the box drawing is many small tensor ops)
    u = uniform((batch, n_max, 2 * dims), gen, device, dtype=torch.float64)
    side_span = torch.tensor([h - lo + 1 for h, lo in zip(high, low)], device=device)
    sizes = (u[..., :dims] * side_span).long() + torch.tensor(low, device=device)  # uniform in [low, high]
    starts = (u[..., dims:] * (torch.tensor(spatial, device=device) - sizes + 1)).long()  # in [0, S - size]
    return starts, sizes, active


def _holes(holes: int, spatial_size: int | Sequence[int], max_holes: int | None,
           max_spatial_size: int | Sequence[int] | None) -> BoxDraw:
    """:func:`_coarse_holes` with these settings, as the box draw of :func:`~._common.open_boxes`."""
    return lambda spatial, batch, gen, dev: _coarse_holes(spatial, batch, holes, spatial_size, max_holes,
                                                          max_spatial_size, gen, dev)


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
    o = open_boxes(x, generator, prob, apply, _holes(holes, spatial_size, max_holes, max_spatial_size))
    noise_fill = fill_value is None or isinstance(fill_value, (tuple, list))  # the compiled loop fills noise only
    drop = implementation("coarse_dropout", x, allowed=noise_fill)
    return drop(x, o.starts, o.sizes, o.active_selected, o.selected, dropout_holes, fill_value, o.gen)


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
    o = open_boxes(x, generator, prob, apply, _holes(holes, spatial_size, max_holes, max_spatial_size))
    out = x.clone(memory_format=torch.contiguous_format)
    implementation("coarse_shuffle_", out)(out, o.starts, o.sizes, o.active_selected, o.gen)
    return out


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
    if n_views < 1:
        raise ValueError(f"n_views must be at least 1, got {n_views}")
    spatial, gen, batch, dev, _ = open_batch(x, generator)
    rows = batch * n_views  # row r: view r // B of sample r % B
    use_in = bernoulli(0.5, (rows,), gen, dev)
    # The two dropout branches touch disjoint samples: build one region and fill once.
    s_in, z_in, a_in = _coarse_holes(spatial, rows, 6, 5, None, 32, gen, dev)
    s_out, z_out, a_out = _coarse_holes(spatial, rows, 6, 20, None, 64, gen, dev)
    drop = implementation("view_dropout", x)  # the two branches touch disjoint rows: one fill
    out = drop(x, n_views, use_in, (s_in, z_in, a_in), (s_out, z_out, a_out), gen)
    shuffled = bernoulli(0.8, (rows,), gen, dev)
    s_sh, z_sh, a_sh = _coarse_holes(spatial, rows, 10, 8, None, None, gen, dev)
    implementation("coarse_shuffle_", out)(out, s_sh, z_sh, a_sh & shuffled[:, None], gen)
    return tuple(out.split(batch))

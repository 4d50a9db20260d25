"""View generators for contrastive, self-distillation and predictive pretexts, batched.

Every function takes a batch ``x`` of shape ``(B, C, *spatial)`` with two or three spatial dims
and returns new tensors; random ones take ``generator`` (``torch.Generator``, int seed or
``None``; see :mod:`._random`) and draw all positions for the whole batch as tensors. Crops are
gathered from a sliding-window *view* of ``x`` (``Tensor.unfold``) with one advanced-indexing
copy, resized crops with one ``grid_sample`` per call -- no Python loop over samples or crops.

* rotation prediction (Gidaris et al., ICLR 2018; the rotation term of Swin UNETR pretraining,
  Tang et al., CVPR 2022): :func:`random_rotation90`;
* Rubik's cube / cube+ (Zhuang et al., MICCAI 2019; Zhu et al., MedIA 2020): :func:`cube_grid`;
* DINO multi-crop (Caron et al., ICCV 2021): :func:`multi_crop`;
* SimCLR crop pairs with a minimum overlap (Chen et al., ICML 2020; nnssl / OpenMind, Wald et
  al. 2025: crops overlap >= 50 %): :func:`overlapping_crop_pair`;
* VoCo base crops and overlap targets (Wu et al., "VoCo: A Simple-yet-Effective Volume
  Contrastive Learning Framework for 3D Medical Image Analysis", CVPR 2024):
  :func:`base_crops_grid`, :func:`random_crop_with_overlap_targets`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import spatial_shape
from ._ops import implementation
from ._random import GeneratorLike, integers, resolve_generator, uniform

__all__ = [
    "random_rotation90",
    "random_rotations90",
    "crop_boxes",
    "resized_crops",
    "cube_grid",
    "MultiCrop",
    "multi_crop",
    "CropPair",
    "overlapping_crop_pair",
    "base_crop_boxes",
    "base_crops_grid",
    "crop_overlap_ratios",
    "VoCoCrops",
    "random_crop_with_overlap_targets",
]


def _as_tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    vals = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(vals) != n:
        raise ValueError(f"{name} needs {n} values, got {vals}")
    return vals


def random_rotation90(
    x: Tensor, plane: tuple[int, int] = (-2, -1), generator: GeneratorLike = None
) -> tuple[Tensor, Tensor]:
    """Rotate every sample by a random multiple of 90 degrees in one plane.

    Gidaris et al., "Unsupervised Representation Learning by Predicting Image Rotations", ICLR
    2018; used as the rotation term of Swin UNETR pretraining (Tang et al., CVPR 2022, which
    rotates in the plane of the last two dims). Samples are grouped by class and each group is
    rotated with ``torch.rot90``, so the result is an exact voxel permutation.

    Args:
        x: (B, C, *spatial); the two ``plane`` dims must have equal size.
        plane: two spatial tensor dims of ``x`` (negative allowed) spanning the rotation plane.
        generator: generator or seed.

    Returns:
        ``(x_rot, labels)``: (B, C, *spatial) rotated copy and (B,) int64 classes ``k`` in 0..3
        (rotation by ``k * 90`` degrees, ``torch.rot90(sample, k, plane)``).
    """
    (out,), labels = random_rotations90(x, plane, generator, repeats=1, copies=1)
    return out, labels


def rotation_plane(x: Tensor, plane: tuple[int, int]) -> tuple[int, int]:
    """Check that ``plane`` names two distinct, equal-sized spatial dims of ``x``; return them as
    non-negative dims."""
    spatial_shape(x)
    dims = tuple(d % x.dim() for d in plane)
    if len(dims) != 2 or dims[0] == dims[1] or min(dims) < 2:
        raise ValueError(f"plane must be two distinct spatial dims of x, got {plane}")
    if x.shape[dims[0]] != x.shape[dims[1]]:
        raise ValueError(f"90-degree rotations need a square plane, got {x.shape[dims[0]]} x {x.shape[dims[1]]}")
    return dims


def rotation_labels(batch: int, repeats: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """(repeats * B,) int64 rotation classes 0-3, drawn one repeat after the other."""
    return torch.cat([integers(0, 3, (batch,), generator, device) for _ in range(repeats)])


def last_plane_classes(labels: Tensor, dims: tuple[int, int], ndim: int) -> Tensor | None:
    """The classes ``labels`` (``torch.rot90(sample, k, dims)``) as rotations in the last plane,
    (-2, -1), which the compiled kernels implement; None when ``dims`` is another plane."""
    if sorted(dims) != [ndim - 2, ndim - 1]:
        return None
    return labels if dims[0] < dims[1] else (4 - labels) % 4  # rot90 in (d1, d0) = rot90 by -k in (d0, d1)


def random_rotations90(
    x: Tensor, plane: tuple[int, int] = (-2, -1), generator: GeneratorLike = None, repeats: int = 2, copies: int = 2
) -> tuple[tuple[Tensor, ...], Tensor]:
    """``repeats`` independent :func:`random_rotation90` views of the batch, stacked, each written
    ``copies`` times (one compiled pass on CPU): e.g. two views, each as a target to keep and a
    copy to corrupt in place.

    Returns:
        ``(tensors, labels)``: ``copies`` tensors of shape (repeats * B, C, *spatial) -- sample
        ``r * B + b`` is sample ``b`` rotated by ``labels[r * B + b] * 90`` degrees -- and the
        (repeats * B,) int64 labels, drawn one view after the other (the first B are the labels
        :func:`random_rotation90` draws from the same generator state).
    """
    if copies not in (1, 2) or repeats < 1:
        raise ValueError(f"copies must be 1 or 2 and repeats at least 1, got copies={copies}, repeats={repeats}")
    dims = rotation_plane(x, plane)
    gen = resolve_generator(generator, x.device)
    batch = x.shape[0]
    labels = rotation_labels(batch, repeats, gen, x.device)
    last_plane = last_plane_classes(labels, dims, x.dim())  # the compiled loop rotates in the last plane only
    rotate = implementation("rotations90", x, allowed=last_plane is not None)
    return rotate(x, labels, last_plane, dims, repeats, copies), labels


def crop_boxes(x: Tensor, starts: Tensor, size: Sequence[int]) -> Tensor:
    """Gather K same-size crops per sample.

    Args:
        x: (B, C, *spatial).
        starts: (B, K, D) int crop corners (inside the volume).
        size: crop size per spatial dim.

    Returns:
        (B, K, C, *size) copy.
    """
    spatial = spatial_shape(x)
    size = _as_tuple(size, len(spatial), "size")
    if any(s > v for s, v in zip(size, spatial)):
        raise ValueError(f"crop size {size} exceeds the volume {spatial}")
    windows = x
    for d, s in enumerate(size):  # (B, C, *n_positions, *size), a view: no copy yet
        windows = windows.unfold(2 + d, s, 1)
    batch, n_crop = starts.shape[:2]
    b = torch.arange(batch, device=x.device).view(batch, 1).expand(batch, n_crop)
    starts = starts.to(device=x.device, dtype=torch.int64)
    # advanced indices around the channel slice: result is (B, K, C, *size)
    return windows[(b, slice(None), *starts.unbind(-1))]


def resized_crops(x: Tensor, starts: Tensor, sizes: Tensor, out_size: Sequence[int]) -> Tensor:
    """Crop K boxes of different sizes per sample and resize each to ``out_size`` (linear).

    Equal to ``F.interpolate(crop, out_size, mode="bilinear"/"trilinear", align_corners=False)``
    for every crop, computed for all crops at once with one ``grid_sample``: the sampling grid
    places each output voxel where ``F.interpolate`` would read it inside its crop.

    Args:
        x: (B, C, *spatial) floating point.
        starts, sizes: (B, K, D) int crop corners and sizes (inside the volume).
        out_size: output size per spatial dim.

    Returns:
        (B, K, C, *out_size).
    """
    spatial = spatial_shape(x)
    dims = len(spatial)
    out_size = _as_tuple(out_size, dims, "out_size")
    batch, n_crop = starts.shape[:2]
    coords = []
    for d in range(dims):
        o = torch.arange(out_size[d], device=x.device, dtype=torch.float32)
        length = sizes[..., d, None].to(torch.float32)  # (B, K, 1)
        src = ((o + 0.5) * (length / out_size[d]) - 0.5).clamp(min=0.0)
        src = torch.minimum(src, length - 1)  # F.interpolate repeats the last voxel beyond the edge
        pix = starts[..., d, None].to(torch.float32) + src
        g = (2.0 * pix + 1.0) / spatial[d] - 1.0  # normalised, align_corners=False
        shape = [batch, n_crop] + [1] * dims
        shape[2 + d] = out_size[d]
        coords.append(g.view(shape).expand(batch, n_crop, *out_size))
    grid = torch.stack(coords[::-1], dim=-1)  # grid_sample wants (x=last dim, y, z=first dim)
    grid = grid.reshape(batch, n_crop * out_size[0], *out_size[1:], dims)  # crops stacked on axis 0
    out = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    out = out.view(batch, x.shape[1], n_crop, *out_size)
    return out.movedim(2, 1)


def cube_grid(x: Tensor, grid: int | Sequence[int] = 2, gap: int | Sequence[int] = 0) -> Tensor:
    """Split each volume into a grid of sub-cubes separated by gaps (Rubik's cube pretexts).

    Zhuang et al., "Self-supervised Feature Learning for 3D Medical Images by Playing a
    Rubik's Cube", MICCAI 2019; Zhu et al., "Rubik's Cube+", MedIA 2020: a 2x2x2 grid of
    sub-cubes with small gaps, whose order and orientation the network predicts (the pretext
    module draws the permutations and rotations). The grid is centred; sub-cube side
    ``(S - (g - 1) * gap) // g``.

    Args:
        x: (B, C, *spatial).
        grid: cubes per spatial dim (int or per dim).
        gap: voxels between neighbouring cubes (int or per dim).

    Returns:
        (B, prod(grid), C, *sub) with cubes in row-major grid order.
    """
    spatial = spatial_shape(x)
    dims = len(spatial)
    grid = _as_tuple(grid, dims, "grid")
    gap = _as_tuple(gap, dims, "gap")
    sub = [(s - (g - 1) * p) // g for s, g, p in zip(spatial, grid, gap)]
    if min(sub) < 1:
        raise ValueError(f"volume {spatial} too small for grid {grid} with gap {gap}")
    region = x
    for d in range(dims):
        extent = grid[d] * sub[d] + (grid[d] - 1) * gap[d]
        offset = (spatial[d] - extent) // 2
        region = region.narrow(2 + d, offset, extent).unfold(2 + d, sub[d], sub[d] + gap[d])
    # region: (B, C, *grid, *sub) -> (B, *grid, C, *sub)
    region = region.movedim(1, 1 + dims)
    return region.reshape(x.shape[0], math.prod(grid), x.shape[1], *sub)


def _scaled_boxes(
    spatial: Sequence[int],
    batch: int,
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    gen: torch.Generator | None,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """RandomResizedCrop boxes in D dims: volume fraction ~ U(scale), per-axis log aspect
    ~ U(log ratio) centred so the fraction is kept; sides relative to the volume's own shape,
    rounded and clipped to the volume (instead of torchvision's rejection loop)."""
    dims = len(spatial)
    s = torch.tensor(spatial, device=device, dtype=torch.float32)
    frac = uniform((batch, n, 1), gen, device, scale[0], scale[1])
    log_ratio = uniform((batch, n, dims), gen, device, math.log(ratio[0]), math.log(ratio[1]))
    log_ratio = log_ratio - log_ratio.mean(-1, keepdim=True)
    sides = s * frac ** (1.0 / dims) * log_ratio.exp()
    sizes = torch.minimum(sides.round().clamp(min=1), s).long()
    starts = integers(0, s.long() - sizes, (batch, n, dims), gen, device)
    return starts, sizes


class MultiCrop(NamedTuple):
    """DINO multi-crop views. ``global_views``: (B, n_global, C, *global_size); ``local_views``:
    (B, n_local, C, *local_size); ``*_starts``/``*_sizes``: (B, n, D) crop boxes in ``x``."""

    global_views: Tensor
    local_views: Tensor
    global_starts: Tensor
    global_sizes: Tensor
    local_starts: Tensor
    local_sizes: Tensor


def multi_crop(
    x: Tensor,
    n_global: int = 2,
    global_size: int | Sequence[int] = 96,
    n_local: int = 8,
    local_size: int | Sequence[int] = 48,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.4),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: GeneratorLike = None,
) -> MultiCrop:
    """DINO multi-crop: random resized crops at two scales, all samples and crops at once.

    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021
    (2 global crops covering 40-100 % and several local crops covering 5-40 % of the image);
    3D variants (DINOv2-3D-Med, 3DINO) use the same scheme on volumes. Each crop covers a random
    fraction of the volume (``*_scale``) with a random aspect jitter (``ratio``) and is resized
    linearly to the output size (:func:`resized_crops`). Flips and intensity jitter are left to the
    pretext's augmentation.

    Args:
        x: (B, C, *spatial) floating point.
        n_global, global_size, global_scale: global crops, their output size and volume fraction.
        n_local, local_size, local_scale: local crops (``n_local=0`` for none).
        ratio: aspect jitter range per axis.
        generator: generator or seed.

    Returns:
        :class:`MultiCrop`.
    """
    spatial = spatial_shape(x)
    gen = resolve_generator(generator, x.device)
    batch = x.shape[0]
    g_starts, g_sizes = _scaled_boxes(spatial, batch, n_global, global_scale, ratio, gen, x.device)
    l_starts, l_sizes = _scaled_boxes(spatial, batch, n_local, local_scale, ratio, gen, x.device)
    g_size = _as_tuple(global_size, len(spatial), "global_size")
    l_size = _as_tuple(local_size, len(spatial), "local_size")
    g_views = resized_crops(x, g_starts, g_sizes, g_size) if n_global else x.new_empty(batch, 0, x.shape[1], *g_size)
    l_views = resized_crops(x, l_starts, l_sizes, l_size) if n_local else x.new_empty(batch, 0, x.shape[1], *l_size)
    return MultiCrop(g_views, l_views, g_starts, g_sizes, l_starts, l_sizes)


class CropPair(NamedTuple):
    """Two overlapping crops. ``view1``/``view2``: (B, C, *size); ``start1``/``start2``: (B, D)
    corners in ``x``; ``overlap``: (B,) shared volume / crop volume."""

    view1: Tensor
    view2: Tensor
    start1: Tensor
    start2: Tensor
    overlap: Tensor


def overlapping_crop_pair(
    x: Tensor,
    size: int | Sequence[int],
    min_overlap: float = 0.5,
    generator: GeneratorLike = None,
    *,
    n_candidates: int = 32,
) -> CropPair:
    """Two same-size random crops per sample that share at least ``min_overlap`` of their volume.

    SimCLR (Chen et al., ICML 2020) on volumes as in nnssl / OpenMind (Wald et al., 2025): 64^3
    crops from a 192x192x64 patch, overlapping >= 50 % so both views show the same anatomy.
    The first crop is uniform; the second is the first of ``n_candidates`` shifted copies
    (per-axis shift up to ``(1 - min_overlap) * size``, a necessary condition) whose overlap
    reaches ``min_overlap``, or the first crop itself if none does (probability ~1e-8 at the
    defaults).

    Args:
        x: (B, C, *spatial).
        size: crop size (int or per dim), at most the volume.
        min_overlap: minimum overlap fraction in [0, 1].
        generator: generator or seed.
        n_candidates: shifted candidates tried per sample.

    Returns:
        :class:`CropPair`.
    """
    spatial = spatial_shape(x)
    dims, batch, dev = len(spatial), x.shape[0], x.device
    size_t = _as_tuple(size, dims, "size")
    if any(c > s for c, s in zip(size_t, spatial)):
        raise ValueError(f"crop size {size_t} exceeds the volume {spatial}")
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError("min_overlap must be in [0, 1]")
    gen = resolve_generator(generator, dev)
    s = torch.tensor(spatial, device=dev)
    c = torch.tensor(size_t, device=dev)
    start1 = integers(0, s - c, (batch, dims), gen, dev)
    reach = torch.tensor([int((1.0 - min_overlap) * v) for v in size_t], device=dev)
    shift = integers(-reach, reach, (batch, n_candidates, dims), gen, dev)
    cand = torch.minimum((start1[:, None] + shift).clamp(min=0), s - c)  # (B, N, D)
    overlap = ((c - (cand - start1[:, None]).abs()).clamp(min=0).double() / c).prod(-1)  # (B, N)
    ok = overlap >= min_overlap - 1e-12
    first = ok.to(torch.int8).argmax(1)  # first valid candidate (0 if none)
    chosen = cand[torch.arange(batch, device=dev), first]
    start2 = torch.where(ok.any(1, keepdim=True), chosen, start1)
    final = ((c - (start2 - start1).abs()).double() / c).prod(-1).float()
    views = crop_boxes(x, torch.stack([start1, start2], 1), size_t)  # (B, 2, C, *size)
    return CropPair(views[:, 0], views[:, 1], start1, start2, final)


def base_crop_boxes(
    spatial: Sequence[int], grid: int | Sequence[int] = (4, 4), axes: Sequence[int] = (0, 1)
) -> tuple[Tensor, tuple[int, ...]]:
    """Corners and size of the VoCo base crops (Wu et al., CVPR 2024): a grid over the spatial
    ``axes`` (centred, side ``S // g``), full extent along the other axes.

    Returns:
        ``(starts, size)``: (M, D) int64 corners in row-major grid order, M = prod(grid); size.
    """
    dims = len(spatial)
    axes = tuple(a % dims for a in axes)
    grid_t = _as_tuple(grid, len(axes), "grid")
    per_dim = [1] * dims
    for a, g in zip(axes, grid_t):
        per_dim[a] = g
    size = tuple(s // g for s, g in zip(spatial, per_dim))
    if min(size) < 1:
        raise ValueError(f"volume {spatial} too small for grid {grid_t}")
    offset = [(s - g * c) // 2 for s, g, c in zip(spatial, per_dim, size)]
    axes_coords = torch.meshgrid(*[torch.arange(g) * c + o for g, c, o in zip(per_dim, size, offset)], indexing="ij")
    starts = torch.stack([a.reshape(-1) for a in axes_coords], dim=1)
    return starts, size


def base_crops_grid(x: Tensor, grid: int | Sequence[int] = (4, 4), axes: Sequence[int] = (0, 1)) -> Tensor:
    """VoCo base crops: a ``grid`` (4x4) of crops over the in-plane ``axes``.

    Wu et al., "VoCo", CVPR 2024: the volume is split into 4x4 base crops in the x-y plane
    (full depth); their embeddings are the class prototypes that random crops are compared with.

    Args:
        x: (B, C, *spatial).
        grid: crops per grid axis.
        axes: spatial axes (0-based among the spatial dims) carrying the grid.

    Returns:
        (B, prod(grid), C, *base_size).
    """
    spatial = spatial_shape(x)
    starts, size = base_crop_boxes(spatial, grid, axes)
    return crop_boxes(x, starts.to(x.device).expand(x.shape[0], -1, -1), size)


def crop_overlap_ratios(starts: Tensor, size: Sequence[int], base_starts: Tensor, base_size: Sequence[int]) -> Tensor:
    """Fraction of each crop's volume that lies in each base crop (VoCo's targets).

    Args:
        starts: (..., N, D) crop corners; size: crop size.
        base_starts: (M, D) base-crop corners; base_size: base-crop size.

    Returns:
        (..., N, M) float32 in [0, 1]; rows sum to 1 when the bases tile a region containing the
        crops.
    """
    dims = starts.shape[-1]
    c = torch.tensor(_as_tuple(size, dims, "size"), device=starts.device)
    bc = torch.tensor(_as_tuple(base_size, dims, "base_size"), device=starts.device)
    a0 = starts[..., :, None, :]  # (..., N, 1, D)
    b0 = base_starts.to(starts.device)  # (M, D)
    inter = (torch.minimum(a0 + c, b0 + bc) - torch.maximum(a0, b0)).clamp(min=0)  # (..., N, M, D)
    return (inter.double().prod(-1) / math.prod(c.tolist())).float()


class VoCoCrops(NamedTuple):
    """VoCo random crops. ``crops``: (B, N, C, *size); ``targets``: (B, N, M) overlap of each crop
    with each base crop; ``starts``: (B, N, D) crop corners."""

    crops: Tensor
    targets: Tensor
    starts: Tensor


def random_crop_with_overlap_targets(
    x: Tensor,
    n_crops: int,
    size: int | Sequence[int] | None = None,
    grid: int | Sequence[int] = (4, 4),
    axes: Sequence[int] = (0, 1),
    generator: GeneratorLike = None,
) -> VoCoCrops:
    """VoCo random crops and their overlap-ratio targets with the base-crop grid.

    Wu et al., "VoCo", CVPR 2024: a random crop's target for base crop ``j`` is the fraction of
    the crop lying in base ``j``; the loss pulls the crop-base similarity (ReLU of cosine) to it.
    Crops are drawn uniformly inside the region the bases tile, so each target row sums to 1.

    Args:
        x: (B, C, *spatial).
        n_crops: random crops per sample.
        size: crop size (default: the base-crop size, as in VoCo).
        grid, axes: base-crop grid, see :func:`base_crops_grid`.
        generator: generator or seed.

    Returns:
        :class:`VoCoCrops`.
    """
    spatial = spatial_shape(x)
    dims, dev = len(spatial), x.device
    base_starts, base_size = base_crop_boxes(spatial, grid, axes)
    crop_size = base_size if size is None else _as_tuple(size, dims, "size")
    lo = base_starts.min(0).values.to(dev)
    hi = base_starts.max(0).values.to(dev) + torch.tensor(base_size, device=dev)  # tiled region [lo, hi)
    c = torch.tensor(crop_size, device=dev)
    if bool((hi - lo < c).any()):
        raise ValueError(f"crop size {crop_size} exceeds the tiled region {tuple((hi - lo).tolist())}")
    gen = resolve_generator(generator, dev)
    starts = integers(lo, hi - c, (x.shape[0], n_crops, dims), gen, dev)
    targets = crop_overlap_ratios(starts, crop_size, base_starts.to(dev), base_size)
    return VoCoCrops(crop_boxes(x, starts, crop_size), targets, starts)

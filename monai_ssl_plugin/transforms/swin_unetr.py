"""Swin UNETR pretraining augmentation (Tang et al., "Self-Supervised Pre-Training of Swin
Transformers for 3D Medical Image Analysis", CVPR 2022): 4-way rotation + cut-out of up to 30 % of
the voxels (:func:`swin_unetr_cutout`, :func:`swin_unetr_augment`).

Inputs, generators and outputs as in :mod:`.models_genesis`. Blocks are drawn in chunks until every
sample reaches its target volume (usually one or two rounds); the cut-out itself runs through
:mod:`._ops` (one compiled plane-parallel pass on CPU, tensor ops elsewhere).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ._boxes import paste_from_partners_
from ._common import open_batch, spatial_shape, stream_seeds
from ._ops import OPS, compiled
from ._random import GeneratorLike, integers, resolve_generator, uniform
from .views import last_plane_classes, random_rotations90, rotation_labels, rotation_plane

__all__ = ["swin_unetr_cutout", "swin_unetr_augment", "paste_from_partners_", "SwinUNETRViews"]


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
    _, gen, _, _, _ = open_batch(x, generator)
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
    spatial = spatial_shape(x)
    dev = x.device
    n = x.shape[0] if source is None else source.numel()
    group = group or n
    use_compiled = compiled(x)
    if rotation is not None and not use_compiled:
        raise ValueError("rotation inside the cut-out needs the compiled CPU kernels; rotate first")
    starts, ends, active = _swin_blocks(spatial, n, max_drop, max_block, tolerance, gen, dev)
    # the compiled loop seeds one noise stream per sample, the tensor form one hash seed
    seeds = stream_seeds(n, gen, dev) if use_compiled else integers(0, 2**31 - 1, (), gen, dev)
    if paste:
        first = torch.arange(n, device=dev) // group * group  # the first sample of each one's group
        partner = integers(0, group - 1, (n,), gen, dev) + first
        p_starts, p_ends, p_active = _swin_blocks(spatial, n, max_drop, max_block, tolerance, gen, dev)
    else:
        partner = torch.arange(n, device=dev)
        p_starts, p_ends, p_active = starts[:, :0], ends[:, :0], active[:, :0]
    # compiled: one plane-parallel pass (rotation, noise boxes and paste while the planes are in cache)
    return OPS["swin_cutout"].pick(use_compiled)(x, starts, ends, active, seeds, p_starts, p_ends, p_active, partner,
                                                 source=source, rotation=rotation)


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
    # compiled: the rotation runs inside the cut-out loop, which rotates in the last plane only
    if compiled(x, allowed=sorted(dims) == [x.dim() - 2, x.dim() - 1]):
        rotation = rotation_labels(batch, 2, gen, x.device)  # drawn as random_rotations90 draws them
        view, target = _swin_cutout(x, gen, max_drop, max_block, 0.05, True, source=torch.arange(batch).repeat(2),
                                    group=batch, rotation=last_plane_classes(rotation, dims, x.dim()))
    else:
        (target,), rotation = random_rotations90(x, plane, gen, repeats=2, copies=1)
        view, _ = _swin_cutout(target, gen, max_drop, max_block, 0.05, True, group=batch)
    first, second = slice(0, batch), slice(batch, 2 * batch)
    return SwinUNETRViews(view[first], view[second], target[first], target[second], rotation[first], rotation[second])

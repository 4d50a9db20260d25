"""The one block-masking routine every masked pretext uses (MAE / SparK / SimMIM, and cube masking).

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022; Tian et al., "Designing
BERT for Convolutional Networks: Sparse and Hierarchical Masked Modeling" (SparK), ICLR 2023;
Wald et al., "An OpenMind for 3D medical vision SSL", 2025 (16³ blocks, ratio 0.75 on 160³).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def random_block_mask(
    batch_size: int,
    spatial_shape: Sequence[int],
    block_size: int | Sequence[int],
    mask_ratio: float | tuple[float, float],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Keep-mask of shape (B, 1, *spatial_shape): 1 = visible voxel, 0 = masked.

    Blocks of ``block_size`` voxels tile the volume (the last block is cut at the border); exactly
    ``round(ratio * n_blocks)`` blocks are masked per sample, chosen uniformly without replacement,
    so the realised ratio is exact on the block grid. ``mask_ratio`` may be a range ``(lo, hi)``
    from which one ratio per sample is drawn (SparK-3D draws from U[0.6, 0.9]).

    Vectorised: one ``rand`` + ``argsort`` on the block grid and a nearest-neighbour upsampling; no
    Python loop over blocks or samples.
    """
    dims = len(spatial_shape)
    bs = [block_size] * dims if isinstance(block_size, int) else list(block_size)
    grid = [math.ceil(s / b) for s, b in zip(spatial_shape, bs)]
    n_blocks = math.prod(grid)
    if isinstance(mask_ratio, (tuple, list)):
        lo, hi = mask_ratio
        if not 0.0 <= lo <= hi < 1.0:
            raise ValueError(f"mask_ratio range must satisfy 0 <= lo <= hi < 1, got {mask_ratio}")
        ratios = lo + (hi - lo) * torch.rand(batch_size, generator=generator, device=device)
    else:
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        ratios = torch.full((batch_size,), float(mask_ratio), device=device)
    n_masked = torch.round(ratios * n_blocks).long()  # (B,)
    # rank of each block in a random order; the n_masked lowest ranks are masked
    ranks = torch.rand(batch_size, n_blocks, generator=generator, device=device).argsort(dim=1).argsort(dim=1)
    keep = (ranks >= n_masked[:, None]).float().view(batch_size, 1, *grid)
    for d, b in enumerate(bs):  # nearest upsampling by repeat, axis by axis (exact, no interpolation)
        keep = keep.repeat_interleave(b, dim=2 + d)
    return keep[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial_shape)].contiguous()


def resize_mask(mask: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Bring a keep-mask to another resolution (a coarser encoder stage): nearest, stays binary."""
    if tuple(mask.shape[2:]) == tuple(spatial_shape):
        return mask
    return F.interpolate(mask, size=tuple(spatial_shape), mode="nearest")

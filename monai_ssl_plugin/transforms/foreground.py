"""The pathology-preserving guard for corruptions: a corruption may destroy at most a given
fraction of the foreground (a lesion or organ mask), so a pretext cannot erase the very pathology
the downstream model must see (the review's finding 6, Wimalasiri 2026, arXiv:2605.23995, and its
finding 7's "pathology-aware pretext tasks").

:func:`protect_foreground` works on batched tensors, :func:`protect_foreground_mask` caps a
corruption's own mask (masked pretexts recompute their inputs and loss mask from it), and
:class:`ForegroundProtection` is the dictionary form for corruptions that run on data dicts.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils.type_conversion import convert_to_dst_type

__all__ = ["ForegroundProtection", "protect_foreground", "protect_foreground_mask"]


def protect_foreground_mask(
    destroyed: torch.Tensor,
    foreground: torch.Tensor,
    max_fraction: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cap the destroyed share of the foreground; return the capped destroyed mask (B, 1, *spatial).

    ``destroyed`` and ``foreground`` are (B, C, *spatial) masks; a voxel counts if any channel is
    set. Per sample, if more than ``floor(max_fraction * n_foreground)`` foreground voxels are
    destroyed, a uniformly random subset of the excess is marked as not destroyed. Random (not,
    say, the lesion border first) so the cap biases no region of the lesion. Voxels outside the
    foreground are never changed. Masked pretexts recompute their inputs and loss mask from this:
    with a keep-mask from ``masking.random_block_mask``, ``keep = ~protect_foreground_mask(keep == 0, fg, f)``.
    """
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
    d = _as_voxel_mask(destroyed)
    fg = _as_voxel_mask(foreground)
    if d.shape != fg.shape:
        raise ValueError(f"destroyed {tuple(d.shape)} and foreground {tuple(fg.shape)} masks differ in shape")
    capped = d.clone()
    for b in range(d.shape[0]):
        fg_b = fg[b].reshape(-1)
        allowed = math.floor(max_fraction * int(fg_b.sum()))
        hit = torch.nonzero(d[b].reshape(-1) & fg_b).squeeze(1)
        excess = hit.numel() - allowed
        if excess <= 0:
            continue
        # randperm on the generator's device, then move the chosen indices to the mask's device
        gen_device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(hit.numel(), generator=generator, device=gen_device).to(hit.device)
        flat = capped[b].view(-1)
        flat[hit[order[:excess]]] = False
    return capped


def protect_foreground(
    original: torch.Tensor,
    corrupted: torch.Tensor,
    foreground: torch.Tensor,
    max_fraction: float = 0.3,
    *,
    destroyed: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return ``corrupted`` with original voxels restored where it destroys too much foreground.

    All tensors are batched, (B, C, *spatial); ``foreground`` may have 1 channel. ``destroyed`` is the
    corruption's own binary mask of voxels it replaced (masked blocks, painted boxes); if omitted it
    is inferred as ``corrupted != original`` in any channel. Pass it explicitly whenever the
    corruption also changes intensities everywhere (e.g. Models Genesis' non-linear intensity map),
    otherwise every voxel counts as destroyed and too much is restored. The input is not modified.
    """
    if original.shape != corrupted.shape:
        raise ValueError(f"original {tuple(original.shape)} and corrupted {tuple(corrupted.shape)} differ in shape")
    if destroyed is None:
        destroyed = (corrupted != original).any(dim=1, keepdim=True)
    d = _as_voxel_mask(destroyed)
    capped = protect_foreground_mask(d, foreground, max_fraction, generator)
    restore = (d & ~capped).expand_as(corrupted)
    return torch.where(restore, original.to(corrupted.dtype), corrupted)


def _as_voxel_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) -> boolean (B, 1, *spatial): a voxel counts if any of its channels does."""
    m = torch.as_tensor(mask)
    if m.ndim < 4:
        raise ValueError(f"expected a batched mask (B, C, *spatial) with 2 or 3 spatial dims, got shape {tuple(m.shape)}")
    return m.bool().any(dim=1, keepdim=True)


class ForegroundProtection(Randomizable, MapTransform):
    """Dictionary form of :func:`protect_foreground`, for corruptions that run on data dicts.

    Place it right after the corruption. ``keys`` are the corrupted images; ``original_key`` holds
    the uncorrupted image (a restoration pretext's target); the foreground comes from the data dict
    under ``mask_key`` (default ``"mask"``: a lesion or organ label, nonzero = foreground, shape
    (1, *spatial) or (C, *spatial)); ``destroyed_key`` optionally names the corruption's binary mask.
    Samples without a mask pass through unchanged, so one pipeline serves labelled and unlabelled data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        original_key: str,
        mask_key: str = "mask",
        max_foreground_destroyed: float = 0.3,
        destroyed_key: str | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=False)
        if not 0.0 <= max_foreground_destroyed <= 1.0:
            raise ValueError(f"max_foreground_destroyed must be in [0, 1], got {max_foreground_destroyed}")
        self.original_key = original_key
        self.mask_key = mask_key
        self.max_foreground_destroyed = max_foreground_destroyed
        self.destroyed_key = destroyed_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.mask_key not in d:
            return d
        generator = torch.Generator().manual_seed(int(self.R.randint(0, 2**31 - 1)))
        original = torch.as_tensor(d[self.original_key])[None]
        foreground = torch.as_tensor(d[self.mask_key])[None] != 0
        destroyed = None if self.destroyed_key is None else torch.as_tensor(d[self.destroyed_key])[None] != 0
        for key in self.key_iterator(d):
            corrupted = torch.as_tensor(d[key])
            out = protect_foreground(original.to(corrupted.device), corrupted[None], foreground,
                                     self.max_foreground_destroyed, destroyed=destroyed, generator=generator)[0]
            d[key], *_ = convert_to_dst_type(out, d[key])
        return d

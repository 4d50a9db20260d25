"""The foreground guard caps the destroyed share of the pathology and leaves the rest alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_ssl_plugin.transforms.foreground import (
    ForegroundProtection,
    protect_foreground,
    protect_foreground_mask,
)

def _sphere(b: int, size: int, radius: float) -> torch.Tensor:
    z, y, x = torch.meshgrid(*(torch.arange(size, dtype=torch.float32),) * 3, indexing="ij")
    c = (size - 1) / 2
    ball = ((z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2) <= radius**2
    return ball[None, None].expand(b, 1, -1, -1, -1).clone()


@pytest.mark.parametrize("max_fraction", [0.0, 0.3, 0.75])
def test_protect_foreground_caps_destroyed_fraction(max_fraction):
    g = torch.Generator().manual_seed(0)
    b, c, size = 3, 2, 24
    original = torch.randn(b, c, size, size, size, generator=g)
    destroyed = torch.rand(b, 1, size, size, size, generator=g) < 0.8
    corrupted = torch.where(destroyed, torch.full_like(original, 9.0), original)
    fg = _sphere(b, size, 7)
    out = protect_foreground(original, corrupted, fg, max_fraction, destroyed=destroyed, generator=g)
    still = (out != original).any(1, keepdim=True)
    for i in range(b):
        n_fg = int(fg[i].sum())
        assert int((still[i] & fg[i]).sum()) <= int(max_fraction * n_fg)
        assert int((still[i] & fg[i]).sum()) == int(np.floor(max_fraction * n_fg))  # restores only the excess
    assert torch.equal(out[~fg.expand_as(out)], corrupted[~fg.expand_as(out)])  # background untouched
    restored = (destroyed & ~still).expand_as(out)
    assert torch.equal(out[restored], original[restored])  # restored voxels are the originals
    assert torch.equal(corrupted[destroyed.expand_as(out)], torch.full_like(out, 9.0)[destroyed.expand_as(out)])  # input kept


def test_protect_foreground_infers_mask_and_leaves_light_corruption():
    g = torch.Generator().manual_seed(1)
    original = torch.randn(2, 1, 16, 16, 16, generator=g)
    fg = _sphere(2, 16, 5)
    light = original.clone()
    light[:, :, :2] = 5.0  # destroys a slab outside the sphere only
    assert torch.equal(protect_foreground(original, light, fg, 0.3), light)
    heavy = torch.zeros_like(original) + 7.0  # destroys everything
    out = protect_foreground(original, heavy, fg, 0.3, generator=g)
    frac = ((out != original) & fg).sum(dim=(1, 2, 3, 4)) / fg.sum(dim=(1, 2, 3, 4))
    assert torch.all(frac <= 0.3)
    mask = protect_foreground_mask(heavy != original, fg, 0.3, generator=g)
    assert mask.shape == (2, 1, 16, 16, 16) and mask.dtype == torch.bool
    with pytest.raises(ValueError):
        protect_foreground(original, heavy, fg, 1.5)


def test_foreground_protection_dict_transform_uses_mask_key():
    original = torch.rand(1, 16, 16, 16)
    corrupted = torch.zeros_like(original)
    mask = _sphere(1, 16, 5)[0].float()
    t = ForegroundProtection(keys="image", original_key="target", mask_key="mask", max_foreground_destroyed=0.3)
    t.set_random_state(0)
    out = t({"image": corrupted, "target": original, "mask": mask})
    destroyed_fg = ((out["image"] != original) & (mask > 0)).sum() / (mask > 0).sum()
    assert float(destroyed_fg) <= 0.3
    assert torch.equal(out["image"][:, mask[0] == 0], corrupted[:, mask[0] == 0])
    # no mask in the sample: passes through unchanged
    same = t({"image": corrupted, "target": original})
    assert same["image"] is corrupted

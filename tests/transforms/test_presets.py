"""Modality presets produce the documented ranges; the foreground guard caps destroyed pathology."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from monai_ssl_plugin.transforms.presets import (
    CT_WINDOWS,
    ForegroundProtection,
    RandSpeckleNoised,
    get_preset,
    list_presets,
    protect_foreground,
    protect_foreground_mask,
)

torch.set_num_threads(1)


def _run(preset: Compose, image, seed: int = 0, **extra):
    preset.set_random_state(seed)
    return preset({"image": image, **extra})


def test_list_and_unknown():
    assert list_presets() == ["ct", "mri", "pet", "ultrasound", "xray"]
    with pytest.raises(ValueError, match="ct, mri, pet, ultrasound, xray"):
        get_preset("spect")
    with pytest.raises(ValueError, match="window"):
        get_preset("ct", level=40)
    with pytest.raises(ValueError, match="2D"):
        get_preset("xray", dims=3)
    with pytest.raises(ValueError, match="soft_tissue"):
        get_preset("ct", window="abdomen")
    assert isinstance(get_preset("mri"), Compose)


def test_ct_default_window_maps_hu_to_unit_range():
    hu = torch.linspace(-2000, 2000, 4001).reshape(1, 1, 1, 4001)
    out = _run(get_preset("ct", augment=False), hu)["image"]
    assert out.min() == 0.0 and out.max() == 1.0
    flat = out.reshape(-1)
    idx = {v: int(v + 2000) for v in (-1000, 0, 1000)}
    assert flat[idx[-1000]] == pytest.approx(0.0)
    assert flat[idx[0]] == pytest.approx(0.5)
    assert flat[idx[1000]] == pytest.approx(1.0)
    assert torch.all(flat[: idx[-1000]] == 0) and torch.all(flat[idx[1000]:] == 1)


@pytest.mark.parametrize("window", ["soft_tissue", "lung", "bone", (-100.0, 300.0)])
def test_ct_named_windows(window):
    lo, hi = CT_WINDOWS[window] if isinstance(window, str) else window
    hu = torch.tensor([lo, (lo + hi) / 2, hi]).reshape(1, 1, 1, 3)
    out = _run(get_preset("ct", augment=False, window=window), hu)["image"].reshape(-1)
    assert torch.allclose(out, torch.tensor([0.0, 0.5, 1.0]), atol=1e-6)


def test_ct_augmentation_keeps_hu_meaning():
    """Augmented CT stays in [0, 1] and moves water by at most a few HU-equivalents."""
    preset = get_preset("ct", augment=True)
    water = torch.zeros(1, 16, 16, 16)
    for seed in range(20):
        out = _run(preset, water, seed)["image"]
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
        # mean of water must stay near 0 HU: |shift| <= 10 HU -> 0.005 in the [-1000, 1000] window
        assert abs(float(out.mean()) - 0.5) <= 0.0051


def test_mri_zscore_per_channel():
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(2, 24, 24, 24, generator=g) * torch.tensor([3000.0, 40.0]).view(2, 1, 1, 1) + torch.tensor([500.0, 5.0]).view(2, 1, 1, 1)
    raw[0, 0, 0, 0] = 1e6  # an outlier the percentile clip must absorb
    for augment in (False, True):
        for seed in range(3):
            out = _run(get_preset("mri", augment=augment), raw, seed)["image"]
            mean = out.reshape(2, -1).mean(1)
            std = out.reshape(2, -1).std(1, unbiased=False)
            assert torch.allclose(mean, torch.zeros(2), atol=1e-4)
            assert torch.allclose(std, torch.ones(2), atol=1e-3)
            assert float(out.max()) < 10.0  # unclipped, the 1e6 outlier would sit near z = 100


def test_pet_suv_clip_and_scale():
    suv = torch.tensor([-1.0, 0.0, 10.0, 20.0, 35.0]).reshape(1, 1, 1, 5)
    out = _run(get_preset("pet", augment=False), suv)["image"].reshape(-1)
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    out = _run(get_preset("pet", augment=False, suv_max=10.0), suv)["image"].reshape(-1)
    assert float(out[2]) == pytest.approx(1.0)


def test_speckle_is_multiplicative_and_zero_stays_zero():
    img = torch.rand(1, 32, 32, 32) + 0.5
    img[:, :8] = 0.0
    for dist in ("gamma", "rayleigh"):
        t = RandSpeckleNoised("image", prob=1.0, distribution=dist, looks=(8.0, 8.0))
        t.set_random_state(1)
        out = t({"image": img})["image"]
        assert torch.all(out[:, :8] == 0)
        ratio = out[:, 8:] / img[:, 8:]
        assert float(ratio.min()) > 0  # never flips sign: multiplicative, positive noise
        assert float(ratio.mean()) == pytest.approx(1.0, abs=0.02)  # E[n] = 1
        assert float(ratio.std()) > 0.1  # it is noise, not a constant gain
    # works on numpy input too, and keeps the type
    t = RandSpeckleNoised("image", prob=1.0)
    assert isinstance(t({"image": np.ones((1, 4, 4), np.float32)})["image"], np.ndarray)


def test_ultrasound_preset_keeps_zero_and_range():
    img = torch.rand(1, 64, 64) * 255
    img[:, :10] = 0
    clean = _run(get_preset("ultrasound", augment=False, dims=2), img)["image"]
    assert float(clean.min()) == 0.0 and float(clean.max()) == pytest.approx(1.0)
    for seed in range(5):
        out = _run(get_preset("ultrasound", dims=2), img, seed)["image"]
        assert torch.all(out[:, :10] == 0) and float(out.min()) >= 0


def test_xray_percentile_normalisation():
    img = torch.rand(1, 128, 128) * 4000 + 100
    out = _run(get_preset("xray", augment=False, dims=2), img)["image"]
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    out = _run(get_preset("xray", dims=2), img, 3)["image"]
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_keys_configurable_and_mask_untouched():
    hu = torch.full((1, 8, 8, 8), 1000.0)
    mask = torch.ones(1, 8, 8, 8)
    preset = get_preset("ct", keys=("image", "image2"), augment=True)
    preset.set_random_state(0)
    out = preset({"image": hu, "image2": hu.clone(), "mask": mask})
    assert float(out["image"].max()) <= 1.0 and float(out["image2"].max()) <= 1.0
    assert torch.equal(torch.as_tensor(out["mask"]), mask)
    out = get_preset("pet", keys="suv", augment=False)({"suv": torch.full((1, 2, 2, 2), 10.0)})
    assert torch.allclose(torch.as_tensor(out["suv"]), torch.full((1, 2, 2, 2), 0.5))


# ------------------------------------------------------------------------------ foreground guard


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

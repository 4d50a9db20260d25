"""Modality presets: intensity normalisation and augmentation per modality, as MONAI transforms.

The pretraining bundles do not apply them: their data sources normalise every volume (nnU-Net's
scheme, or a z-score per channel for a plain NIfTI folder) and the checkpoint record carries that
normalisation to the consumers. The presets serve a user's own MONAI pipeline, and
``monai-ssl recommend`` names the one that fits a modality.

The review's finding 6 (Wimalasiri 2026, arXiv:2605.23995) is that modality-specific design is
critical: CT intensities are calibrated Hounsfield units, MRI intensities are not, ultrasound
carries multiplicative speckle and X-ray is a 2D projection. Each preset below encodes one of
those facts as MONAI dictionary transforms composed into a :class:`monai.transforms.Compose`.

Presets are *intensity-only*: they never move voxels, so a ``"mask"`` key (or any other key not
listed in ``keys``) passes through untouched and stays aligned with the image. Spatial crops and
flips belong to the pretext's view generator, which must list the mask key alongside the image.

The same module holds the pathology-preserving guard for corruptions (:func:`protect_foreground`
on batched tensors, :class:`ForegroundProtection` on data dicts): a corruption may destroy at most
a given fraction of the foreground (lesion or organ mask), so the pretext cannot erase the very
pathology the downstream model must see (finding 6, and finding 7's "pathology-aware pretext tasks").
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    ClipIntensityPercentilesd,
    Compose,
    MapTransform,
    NormalizeIntensityd,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandGaussianNoised,
    Randomizable,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
)
from monai.utils.type_conversion import convert_to_dst_type

__all__ = [
    "CT_WINDOWS",
    "ForegroundProtection",
    "RandSpeckleNoised",
    "get_preset",
    "list_presets",
    "protect_foreground",
    "protect_foreground_mask",
]

# Named CT windows as (lower, upper) HU. "default" is the wide window of Models Genesis and Swin
# UNETR pretraining ([-1000, 1000] -> [0, 1]); the others are the usual radiology level/width pairs
# (soft tissue L40/W400, lung L-600/W1500, bone L400/W1800).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "default": (-1000.0, 1000.0),
    "soft_tissue": (-160.0, 240.0),
    "lung": (-1350.0, 150.0),
    "bone": (-500.0, 1300.0),
}


class RandSpeckleNoised(RandomizableTransform, MapTransform):
    """Multiplicative speckle noise for ultrasound: ``x * n`` with ``E[n] = 1``.

    MONAI's Gaussian and Rician noise transforms are additive; ultrasound speckle is multiplicative
    (it scales with echo strength, and no echo stays no echo). ``distribution="gamma"`` draws the
    classic L-look intensity speckle ``n ~ Gamma(L, 1/L)`` (variance ``1/L``); ``"rayleigh"`` averages
    ``L`` Rayleigh amplitude draws normalised to mean 1 (fully developed speckle on envelope data).
    ``L`` is drawn per call from ``looks``: larger L = milder speckle. One noise field is shared by
    all channels of a key, because speckle is a property of the scanned tissue, not of a channel.
    """

    backend = [*MapTransform.backend]

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        distribution: str = "gamma",
        looks: tuple[float, float] = (4.0, 16.0),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if distribution not in ("gamma", "rayleigh"):
            raise ValueError(f"distribution must be 'gamma' or 'rayleigh', got {distribution!r}")
        lo, hi = looks
        if not 0 < lo <= hi:
            raise ValueError(f"looks must satisfy 0 < low <= high, got {looks}")
        self.distribution = distribution
        self.looks = (float(lo), float(hi))
        self._looks_value = self.looks[0]

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._looks_value = float(self.R.uniform(*self.looks))

    def _noise(self, spatial_shape: Sequence[int]) -> np.ndarray:
        looks = self._looks_value
        if self.distribution == "gamma":
            return self.R.gamma(shape=looks, scale=1.0 / looks, size=spatial_shape).astype(np.float32)
        n_looks = max(1, int(round(looks)))
        sigma = math.sqrt(2.0 / math.pi)  # Rayleigh(sigma) has mean sigma * sqrt(pi / 2) = 1
        draws = self.R.rayleigh(scale=sigma, size=(n_looks, *spatial_shape))
        return draws.mean(axis=0).astype(np.float32)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            noise = self._noise(tuple(img.shape[1:]))[None]  # (1, *spatial), broadcast over channels
            noise_t, *_ = convert_to_dst_type(noise, img)
            d[key] = img * noise_t
        return d


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


# --------------------------------------------------------------------------------------------------
# The presets. A builder takes (keys, augment, **options) and returns the transform list.
# --------------------------------------------------------------------------------------------------


def _ct(keys: list[str], augment: bool, *, window: str | Sequence[float] = "default") -> list:
    """CT: clip a HU window and scale it to [0, 1]; augment only by small global HU shifts/scales.

    Tissue identity in CT is carried by the absolute HU value (air -1000, fat about -100, water 0,
    bone several hundred), so gamma curves, bias fields and large rescaling are left out: they would
    make fat read as water. What stays is what scanners and reconstructions actually vary by: a
    global shift of up to +-10 HU, a global scale of +-2 % and noise of up to 10 HU std, all applied
    in HU *before* the window, so the output is still a clipped HU window in [0, 1].
    """
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ValueError(f"Unknown CT window {window!r}; choose one of: {', '.join(CT_WINDOWS)}, or pass (low, high) in HU")
        lo, hi = CT_WINDOWS[window]
    else:
        lo, hi = (float(v) for v in window)
        if not lo < hi:
            raise ValueError(f"CT window must satisfy low < high, got {tuple(window)}")
    hu_augment = [
        RandShiftIntensityd(keys, offsets=10.0, prob=0.5),
        RandScaleIntensityd(keys, factors=0.02, prob=0.5),
        RandGaussianNoised(keys, std=10.0, prob=0.2),
    ]
    window_t = ScaleIntensityRanged(keys, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    return [*hu_augment, window_t] if augment else [window_t]


def _mri(keys: list[str], augment: bool, *, lower: float = 0.5, upper: float = 99.5, nonzero: bool = False) -> list:
    """MRI: per-channel percentile clip, then per-channel z-score; augment with bias field and gamma.

    MRI intensities have no physical unit and differ by scanner and sequence, so each channel
    (sequence) is clipped at its own percentiles and z-scored on its own. The augmentations mimic
    the acquisition's real nuisances, a smooth multiplicative bias field and contrast (gamma)
    changes; they act on the clipped raw signal, before the z-score, so output stays mean 0 / std 1.
    ``nonzero=True`` z-scores only nonzero voxels (skull-stripped data with a zero background).
    """
    clip = ClipIntensityPercentilesd(keys, lower=lower, upper=upper, channel_wise=True)
    zscore = NormalizeIntensityd(keys, nonzero=nonzero, channel_wise=True)
    acquisition = [
        RandBiasFieldd(keys, degree=3, coeff_range=(0.0, 0.1), prob=0.3),
        RandAdjustContrastd(keys, gamma=(0.7, 1.5), prob=0.3),
    ]
    return [clip, *acquisition, zscore] if augment else [clip, zscore]


def _pet(keys: list[str], augment: bool, *, suv_max: float = 20.0) -> list:
    """PET: clip SUV to [0, suv_max] and scale to [0, 1]; augment by small uptake scaling.

    Expects images already in SUV (body-weight SUV needs the injected dose, patient weight and decay
    time from the DICOM header: do that conversion when building the dataset). SUV is semi-
    quantitative, so only a +-5 % global scale (calibration, uptake time) is applied, in SUV space
    before the clip. ``suv_max`` = 20 keeps typical lesion uptake unclipped; lower it for
    low-uptake tracers.
    """
    if suv_max <= 0:
        raise ValueError(f"suv_max must be positive, got {suv_max}")
    scale = ScaleIntensityRanged(keys, a_min=0.0, a_max=float(suv_max), b_min=0.0, b_max=1.0, clip=True)
    uptake = [RandScaleIntensityd(keys, factors=0.05, prob=0.3)]
    return [*uptake, scale] if augment else [scale]


def _ultrasound(
    keys: list[str],
    augment: bool,
    *,
    upper: float = 99.5,
    distribution: str = "gamma",
    looks: tuple[float, float] = (4.0, 16.0),
) -> list:
    """Ultrasound: scale [min, upper percentile] to [0, 1]; augment with multiplicative speckle.

    B-mode images are already log-compressed display values, so a robust min/percentile scaling
    suffices. The augmentations are all zero-preserving (no echo stays no echo): multiplicative
    speckle (:class:`RandSpeckleNoised`), a global gain (+-10 %), and a gamma change standing in for
    a different dynamic-range / log-compression setting.
    """
    scale = ScaleIntensityRangePercentilesd(keys, lower=0.0, upper=upper, b_min=0.0, b_max=1.0, clip=True)
    acquisition = [
        RandSpeckleNoised(keys, prob=0.5, distribution=distribution, looks=looks),
        RandScaleIntensityd(keys, factors=0.1, prob=0.3),
        RandAdjustContrastd(keys, gamma=(0.8, 1.25), prob=0.3),
    ]
    return [scale, *acquisition] if augment else [scale]


def _xray(keys: list[str], augment: bool, *, lower: float = 0.5, upper: float = 99.5) -> list:
    """X-ray (2D projection): percentile normalisation to [0, 1]; augment with exposure-like gamma.

    Radiograph grey values depend on exposure and vendor post-processing, not on a calibrated unit,
    so a percentile window is the robust normaliser. Check the photometric interpretation when
    loading DICOM: MONOCHROME1 images are inverted and must be flipped before this preset.
    """
    scale = ScaleIntensityRangePercentilesd(keys, lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)
    exposure = [RandAdjustContrastd(keys, gamma=(0.7, 1.5), prob=0.3)]
    return [scale, *exposure] if augment else [scale]


# name -> (builder, supported spatial dims)
_PRESETS: dict[str, tuple[Callable[..., list], tuple[int, ...]]] = {
    "ct": (_ct, (2, 3)),
    "mri": (_mri, (2, 3)),
    "pet": (_pet, (2, 3)),
    "ultrasound": (_ultrasound, (2, 3)),
    "xray": (_xray, (2,)),
}


def list_presets() -> list[str]:
    """Names accepted by :func:`get_preset`."""
    return sorted(_PRESETS)


def get_preset(
    name: str,
    keys: str | Sequence[str] = ("image",),
    augment: bool = True,
    dims: int = 3,
    **options: Any,
) -> Compose:
    """The modality preset ``name`` as a MONAI ``Compose`` over the dictionary ``keys``.

    ``augment=False`` gives the deterministic normalisation alone (validation, fine-tuning, export
    metadata); ``augment=True`` adds the modality's intensity augmentations. ``dims`` is the spatial
    dimensionality of the data (X-ray is 2D only). ``options`` are the preset's own settings:

    - ``ct``: ``window`` = ``"default"`` ([-1000, 1000] HU), ``"soft_tissue"``, ``"lung"``, ``"bone"``
      or a ``(low, high)`` HU pair;
    - ``mri``: ``lower``/``upper`` percentiles (0.5 / 99.5), ``nonzero`` (z-score foreground only);
    - ``pet``: ``suv_max`` (20);
    - ``ultrasound``: ``upper`` percentile (99.5), speckle ``distribution`` (``"gamma"``/``"rayleigh"``), ``looks``;
    - ``xray``: ``lower``/``upper`` percentiles.
    """
    key = name.lower().strip() if isinstance(name, str) else name
    if key not in _PRESETS:
        raise ValueError(f"Unknown modality preset {name!r}; valid presets: {', '.join(list_presets())}")
    builder, supported_dims = _PRESETS[key]
    if dims not in supported_dims:
        raise ValueError(
            f"Preset {key!r} supports dims {list(supported_dims)}, got dims={dims}"
            + (" (X-ray images are 2D projections)" if key == "xray" else "")
        )
    valid = [p.name for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for preset {key!r}; valid options: {', '.join(valid) or 'none'}")
    key_list = [keys] if isinstance(keys, str) else list(keys)
    if not key_list:
        raise ValueError("keys must name at least one image key")
    return Compose(builder(key_list, augment, **options))

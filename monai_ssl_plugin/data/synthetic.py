"""Tiny synthetic volumes and nnU-Net datasets for tests: random ellipsoid "organs", numpy only.

A "body" ellipsoid holds two foreground organs (labels 1 and 2) with smooth intensity
variation and noise. MRI-like volumes have arbitrary positive units and channel names such as
"T1" (nnU-Net then uses z-score); CT-like volumes are in Hounsfield units (air -1000, soft
tissue 40, organ 90, bone 700) with channel name "CT", so nnU-Net picks CTNormalization.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_ssl_plugin.data.nnunet_raw import RawDatasetWriter
from monai_ssl_plugin.errors import PluginError

MODALITIES = ("MRI", "CT")
# Mean intensity of (background, body, label 1, label 2) per MRI channel; later channels reuse
# the table with rolled organ contrasts so channels carry different information.
_MRI_TABLES = ((0.0, 100.0, 160.0, 60.0), (0.0, 80.0, 50.0, 170.0), (0.0, 120.0, 140.0, 90.0))
_MRI_NAMES = ("T1", "T2", "FLAIR", "PD")
_CT_TABLE = (-1000.0, 40.0, 90.0, 700.0)  # air, soft tissue, enhancing organ, bone (HU)
LABELS = {"MRI": {"background": 0, "organ_a": 1, "organ_b": 2},
          "CT": {"background": 0, "organ": 1, "bone": 2}}


def channel_names(modality: str, n_channels: int) -> list[str]:
    """nnU-Net channel names: "CT" for every CT channel, MRI sequence names otherwise."""
    if modality == "CT":
        return ["CT"] * n_channels
    return [_MRI_NAMES[c] if c < len(_MRI_NAMES) else f"MRI{c}" for c in range(n_channels)]


def smooth_field(rng: np.random.Generator, shape: Sequence[int], n_ctrl: int = 4) -> np.ndarray:
    """A random field with unit-scale values, smooth over the volume: a coarse Gaussian grid
    of ``n_ctrl`` points per axis, linearly upsampled (separable, vectorised)."""
    field = rng.standard_normal((n_ctrl,) * len(shape))
    for axis, size in enumerate(shape):
        pos = np.linspace(0.0, n_ctrl - 1, int(size))
        lo = np.minimum(np.floor(pos).astype(int), n_ctrl - 2)
        w = (pos - lo).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        field = np.take(field, lo, axis=axis) * (1 - w) + np.take(field, lo + 1, axis=axis) * w
    return field


def _random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    return q * np.sign(np.diag(r))  # uniform random orthogonal matrix


def _ellipsoid(coords: np.ndarray, center: np.ndarray, radii: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Boolean mask of an ellipsoid; ``coords`` is (ndim, *shape) in mm."""
    d = coords - center.reshape(-1, *([1] * (coords.ndim - 1)))
    local = np.tensordot(rot.T, d, axes=1)  # rotate into the ellipsoid's frame
    return (sum((local[i] / radii[i]) ** 2 for i in range(len(radii)))) <= 1.0


def synthetic_case(rng: np.random.Generator, shape: Sequence[int] = (32, 32, 32),
                   spacing: Sequence[float] = (2.0, 2.0, 2.0), n_channels: int = 1,
                   modality: str = "MRI") -> tuple[np.ndarray, np.ndarray]:
    """One case: image (C, *shape) float32 and label (*shape) uint8 in {0, 1, 2}.

    Geometry is in mm, so anisotropic ``spacing`` gives physically round organs.
    """
    if modality not in MODALITIES:
        raise PluginError(f"Unknown modality {modality!r}.", f"Use one of {MODALITIES}.")
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, dtype=np.float64)[: len(shape)]
    if len(spacing) != len(shape):
        raise PluginError(f"spacing {tuple(spacing)} does not match shape {shape}.", "Give one spacing per axis.")
    extent = np.asarray(shape) * spacing
    coords = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij"))
    center = extent / 2

    body_r = extent * rng.uniform(0.36, 0.46, len(shape))
    body = _ellipsoid(coords, center + rng.uniform(-0.03, 0.03, len(shape)) * extent, body_r, np.eye(len(shape)))
    label = np.zeros(shape, dtype=np.uint8)
    # Organs sit on opposite sides of the body centre so they rarely overlap (organ 2 wins if they do).
    u = rng.standard_normal(len(shape))
    u /= np.linalg.norm(u)
    for organ, side in ((1, 1.0), (2, -1.0)):
        r = body_r * rng.uniform(0.3, 0.45, len(shape))
        c = center + side * rng.uniform(0.4, 0.5) * body_r * u
        label[_ellipsoid(coords, c, r, _random_rotation(rng, len(shape))) & body] = organ
    tissue = np.where(body, label + 1, 0)  # 0 background, 1 body, 2 organ 1, 3 organ 2

    image = np.empty((n_channels, *shape), dtype=np.float32)
    for ch in range(n_channels):
        if modality == "CT":
            table = np.asarray(_CT_TABLE)
            img = table[tissue] + 10.0 * smooth_field(rng, shape) * (tissue > 0)  # smooth HU variation
            img += rng.normal(0.0, 15.0, shape)
            img = np.clip(img, -1024.0, 3071.0)
        else:
            base = _MRI_TABLES[ch % len(_MRI_TABLES)]
            if ch >= len(_MRI_TABLES):  # more channels than tables: permute the tissue contrasts
                base = (base[0], *np.roll(base[1:], ch // len(_MRI_TABLES)))
            table = np.asarray(base)
            bias = np.exp(0.1 * smooth_field(rng, shape))  # multiplicative coil bias
            img = table[tissue] * bias
            img = np.abs(img + rng.normal(0.0, 4.0, shape))  # magnitude images are non-negative
        image[ch] = img
    return image, label


def make_synthetic_volumes(n: int, shape: Sequence[int] = (32, 32, 32), seed: int = 0, n_channels: int = 1,
                           modality: str = "MRI", spacing: Sequence[float] = (2.0, 2.0, 2.0),
                           with_labels: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic volumes in memory: (n, C, *shape) float32, raw intensities (not normalised).

    With ``with_labels`` also returns the label maps (n, *shape) uint8. Works for 2D shapes too.
    Deterministic in ``seed``.
    """
    images = np.empty((n, n_channels, *shape), dtype=np.float32)
    labels = np.empty((n, *shape), dtype=np.uint8)
    for i in range(n):
        images[i], labels[i] = synthetic_case(np.random.default_rng([seed, i]), shape, spacing, n_channels, modality)
    return (images, labels) if with_labels else images


def make_synthetic_dataset(raw_root: str | os.PathLike, dataset_id: int = 990, name: str = "Synthetic",
                           n_labelled: int = 6, n_unlabelled: int = 6, shape: Sequence[int] = (32, 32, 32),
                           spacing: Sequence[float] = (2.0, 2.0, 2.0), n_channels: int = 1, modality: str = "MRI",
                           seed: int = 0, n_test: int = 0, overwrite: bool = False) -> Path:
    """Write a synthetic nnU-Net raw dataset ``raw_root/DatasetXXX_Name`` and return its folder.

    Cases: ``case_000..`` (imagesTr + labelsTr), ``unlabelled_000..`` (imagesUnlabelled),
    ``test_000..`` (imagesTs + labelsTs). ``spacing`` is (x, y, z) in mm. CT images are stored as
    int16 Hounsfield units, MRI as float32. Calling again with the same arguments is a no-op.
    """
    if modality not in MODALITIES:
        raise PluginError(f"Unknown modality {modality!r}.", f"Use one of {MODALITIES}.")
    if len(shape) != 3:
        raise PluginError(f"shape {tuple(shape)} is not 3D.", "nnU-Net datasets here are 3D: give (x, y, z).")
    params = dict(dataset_id=dataset_id, name=name, n_labelled=n_labelled, n_unlabelled=n_unlabelled,
                  shape=list(shape), spacing=list(spacing), n_channels=n_channels, modality=modality, seed=seed,
                  n_test=n_test)
    writer = RawDatasetWriter(raw_root, dataset_id, name, channel_names(modality, n_channels), LABELS[modality],
                              overwrite=overwrite, provenance={"generator": "make_synthetic_dataset", **params},
                              description=f"Synthetic {modality} ellipsoid organs, {tuple(shape)} voxels of "
                                          f"{tuple(spacing)} mm (monai_ssl_plugin.data.synthetic).")
    if writer.up_to_date:
        return writer.target
    with writer:
        # Distinct seed streams per split: adding unlabelled cases never changes labelled ones.
        for split, count, prefix, code in (("train", n_labelled, "case_", 0), ("unlabelled", n_unlabelled,
                                           "unlabelled_", 1), ("test", n_test, "test_", 2)):
            for i in range(count):
                image, label = synthetic_case(np.random.default_rng([seed, code, i]), shape, spacing, n_channels,
                                              modality)
                if modality == "CT":
                    image = np.round(image).astype(np.int16)
                w_label = None if split == "unlabelled" else label
                writer.add_case(split, f"{prefix}{i:03d}", image, w_label, spacing=spacing)
        return writer.commit()

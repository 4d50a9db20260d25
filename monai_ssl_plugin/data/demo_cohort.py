"""A brain-MRI demo cohort made offline from nilearn's bundled MNI152 template.

Every "subject" is the MNI152 (2009a, symmetric) T1 template and its grey/white-matter
probability maps warped by the same random smooth deformation (coarse displacement field +
small rotation and head-size scaling), then given a multiplicative bias field, a gamma contrast
change, an arbitrary intensity scale and Rician noise. Labels are the tissue classes of the
warped probability maps: 0 background (incl. CSF), 1 grey matter, 2 white matter.
Optional per-subject attributes (grey-matter atrophy, small white-matter lesions with label 3)
are recorded in ``attributes.json`` for later probes.

Scanner heterogeneity (``contrasts``, ``thick_slice_fraction``): each subject may be acquired with
a T1-, T2- or FLAIR-like contrast, made by a piecewise-linear remapping of the warped T1 through
anchors at the template's CSF, grey- and white-matter intensities (so tissue order changes: CSF
bright in T2, dark in FLAIR; grey brighter than white in both), jittered per subject, and with
thick slices along a random axis (2-3 voxels averaged, then interpolated back). A model trained
on a few labelled subjects then meets contrasts and resolutions at test time it has seen in few or
none of them: the low-label problem unlabelled scans of every kind can help with.

The volume is the brain bounding box (+4 mm) resampled to ``spacing`` and rounded up to a
multiple of 8 voxels: 80 x 96 x 88 (x, y, z) at 2 mm, i.e. (88, 96, 80) in nnU-Net's (z, y, x).
Everything is vectorised (one ``grid_sample`` per subject); no download happens at run time.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from monai_ssl_plugin.data.nnunet_raw import RawDatasetWriter
from monai_ssl_plugin.errors import PluginError

LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2}
LESION_LABEL = 3
_TEMPLATE_SPACING = 2.0  # nilearn's resolution=2 templates, mm
_MARGIN_MM = 4.0
_MULTIPLE = 8  # output shape rounded up to this many voxels per axis
# Piecewise-linear contrast maps on the template T1 scale: intensity at (0, CSF, GM, WM, 1) -> these.
# The CSF/GM/WM anchors are the template's medians of pure tissue (0.30, 0.66, 0.87).
CONTRASTS = {"T1": (0.0, 0.30, 0.66, 0.87, 1.0),
             "T2": (0.0, 1.00, 0.62, 0.38, 0.55),
             "FLAIR": (0.0, 0.12, 0.75, 0.55, 0.60)}


def load_mni_templates() -> tuple[np.ndarray, np.ndarray]:
    """(t1, gm, wm) stacked as (3, x, y, z) float32 at 2 mm, and the template's affine.

    nilearn ships these files inside its package, so this works offline. Loaded once per
    process (importing nilearn and resampling take seconds); callers get copies.
    """
    vols, affine = _load_mni_templates()
    return vols.copy(), affine.copy()


@functools.lru_cache(maxsize=1)
def _load_mni_templates() -> tuple[np.ndarray, np.ndarray]:
    try:
        from nilearn import datasets

        imgs = [datasets.load_mni152_template(resolution=2), datasets.load_mni152_gm_template(resolution=2),
                datasets.load_mni152_wm_template(resolution=2)]
    except Exception as e:  # an old/incomplete nilearn, or a build without the bundled data
        raise PluginError(f"Cannot load nilearn's bundled MNI152 templates ({type(e).__name__}: {e}).",
                          "Install nilearn>=0.10 (`pip install nilearn`); the templates ship with it.") from None
    vols = np.stack([np.asarray(i.get_fdata(), dtype=np.float32) for i in imgs])
    vols[0] /= max(float(vols[0].max()), 1e-6)  # T1 to [0, 1]
    vols[1:] = np.clip(vols[1:], 0.0, 1.0)
    return vols, np.asarray(imgs[0].affine, dtype=np.float64)


def output_geometry(templates: np.ndarray, template_affine: np.ndarray, spacing: float
                    ) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """Centre (template voxels), output shape and output affine of the brain box at ``spacing``."""
    brain = (templates[1] + templates[2]) > 0.1
    idx = np.argwhere(brain)
    lo, hi = idx.min(0), idx.max(0)
    center = (lo + hi) / 2.0
    extent_mm = (hi - lo + 1) * _TEMPLATE_SPACING + 2 * _MARGIN_MM
    shape = tuple(int(math.ceil(e / spacing / _MULTIPLE) * _MULTIPLE) for e in extent_mm)
    step = spacing / _TEMPLATE_SPACING  # output voxel size in template voxels
    # Output voxel j sits at template voxel center + (j - (n - 1) / 2) * step.
    to_template = np.eye(4)
    to_template[:3, :3] *= step
    to_template[:3, 3] = center - (np.asarray(shape) - 1) / 2.0 * step
    return center, shape, template_affine @ to_template


def _upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """(C, *coarse) -> (C, *shape), trilinear: a smooth field from a few random control points."""
    t = torch.from_numpy(coarse.astype(np.float32))[None]
    return F.interpolate(t, size=shape, mode="trilinear", align_corners=True)[0]


def base_grid(shape: tuple[int, int, int], spacing: float) -> torch.Tensor:
    """Output voxel centres in template voxel units relative to the brain centre: (x, y, z, 3)."""
    step = spacing / _TEMPLATE_SPACING
    axes = [(torch.arange(s, dtype=torch.float32) - (s - 1) / 2.0) * step for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    return (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))


def remap_contrast(t1: torch.Tensor, anchors: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear intensity map through (anchors[i], values[i]) (anchors increasing), flat beyond."""
    x = t1.clamp(float(anchors[0]), float(anchors[-1]))
    i = torch.bucketize(x, anchors[1:-1])  # segment index 0..len-2
    x0, x1, y0, y1 = anchors[i], anchors[i + 1], values[i], values[i + 1]
    return y0 + (x - x0) / (x1 - x0) * (y1 - y0)


def thick_slices(img: torch.Tensor, axis: int, factor: int) -> torch.Tensor:
    """Average ``factor`` voxels along ``axis`` and interpolate back: a thick-slice acquisition."""
    size = img.shape
    pooled = F.avg_pool1d(img.movedim(axis, -1).reshape(-1, 1, size[axis]), factor, ceil_mode=True)
    back = F.interpolate(pooled, size=size[axis], mode="linear", align_corners=False)
    return back.reshape(*[s for d, s in enumerate(size) if d != axis], size[axis]).movedim(-1, axis)


def _scanner(t1: torch.Tensor, rng: np.random.Generator, contrasts: tuple[str, ...], thick_slice_fraction: float,
             anchors: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """The subject's contrast (jittered anchors) and slice thickness; drawn from its own stream."""
    contrast = contrasts[int(rng.integers(len(contrasts)))]
    values = torch.tensor(CONTRASTS[contrast], dtype=torch.float32)
    values[1:] = (values[1:] + torch.from_numpy(rng.uniform(-0.05, 0.05, 4).astype(np.float32))).clamp(0.02, 1.0)
    img = t1 if contrast == "T1" and len(contrasts) == 1 else remap_contrast(t1, anchors, values)
    attrs: dict[str, Any] = {"contrast": contrast, "thick_slice_axis": None, "thick_slice_factor": 1}
    if rng.random() < thick_slice_fraction:
        axis, factor = int(rng.integers(3)), int(rng.integers(2, 4))
        img = thick_slices(img, axis, factor)
        attrs.update(thick_slice_axis=axis, thick_slice_factor=factor)
    return img, attrs


def _warp(templates: torch.Tensor, grid: torch.Tensor, center: np.ndarray, spacing: float,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The templates sampled through a random pose, head size and smooth warp: (t1, gm, wm, scale)."""
    shape = tuple(grid.shape[:3])
    # grid_sample wants coordinates in [-1, 1] (align_corners=True) with the last axis ordered
    # (W, H, D) = our (z, y, x): fold that scaling and axis flip into one affine map.
    size = np.asarray(templates.shape[1:], dtype=np.float64)
    to_norm = np.diag(2.0 / (size - 1))[::-1]  # rows (z, y, x)
    # Random similarity transform (head size and pose) about the brain centre: sampling the
    # template at scale * R * x makes the subject's head 1/scale times as large.
    scale = float(np.clip(rng.normal(1.0, 0.03), 0.93, 1.07))
    rot = _rotation(np.deg2rad(rng.normal(0.0, 3.0, 3).clip(-7, 7)))
    matrix = torch.from_numpy((to_norm @ (scale * rot)).T.astype(np.float32))
    offset = torch.from_numpy((to_norm @ center - 1.0).astype(np.float32))
    # Smooth non-linear warp: ~2 mm std displacement on a control grid every ~30 mm.
    ctrl = tuple(max(2, int(round(s * spacing / 30.0)) + 1) for s in shape)
    coarse = np.einsum("ij,j...->i...", to_norm, rng.normal(0.0, 2.0 / _TEMPLATE_SPACING, (3, *ctrl)))
    sample_grid = grid @ matrix + offset + _upsample(coarse, shape).permute(1, 2, 3, 0)
    # ``templates`` in channels-last layout makes CPU grid_sample faster (one gather for all maps).
    t1, gm, wm = F.grid_sample(templates[None], sample_grid[None], mode="bilinear", padding_mode="zeros",
                               align_corners=True)[0].contiguous()
    return t1, gm, wm, scale


def _tissue_labels(gm: torch.Tensor, wm: torch.Tensor) -> torch.Tensor:
    """argmax over (background = 1 - gm - wm, gm, wm), written as comparisons (no stacked maps to reduce)."""
    label = torch.where(wm >= gm, torch.where(2 * wm + gm >= 1, 2, 0), torch.where(2 * gm + wm >= 1, 1, 0))
    return label.to(torch.uint8)


def _add_lesions(t1: torch.Tensor, label: torch.Tensor, n_lesions: int, spacing: float, csf: float,
                 rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """Small T1-hypointense spheres inside white matter, labelled in place; (image, lesion voxels)."""
    wm_idx = torch.nonzero(label == 2)
    if not len(wm_idx):
        return t1, 0
    shape = tuple(label.shape)
    pos = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    for _ in range(n_lesions):
        c = wm_idx[int(rng.integers(len(wm_idx)))].float().view(3, 1, 1, 1)
        r = float(rng.uniform(2.5, 5.0)) / spacing  # radius in voxels
        dist = ((pos - c) ** 2).sum(0).sqrt()
        m = ((r - dist) + 0.5).clamp(0.0, 1.0)  # one-voxel soft edge
        t1 = t1 * (1 - m) + m * csf
        label[m > 0.5] = LESION_LABEL
    return t1, int((label == LESION_LABEL).sum())


def _acquire(t1: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Acquisition: contrast (gamma), smooth multiplicative bias, arbitrary scale, Rician noise."""
    shape = tuple(t1.shape)
    gamma = float(np.exp(rng.normal(0.0, 0.15)).clip(0.7, 1.4))
    bias = torch.exp(0.15 * _upsample(rng.normal(0.0, 1.0, (1, 4, 4, 4)), shape)[0])
    scale_i = float(rng.uniform(300.0, 1000.0))
    img = t1.clamp(min=0.0) ** gamma * bias * scale_i
    sigma = float(rng.uniform(0.01, 0.04)) * scale_i
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))  # torch's normal sampler beats numpy's here
    n1, n2 = torch.randn((2, *shape), generator=gen) * sigma
    img = torch.sqrt((img + n1) ** 2 + n2 ** 2)  # magnitude of complex Gaussian noise = Rician
    return img, {"gamma": round(gamma, 4), "intensity_scale": round(scale_i, 2),
                 "noise_sigma_rel": round(sigma / scale_i, 4)}


def _volumes(label: torch.Tensor, spacing: float, lesion_voxels: int, n_lesions: int) -> dict[str, Any]:
    """Tissue volumes in ml, the attributes a probe predicts."""
    voxel_ml = spacing ** 3 / 1000.0
    gm_v, wm_v = int((label == 1).sum()), int((label == 2).sum())
    return {"gm_volume_ml": round(gm_v * voxel_ml, 2), "wm_volume_ml": round(wm_v * voxel_ml, 2),
            "brain_volume_ml": round((gm_v + wm_v + lesion_voxels) * voxel_ml, 2), "n_lesions": int(n_lesions),
            "lesion_volume_ml": round(lesion_voxels * voxel_ml, 3)}


def _subject(templates: torch.Tensor, grid: torch.Tensor, center: np.ndarray, spacing: float,
             rng: np.random.Generator, atrophy: bool, n_lesions: int, tissue_means: dict[str, float],
             scanner: tuple | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One warped subject: image (x, y, z) int16, label (x, y, z) uint8 and its attributes.

    ``grid`` comes from :func:`base_grid`; ``templates`` is (3, x, y, z): T1, GM, WM. ``scanner``:
    the arguments of :func:`_scanner` after the image (its own generator first), or None for T1 only.
    The steps draw from ``rng`` in a fixed order (warp, atrophy, lesions, acquisition), so a seed
    always gives the same cohort.
    """
    t1, gm, wm, scale = _warp(templates, grid, center, spacing, rng)
    attrs: dict[str, Any] = {"head_scale": round(1.0 / scale, 4), "atrophy": bool(atrophy), "atrophy_strength": 0.0}
    if atrophy:  # thinner cortex: grey matter partly replaced by CSF, in the maps and in the image
        a = float(rng.uniform(0.2, 0.4))
        t1 = t1 - a * gm * (tissue_means["gm"] - tissue_means["csf"])
        gm = gm * (1.0 - a)
        attrs["atrophy_strength"] = round(a, 4)
    label = _tissue_labels(gm, wm)
    lesion_voxels = 0
    if n_lesions:
        t1, lesion_voxels = _add_lesions(t1, label, n_lesions, spacing, tissue_means["csf"], rng)
    if scanner is not None:
        t1, scanner_attrs = _scanner(t1, *scanner)
        attrs.update(scanner_attrs)
    img, acquisition = _acquire(t1, rng)
    attrs.update(**acquisition, **_volumes(label, spacing, lesion_voxels, n_lesions))
    # Stored as int16 like scanner output: half the bytes to gzip, and noise >> rounding error.
    return img.round().numpy().astype(np.int16), label.numpy(), attrs


def make_demo_dataset(raw_root: str | os.PathLike, dataset_id: int = 501, name: str = "MNIBrainTissue",
                      n_labelled: int = 12, n_unlabelled: int = 24, spacing: float = 2.0, seed: int = 0,
                      n_test: int = 4, atrophy_fraction: float = 0.3, lesion_fraction: float = 0.0,
                      contrasts: tuple[str, ...] | list[str] = ("T1",), thick_slice_fraction: float = 0.0,
                      overwrite: bool = False) -> Path:
    """Write the demo cohort as nnU-Net raw dataset ``raw_root/DatasetXXX_Name``; returns its folder.

    Args:
        n_labelled / n_unlabelled / n_test: subjects in imagesTr(+labelsTr) / imagesUnlabelled /
            imagesTs(+labelsTs).
        spacing: isotropic voxel size in mm (2 mm: 80 x 96 x 88 voxels; 4 mm: 40 x 48 x 48).
        atrophy_fraction: share of subjects with grey-matter atrophy (attribute ``atrophy``).
        lesion_fraction: share of subjects with 1-3 white-matter lesions; when > 0 the label
            ``lesion`` (3) is added.
        contrasts: the MRI contrasts subjects are drawn from, uniformly (``T1``, ``T2``, ``FLAIR``);
            more than one names the channel ``MRI`` instead of ``T1``.
        thick_slice_fraction: share of subjects acquired with thick slices along a random axis.
        overwrite: replace an existing different dataset; the same call twice is a no-op.
    """
    if spacing <= 0 or not math.isfinite(spacing):
        raise PluginError(f"spacing {spacing} is not a positive number of mm.", "Use e.g. spacing=2.0.")
    contrasts = tuple(contrasts)
    unknown = sorted(set(contrasts) - set(CONTRASTS)) or ([] if contrasts else ["(none)"])
    if unknown:
        raise PluginError(f"Unknown contrast(s) {', '.join(unknown)}.", f"Choose from {', '.join(CONTRASTS)}.")
    for key, frac in (("atrophy_fraction", atrophy_fraction), ("lesion_fraction", lesion_fraction),
                      ("thick_slice_fraction", thick_slice_fraction)):
        if not 0.0 <= frac <= 1.0:
            raise PluginError(f"{key}={frac} is not in [0, 1].", f"Give {key} as a fraction of subjects.")
    params = dict(dataset_id=dataset_id, name=name, n_labelled=n_labelled, n_unlabelled=n_unlabelled,
                  spacing=float(spacing), seed=seed, n_test=n_test, atrophy_fraction=atrophy_fraction,
                  lesion_fraction=lesion_fraction,
                  **({"contrasts": list(contrasts), "thick_slice_fraction": thick_slice_fraction}
                     if contrasts != ("T1",) or thick_slice_fraction else {}))
    labels = dict(LABELS, **({"lesion": LESION_LABEL} if lesion_fraction > 0 else {}))
    writer = RawDatasetWriter(
        raw_root, dataset_id, name, ["T1" if contrasts == ("T1",) else "MRI"], labels, overwrite=overwrite,
        provenance={"generator": "make_demo_dataset", **params},
        description=f"Synthetic brain MRI cohort ({'/'.join(contrasts)}): random smooth deformations of the "
                    "MNI152 2009a template (via nilearn) with bias field, gamma and Rician noise; labels 1 grey "
                    "matter, 2 white matter (monai_ssl_plugin.data.demo_cohort).")
    if writer.up_to_date:
        return writer.target

    vols, affine = load_mni_templates()
    center, shape, out_affine = output_geometry(vols, affine, float(spacing))
    t1, gm, wm = vols
    # Template intensities of pure tissues, used to keep the image consistent with edited maps.
    tissue_means = {"gm": float(np.median(t1[gm > 0.7])), "wm": float(np.median(t1[wm > 0.7])),
                    "csf": float(np.median(t1[((gm + wm) < 0.2) & (t1 > 0.02)]))}
    templates = torch.from_numpy(vols)[None].contiguous(memory_format=torch.channels_last_3d)[0]
    grid = base_grid(shape, float(spacing))
    # One thread: per-subject tensors are small, so extra threads mostly spin, costing CPU time
    # without saving wall time (restored afterwards).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    anchors = torch.tensor([0.0, tissue_means["csf"], tissue_means["gm"], tissue_means["wm"], 1.0])
    heterogeneous = contrasts != ("T1",) or thick_slice_fraction > 0
    try:
        return _write_subjects(writer, templates, grid, center, out_affine, float(spacing), seed, tissue_means,
                               (n_labelled, n_unlabelled, n_test), atrophy_fraction, lesion_fraction,
                               (contrasts, thick_slice_fraction, anchors) if heterogeneous else None)
    finally:
        torch.set_num_threads(threads)


def _write_subjects(writer: RawDatasetWriter, templates: torch.Tensor, grid: torch.Tensor, center: np.ndarray,
                    out_affine: np.ndarray, spacing: float, seed: int, tissue_means: dict[str, float],
                    counts: tuple[int, int, int], atrophy_fraction: float, lesion_fraction: float,
                    scanner: tuple | None) -> Path:
    """Generate and write every subject (train, unlabelled, test), then attributes.json; commit."""
    attributes: dict[str, dict[str, Any]] = {}
    splits = (("train", "brain_", 0), ("unlabelled", "brain_u", 1), ("test", "brain_t", 2))
    with torch.no_grad(), writer:
        for (split, prefix, code), count in zip(splits, counts):
            for i in range(count):
                # One stream per (seed, split, subject): adding subjects never changes the others.
                rng = np.random.default_rng([seed, code, i])
                atrophy = bool(rng.random() < atrophy_fraction)
                n_les = int(rng.integers(1, 4)) if rng.random() < lesion_fraction else 0
                # the scanner draws from a stream of its own, so T1-only cohorts stay what they were
                scan = None if scanner is None else (np.random.default_rng([seed, code, i, 1]), *scanner)
                image, label, attrs = _subject(templates, grid, center, spacing, rng, atrophy, n_les, tissue_means,
                                               scan)
                case_id = f"{prefix}{i:03d}"
                writer.add_case(split, case_id, image, None if split == "unlabelled" else label, affine=out_affine)
                attributes[case_id] = {"split": split, **attrs}
        writer.add_file("attributes.json", json.dumps(attributes, indent=1))
        return writer.commit()

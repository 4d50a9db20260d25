"""Tiny synthetic lesion volumes for the fine-tuning bundles: one cohort, three tasks.

Each case is a synthetic MRI-like body with two organs (``data.synthetic``) plus one or two spherical
lesions. The lesions are bright in class-1 cases and dark in class-0 cases, so the same volumes give

- classification: ``label`` = 0/1 (global class), ``datalist_classification.json``;
- detection: ``box`` = ``[[cx, cy, cz, w, h, d], ...]`` in voxel coordinates (``cccwhd``), ``label`` = 0 per box
  (one class, "lesion"), ``datalist_detection.json``;
- segmentation: ``label`` = lesion mask file, ``datalist_segmentation.json``.

Files: ``imagesTr/case_XXX.nii.gz`` (float32) and ``labelsTr/case_XXX.nii.gz`` (uint8), axes (x, y, z) as
MONAI's ``LoadImage`` returns them. Datalists use the Decathlon layout (``training`` / ``validation``)
with paths relative to the dataset folder (``load_decathlon_datalist(..., base_dir=dataset_dir)``).

    python -m monai_ssl_plugin.monai_bundles.demo_data OUT_DIR [--n_cases 12] [--size 32]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_ssl_plugin.checkpoint import atomic_write_text
from monai_ssl_plugin.data.synthetic import synthetic_case

DATALISTS = {"classification": "datalist_classification.json", "detection": "datalist_detection.json",
             "segmentation": "datalist_segmentation.json"}


def lesion_case(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], cls: int
                ) -> tuple[np.ndarray, np.ndarray, list[list[float]]]:
    """image (1, *shape) float32, lesion mask (*shape) uint8, boxes (cccwhd, voxels)."""
    image, _ = synthetic_case(rng, shape, spacing, 1, "MRI")
    mask = np.zeros(shape, dtype=np.uint8)
    grid = np.stack(np.meshgrid(*[np.arange(s) + 0.5 for s in shape], indexing="ij"))
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        r = float(rng.uniform(2.5, 4.5))
        c = np.array([rng.uniform(r + 2, s - r - 2) for s in shape])
        ball = ((grid - c.reshape(-1, 1, 1, 1)) ** 2).sum(0) <= r * r
        mask[ball] = 1
        boxes.append([*[float(round(v, 2)) for v in c], *[float(round(2 * r, 2))] * 3])
    lesion = 220.0 if cls == 1 else 15.0
    image[0][mask > 0] = lesion + rng.normal(0.0, 6.0, int(mask.sum()))
    return image.astype(np.float32), mask, boxes


def make_lesion_dataset(output_dir: str | os.PathLike, n_cases: int = 12, n_val: int = 2, size: int = 32,
                        spacing: float = 1.5, seed: int = 0) -> Path:
    """Write the cohort and its three datalists to ``output_dir``; returns the folder. Idempotent."""
    out = Path(output_dir)
    params = {"n_cases": n_cases, "n_val": n_val, "size": size, "spacing": spacing, "seed": seed}
    stamp = out / "dataset.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("params") == params:
        return out
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    shape, sp = (size,) * 3, (spacing,) * 3
    affine = np.diag([*sp, 1.0])
    rows = {k: [] for k in DATALISTS}
    for i in range(n_cases):
        cls = i % 2
        image, mask, boxes = lesion_case(np.random.default_rng([seed, i]), shape, sp, cls)
        img_rel, lab_rel = f"imagesTr/case_{i:03d}.nii.gz", f"labelsTr/case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image[0], affine), str(out / img_rel))
        nib.save(nib.Nifti1Image(mask, affine), str(out / lab_rel))
        rows["classification"].append({"image": img_rel, "label": cls})
        rows["detection"].append({"image": img_rel, "box": boxes, "label": [0] * len(boxes)})
        rows["segmentation"].append({"image": img_rel, "label": lab_rel})
    for task, name in DATALISTS.items():
        items = rows[task]
        split = {"training": items[: len(items) - n_val], "validation": items[len(items) - n_val:]}
        atomic_write_text(json.dumps(split, indent=1), out / name)
    atomic_write_text(json.dumps({"description": "Synthetic MRI-like volumes with bright (class 1) or dark (class 0) "
                                                 "spherical lesions (monai_ssl_plugin.monai_bundles.demo_data)",
                                  "axis_order": "monai", "spacing": list(sp), "normalization": "ZScoreNormalization",
                                  "params": params}, indent=1), stamp)
    return out


if __name__ == "__main__":
    import fire

    fire.Fire(make_lesion_dataset)

"""Write an nnU-Net v2 raw dataset atomically, with an extra folder of unlabelled images.

Layout written (``file_ending`` is always ``.nii.gz``)::

    DatasetXXX_Name/
        dataset.json                  channel_names, labels (incl. background), numTraining, file_ending
        imagesTr/{case}_{ch:04d}.nii.gz
        labelsTr/{case}.nii.gz
        imagesUnlabelled/{case}_{ch:04d}.nii.gz   ignored by nnU-Net, read by our sources
        imagesTs/{case}_{ch:04d}.nii.gz           optional
        labelsTs/{case}.nii.gz                    optional ground truth of the test cases

The dataset is built in a hidden temporary folder next to the target and renamed into place at
the end, so a crash never leaves a half-written dataset that nnU-Net would happily plan on.
Arrays are given in NIfTI voxel order (x, y, z) with a spacing in mm; nnU-Net's readers then see
them as (z, y, x).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet_paths import dataset_prefix

FILE_ENDING = ".nii.gz"
SPLITS = {"train": ("imagesTr", "labelsTr"), "unlabelled": ("imagesUnlabelled", None), "test": ("imagesTs", "labelsTs")}
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Key under which dataset.json records who wrote it; nnU-Net ignores unknown keys.
PROVENANCE_KEY = "monai_ssl_plugin"


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name, e.g. ``Dataset990_Synthetic``."""
    if not (0 < int(dataset_id) < 1000):
        raise PluginError(f"Dataset id {dataset_id} is out of range.", "nnU-Net dataset ids are integers from 1 to 999.")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise PluginError(f"Dataset name {name!r} has characters nnU-Net does not accept.",
                          "Use letters, digits, '-' and '_' only.")
    return f"{dataset_prefix(int(dataset_id))}{name}"


def nifti_affine(spacing: Sequence[float], origin: Sequence[float] | None = None) -> np.ndarray:
    """Axis-aligned voxel-to-world matrix for ``spacing`` (x, y, z) in mm."""
    affine = np.diag([float(s) for s in spacing] + [1.0])
    if origin is not None:
        affine[:3, 3] = [float(o) for o in origin]
    return affine


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> None:
    """Save one NIfTI with both qform and sform set, so SimpleITK and nibabel agree on geometry."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, os.fspath(path))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class RawDatasetWriter:
    """Collects cases into a temporary folder; :meth:`commit` renames it to ``raw_root/DatasetXXX_Name``.

    Use as a context manager: leaving the block without :meth:`commit` (or by an exception)
    deletes the temporary folder. ``provenance`` (e.g. the generator's parameters) is stored in
    dataset.json; when the target already holds a dataset with the same provenance,
    :attr:`up_to_date` is True and generators may skip the work.

    Args:
        raw_root: the ``nnUNet_raw`` folder (created if missing).
        dataset_id, name: give the folder name ``DatasetXXX_Name``.
        channel_names: one name per input channel, e.g. ``["T1"]`` or ``["CT"]`` (nnU-Net picks
            CTNormalization for "CT", z-score otherwise).
        labels: ``{"background": 0, "organ": 1, ...}``; background is required.
        overwrite: replace an existing, different dataset at the target.
        description: free text for dataset.json.
        provenance: JSON-serialisable record of how the data was made.
    """

    def __init__(self, raw_root: str | os.PathLike, dataset_id: int, name: str, channel_names: Sequence[str],
                 labels: Mapping[str, int], *, overwrite: bool = False, description: str = "",
                 provenance: Mapping[str, Any] | None = None):
        self.raw_root = Path(raw_root)
        self.folder_name = dataset_folder_name(dataset_id, name)
        self.target = self.raw_root / self.folder_name
        self.channel_names = [str(c) for c in channel_names]
        if not self.channel_names:
            raise PluginError("No channel names given.", "Pass one name per input channel, e.g. ['T1'] or ['CT'].")
        self.labels = {str(k): int(v) for k, v in labels.items()}
        if self.labels.get("background") != 0:
            raise PluginError(f"Labels {self.labels} lack 'background': 0.", "nnU-Net requires background to be label 0.")
        self.overwrite = overwrite
        self.description = description
        self.provenance = dict(provenance) if provenance is not None else None
        self.counts = {split: 0 for split in SPLITS}
        self._hashes: dict[str, str] = {}
        self._tmp: Path | None = None
        self._committed = False
        self._check_id_is_free(int(dataset_id))

    # -- checks ---------------------------------------------------------------------------
    def _check_id_is_free(self, dataset_id: int) -> None:
        if not self.raw_root.is_dir():
            return
        prefix = dataset_prefix(dataset_id)
        others = sorted(p.name for p in self.raw_root.iterdir() if p.is_dir() and p.name.startswith(prefix)
                        and p.name != self.folder_name)
        if others:
            raise PluginError(f"Dataset id {dataset_id} is already used by {others[0]} in {self.raw_root}.",
                              "Choose another dataset_id or remove that folder (nnU-Net needs unique ids).")

    @property
    def up_to_date(self) -> bool:
        """True when the target exists and was written with the same provenance (nothing to redo)."""
        if self.provenance is None or self.overwrite:
            return False
        existing = _read_json(self.target / "dataset.json")
        return bool(existing) and existing.get(PROVENANCE_KEY, {}).get("provenance") == json.loads(
            json.dumps(self.provenance))

    # -- writing --------------------------------------------------------------------------
    def __enter__(self) -> "RawDatasetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._committed:
            self.abort()

    def _tmp_folder(self) -> Path:
        if self._tmp is None:
            self.raw_root.mkdir(parents=True, exist_ok=True)
            # Hidden and without the "Dataset" prefix, so nnU-Net never mistakes it for a dataset.
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder_name}.", suffix=".tmp", dir=self.raw_root))
        return self._tmp

    def _write(self, array: np.ndarray, affine: np.ndarray, rel: str) -> None:
        path = self._tmp_folder() / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        save_nifti(array, affine, path)
        # Hash the array, not the .gz bytes: gzip headers carry a timestamp.
        h = hashlib.sha256(f"{rel}|{array.dtype.str}|{array.shape}|".encode())
        h.update(np.ascontiguousarray(affine, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(array).tobytes())
        self._hashes[rel] = h.hexdigest()

    def add_case(self, split: str, case_id: str, image: np.ndarray, label: np.ndarray | None = None, *,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), affine: np.ndarray | None = None) -> None:
        """Write one case.

        Args:
            split: "train" (needs a label), "unlabelled" or "test" (label optional).
            case_id: file stem, letters/digits/``_-.``.
            image: (C, x, y, z), or (x, y, z) for one channel; written with its own dtype.
            label: (x, y, z) integer map with values in ``labels``.
            spacing: voxel size (x, y, z) in mm, used when ``affine`` is None.
        """
        if split not in SPLITS:
            raise PluginError(f"Unknown split {split!r}.", f"Use one of {sorted(SPLITS)}.")
        if not _CASE_ID.fullmatch(case_id):
            raise PluginError(f"Case id {case_id!r} is not a valid file stem.", "Use letters, digits and _-. only.")
        image = np.asarray(image)
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[0] != len(self.channel_names):
            raise PluginError(f"Case {case_id}: image shape {image.shape} is not (C={len(self.channel_names)}, x, y, z).",
                              "Pass one 3D array per channel named in channel_names.")
        images_dir, labels_dir = SPLITS[split]
        if split == "train" and label is None:
            raise PluginError(f"Training case {case_id} has no label.", "Pass a label map or use split='unlabelled'.")
        affine = nifti_affine(spacing) if affine is None else np.asarray(affine, dtype=np.float64)
        for c in range(image.shape[0]):
            self._write(image[c], affine, f"{images_dir}/{case_id}_{c:04d}{FILE_ENDING}")
        if label is not None and labels_dir is not None:
            label = np.asarray(label)
            if label.shape != image.shape[1:]:
                raise PluginError(f"Case {case_id}: label shape {label.shape} differs from image {image.shape[1:]}.",
                                  "Give the label on the image grid.")
            bad = set(np.unique(label).tolist()) - set(self.labels.values())
            if bad:
                raise PluginError(f"Case {case_id}: label values {sorted(bad)} are not in labels {self.labels}.",
                                  "Add them to labels or fix the label map.")
            self._write(label.astype(np.uint8 if label.max() < 256 else np.uint16), affine,
                        f"{labels_dir}/{case_id}{FILE_ENDING}")
        self.counts[split] += 1

    def add_file(self, rel_path: str, text: str) -> None:
        """Add a small text file (e.g. ``attributes.json``) at ``rel_path`` inside the dataset."""
        path = self._tmp_folder() / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self._hashes[rel_path] = hashlib.sha256(text.encode()).hexdigest()

    def dataset_json(self) -> dict[str, Any]:
        """The dataset.json nnU-Net reads (plus our counts and provenance, which it ignores)."""
        content = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(self._hashes.items())).encode()).hexdigest()
        return {
            "name": self.folder_name.split("_", 1)[1],
            "description": self.description,
            "channel_names": {str(i): n for i, n in enumerate(self.channel_names)},
            "labels": self.labels,
            "numTraining": self.counts["train"],
            "file_ending": FILE_ENDING,
            "numUnlabelled": self.counts["unlabelled"],
            "numTest": self.counts["test"],
            PROVENANCE_KEY: {"provenance": self.provenance, "content_sha256": content,
                             "unlabelled_folder": "imagesUnlabelled"},
        }

    def commit(self) -> Path:
        """Write dataset.json and move the dataset into place; returns the dataset folder."""
        if self.counts["train"] == 0 and self.counts["unlabelled"] == 0:
            raise PluginError(f"No cases were added to {self.folder_name}.", "Add at least one case before commit().")
        tmp = self._tmp_folder()
        for folder in SPLITS["train"]:  # nnU-Net expects imagesTr/labelsTr even with no labelled case
            (tmp / folder).mkdir(exist_ok=True)
        meta = self.dataset_json()
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
        if self.target.exists():
            old = _read_json(self.target / "dataset.json") or {}
            same = old.get(PROVENANCE_KEY, {}).get("content_sha256") == meta[PROVENANCE_KEY]["content_sha256"]
            if same:  # identical content: keep the existing files, nothing to replace
                self.abort()
                self._committed = True
                return self.target
            if not self.overwrite:
                self.abort()
                raise PluginError(f"{self.target} already holds a different dataset.",
                                  "Pass overwrite=True to replace it, or choose another dataset id/name.")
            # Move the old one aside first: at no moment is a half dataset visible at the target.
            trash = Path(tempfile.mkdtemp(prefix=f".{self.folder_name}.", suffix=".old", dir=self.raw_root))
            os.replace(self.target, trash / "old")
            os.replace(tmp, self.target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, self.target)
        self._tmp = None
        self._committed = True
        return self.target

    def abort(self) -> None:
        """Delete the temporary folder (nothing is left behind)."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def write_raw_dataset(raw_root: str | os.PathLike, dataset_id: int, name: str, channel_names: Sequence[str],
                      labels: Mapping[str, int], training: Sequence[tuple[str, np.ndarray, np.ndarray]],
                      unlabelled: Sequence[tuple[str, np.ndarray]] = (),
                      test: Sequence[tuple[str, np.ndarray, np.ndarray | None]] = (), *,
                      spacing: Sequence[float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                      description: str = "") -> Path:
    """Write a whole raw dataset from in-memory arrays in one call (see :class:`RawDatasetWriter`).

    ``training``: ``(case_id, image, label)``; ``unlabelled``: ``(case_id, image)``;
    ``test``: ``(case_id, image, label_or_None)``. Images are (C, x, y, z) or (x, y, z).
    """
    with RawDatasetWriter(raw_root, dataset_id, name, channel_names, labels, overwrite=overwrite,
                          description=description) as w:
        for case_id, image, label in training:
            w.add_case("train", case_id, image, label, spacing=spacing)
        for case_id, image in unlabelled:
            w.add_case("unlabelled", case_id, image, spacing=spacing)
        for case_id, image, label in test:
            w.add_case("test", case_id, image, label, spacing=spacing)
        return w.commit()

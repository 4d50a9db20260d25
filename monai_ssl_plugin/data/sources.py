"""Unlabelled data sources: one face for NIfTI folders and nnU-Net raw / preprocessed datasets.

Every source yields float32 volumes (C, *spatial) in nnU-Net's axis order (z, y, x for NIfTI:
the order nnU-Net's readers produce, after the plans' ``transpose_forward`` when plans are used),
already intensity-normalised, and describes itself in ``info`` (axis order, spacing,
normalisation per channel, ...). Pretraining records ``info`` in the checkpoint, so the weights
always say what data they saw.

- NIfTI folder / nnU-Net raw dataset: read with nnU-Net's image reader, z-score per channel
  ("ZScoreNormalization" over the whole volume), native spacing. With ``plans`` each case goes
  through nnU-Net's own preprocessor (crop to non-zero, the plans' normalisation such as
  CTNormalization, resampling to the configuration's spacing).
- nnU-Net preprocessed dataset: the configuration's data folder read with nnU-Net's own dataset
  class, so intensities, spacing and axes are exactly what nnU-Net trains on.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet_paths import dataset_id, preprocessed_dataset_dir

logger = logging.getLogger(__name__)

AXIS_ORDER = "nnunet"
KINDS = ("nifti_folder", "nnunet_raw", "nnunet_preprocessed", "arrays")
NIFTI_ENDINGS = (".nii.gz", ".nii")
ZSCORE = "ZScoreNormalization"
# Headers read at open time to get spacing and channels; the rest are checked when loaded (or by
# check_source), so opening a folder of 10,000 volumes stays fast.
_MAX_HEADERS = 64
_CHECK_HINT = "Remove or replace the file, or run `monai-ssl check-data <path>` to list every unreadable file."


class VolumeDefect(PluginError):
    """A case whose file reads but whose content cannot be trained on (e.g. NaN voxels).

    ``reason`` is the defect in the words :func:`monai_ssl_plugin.data.guard.volume_problem` uses,
    so ``check-data``, the ``bad_data`` log and the run's errors name it the same way.
    """

    def __init__(self, path: Path, reason: str):
        self.reason = reason
        super().__init__(f"Image {path}: {reason}.", _CHECK_HINT)


class UnlabelledSource(ABC):
    """Indexable collection of normalised volumes for self-supervised pretraining.

    Attributes:
        case_ids: one id per volume (file stem without channel suffix, or nnU-Net identifier).
        info: ``kind``, ``axis_order`` ("nnunet"), ``spacing`` (median, list of float, in axis
            order), ``normalization`` (one scheme name per channel), ``in_channels``,
            ``spatial_dims``, ``n_cases``, ``description``; preprocessed sources (and raw ones read
            with plans) add ``plans_file``, ``configuration``, ``dataset_name``.
    """

    case_ids: list[str]
    info: dict[str, Any]

    def __len__(self) -> int:
        return len(self.case_ids)

    @abstractmethod
    def load(self, i: int) -> np.ndarray:
        """Volume ``i`` as a new float32 array (C, *spatial), normalised."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.get('description', '')!r})"


def _info(kind: str, *, spacing: Sequence[float] | None, normalization: Sequence[str], in_channels: int,
          spatial_dims: int, n_cases: int, description: str, **extra: Any) -> dict[str, Any]:
    """The info dict with plain Python types (it is stored in checkpoints and JSON)."""
    return {"kind": kind, "axis_order": AXIS_ORDER,
            "spacing": None if spacing is None else [float(s) for s in spacing],
            "normalization": [str(n) for n in normalization], "in_channels": int(in_channels),
            "spatial_dims": int(spatial_dims), "n_cases": int(n_cases), "description": description, **extra}


def zscore(image: np.ndarray) -> np.ndarray:
    """Per-channel z-score over the whole volume, with nnU-Net's own ZScoreNormalization."""
    norm = ZScoreNormalization(use_mask_for_norm=False, intensityproperties={})
    image = image.astype(np.float32, copy=False)
    for c in range(image.shape[0]):
        image[c] = norm.run(image[c])
    return image


# -- headers and file grouping --------------------------------------------------------------
def nifti_problem(path: Path) -> str | None:
    """Why a NIfTI file is unusable (bad header, truncated data), or None when it is intact.

    SimpleITK silently zero-fills a truncated .nii.gz, so the size is checked here: the gzip
    trailer holds the uncompressed size, which must be the header's offset plus the voxel bytes.
    Only when that differs (a multi-member gzip, or damage) is the file decompressed to be sure.
    """
    try:
        image = nib.load(str(path))
        header = image.header  # its vox_offset reads 0 once loaded: the data's offset is the proxy's
        offset = int(getattr(image.dataobj, "offset", header["vox_offset"]))
        expected = offset + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    except Exception as e:
        return f"not a readable NIfTI ({type(e).__name__}: {str(e).strip()[:120]})"
    if not path.name.endswith(".gz"):
        size = path.stat().st_size
        return None if size >= expected else f"truncated ({size} of {expected} bytes)"
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        if int.from_bytes(f.read(4), "little") == expected % 2**32:
            return None
    total = 0
    try:
        with gzip.open(path, "rb") as g:
            while chunk := g.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError, gzip.BadGzipFile) as e:
        return f"truncated or damaged gzip data ({type(e).__name__})"
    return None if total >= expected else f"truncated ({total} of {expected} bytes)"


_FINITE_CACHE: dict[tuple[str, int, int], int] = {}


def nonfinite_voxels(path: Path) -> int:
    """How many NaN / infinite voxels a float NIfTI stores (0 for integer files, which cannot hold them).

    SimpleITK, and so nnU-Net's reader, turns them into 0 without a word, so they are counted from
    the file itself (nibabel); the count is remembered per file version (path, mtime, size).
    """
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _FINITE_CACHE:
        image = nib.load(str(path))
        count = 0
        if np.issubdtype(image.get_data_dtype(), np.floating):
            data = np.asanyarray(image.dataobj)
            count = int(data.size - np.count_nonzero(np.isfinite(data)))
        _FINITE_CACHE[key] = count
    return _FINITE_CACHE[key]


def nonfinite_reason(count: int) -> str:
    """The defect text for ``count`` non-finite voxels (shared with the in-memory check)."""
    return f"contains NaN or infinite values ({count} voxel(s))"


def _is_nifti(path: Path) -> bool:
    return _strip_ending(path.name, NIFTI_ENDINGS) is not None


def _check_nifti(path: Path) -> None:
    problem = nifti_problem(path) if _is_nifti(path) else None
    if problem:
        raise PluginError(f"Cannot read image {path}: {problem}.", _CHECK_HINT)


def _read_header(path: Path) -> tuple[list[float], int]:
    """Spacing in nnU-Net's (z, y, x) order and the number of channels stored in the file."""
    _check_nifti(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise PluginError(f"Cannot read image {path} ({first[:160]}).", _CHECK_HINT) from None
    spacing = list(reader.GetSpacing())[::-1]  # SimpleITK gives (x, y, z); nnU-Net arrays are (z, y, x)
    dim, size = reader.GetDimension(), reader.GetSize()
    channels = reader.GetNumberOfComponents()
    if dim == 4:  # 4D NIfTI: nnU-Net's reader stacks the 4th axis as channels
        channels, spacing = size[3], spacing[1:]
    if dim == 2:
        spacing = [max(spacing) * 999] + spacing  # what nnU-Net's reader reports for 2D images
    return [abs(float(s)) for s in spacing], int(channels)


def _median_spacing(files: list[list[Path]]) -> tuple[list[float], int]:
    """Median spacing and channel count from the headers of up to ``_MAX_HEADERS`` cases.

    A damaged file is logged and left out here, not refused: whether a bad case stops the run or is
    skipped is the ``bad_data`` policy's decision (``data.guard``), met when the case is loaded.
    Only a folder whose sampled headers are all unreadable is refused when it is opened.
    """
    pick = np.unique(np.linspace(0, len(files) - 1, min(len(files), _MAX_HEADERS)).round().astype(int))
    spacings, channels = [], []
    first_error: PluginError | None = None
    for i in pick:
        try:
            headers = [_read_header(f) for f in files[i]]
        except PluginError as e:
            logger.warning("%s (left out of the spacing; the bad_data policy decides at load time)", e.problem)
            first_error = first_error or e
            continue
        spacings.append(headers[0][0])
        channels.append((sum(h[1] for h in headers), files[i][0].name))
    if not spacings and first_error is not None:
        raise first_error
    # the channel count most cases have; a case with another (a 4D file among 3D ones) is the bad one,
    # named and left to the bad_data policy at load time instead of refusing the whole folder
    counts = [c for c, _ in channels]
    majority = max(set(counts), key=lambda c: (counts.count(c), -counts.index(c)))
    for c, name in channels:
        if c != majority:
            logger.warning("%s has %d channel(s), the other cases %d (a 4D file?): the bad_data policy decides at "
                           "load time.", name, c, majority)
    picked = [s for s, (c, _) in zip(spacings, channels) if c == majority]
    return np.median(np.asarray(picked), axis=0).tolist(), int(majority)


def _strip_ending(name: str, endings: Sequence[str]) -> str | None:
    for e in endings:
        if name.endswith(e):
            return name[: -len(e)]
    return None


def _group_channels(folder: Path, file_ending: str, n_channels: int | None
                    ) -> tuple[dict[str, list[Path]], dict[str, str]]:
    """``{case: [case_0000, case_0001, ...]}`` for nnU-Net's channel naming in ``folder``, and the defects.

    A case lacking a channel file (or holding more than the dataset's channels) is kept with its
    expected paths and named in the second dict (``case -> reason``): like any other bad case it is
    left to the ``bad_data`` policy when loaded, so it never takes the good cases down with it.
    """
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(file_ending) + r"$")
    cases: dict[str, dict[int, Path]] = {}
    for f in sorted(folder.iterdir()):
        m = pattern.match(f.name)
        if m and not f.name.startswith("."):
            cases.setdefault(m["case"], {})[int(m["ch"])] = f
    # Without a dataset.json the channel count is the largest index found in the folder.
    want = n_channels if n_channels is not None else max((max(c) + 1 for c in cases.values()), default=0)
    out, defects = {}, {}
    for case, chans in cases.items():
        out[case] = [chans.get(c, folder / f"{case}_{c:04d}{file_ending}") for c in range(want)]
        missing = [f"{case}_{c:04d}{file_ending}" for c in range(want) if c not in chans]
        extra = [chans[c].name for c in sorted(chans) if c >= want]
        if missing:
            defects[case] = f"missing channel file(s) {', '.join(missing[:3])} (the dataset has {want} channel(s))"
        elif extra:
            defects[case] = f"channel file(s) {', '.join(extra[:3])} beyond the dataset's {want} channel(s)"
    return out, defects


# -- the plans path: nnU-Net's own preprocessing, case by case ---------------------------------
class _PlansPreprocessing:
    """Runs nnU-Net's preprocessor of a configuration on raw files (resample + normalise)."""

    def __init__(self, plans: str | os.PathLike, configuration: str, plans_identifier: str, n_channels: int,
                 dataset_json: dict[str, Any]):
        plans_file = Path(plans)
        if plans_file.is_dir():
            plans_file = plans_file / f"{plans_identifier}.json"
        if not plans_file.is_file():
            raise PluginError(f"Plans file {plans_file} does not exist.",
                              "Pass the nnUNetPlans.json written by nnUNetv2_plan_and_preprocess (or its folder).")
        self.plans_file = plans_file
        self.plans_manager = _plans_manager(plans_file)
        self.configuration = configuration
        self.config = _get_configuration(self.plans_manager, configuration, plans_file)
        if len(self.config.normalization_schemes) != n_channels:
            raise PluginError(f"Plans {plans_file.name} are for {len(self.config.normalization_schemes)} channel(s), "
                              f"the data has {n_channels}.", "Use the plans of a dataset with the same channels.")
        self.dataset_json = dataset_json

    def spacing(self) -> list[float]:
        return _configuration_spacing(self.plans_manager, self.config)

    def run(self, files: list[Path]) -> np.ndarray:
        preprocessor = self.config.preprocessor_class(verbose=False)
        data, _, _ = preprocessor.run_case([str(f) for f in files], None, self.plans_manager, self.config,
                                           self.dataset_json)
        return np.ascontiguousarray(data, dtype=np.float32)

    def info(self) -> dict[str, Any]:
        return {"plans_file": str(self.plans_file), "configuration": self.configuration,
                "dataset_name": self.plans_manager.dataset_name,
                "transpose_forward": list(self.plans_manager.transpose_forward),
                "patch_size": list(self.config.patch_size)}


def _plans_manager(plans_file: Path) -> Any:
    try:
        pm = PlansManager(str(plans_file))
        pm.available_configurations  # noqa: B018 - fails early on a file without configurations
    except Exception as e:
        raise PluginError(f"Cannot read plans {plans_file} ({type(e).__name__}: {e}).",
                          "Pass a plans JSON written by nnUNetv2_plan_and_preprocess.") from None
    return pm


def _get_configuration(plans_manager: Any, configuration: str, plans_file: Path) -> Any:
    available = plans_manager.available_configurations
    if configuration not in available:
        raise PluginError(f"Plans {plans_file} have no configuration {configuration!r}.",
                          f"Choose one of {available}.")
    try:
        return plans_manager.get_configuration(configuration)
    except Exception as e:  # plans from another nnU-Net version, or edited by hand
        raise PluginError(f"Plans {plans_file} configuration {configuration!r} is malformed ({type(e).__name__}: {e}).",
                          "Regenerate the plans with this nnU-Net version (nnUNetv2_plan_and_preprocess).") from None


def _configuration_spacing(plans_manager: Any, config: Any) -> list[float]:
    spacing = [float(s) for s in config.spacing]
    if len(spacing) == 2:  # 2d configurations keep the out-of-plane spacing of the data
        spacing = [float(plans_manager.original_median_spacing_after_transp[0])] + spacing
    return spacing


class _FileCasesSource(UnlabelledSource):
    """Shared loading for sources made of image files: reader, z-score or nnU-Net plans."""

    cases: list[list[Path]]
    defects: dict[str, str]  # case id -> why its files are incomplete (a channel file missing or extra)
    _plans: _PlansPreprocessing | None
    _reader_class: Any

    def load(self, i: int) -> np.ndarray:
        files = self.cases[i]
        if (defect := self.defects.get(self.case_ids[i])) is not None:
            raise VolumeDefect(files[0].parent / self.case_ids[i], defect)
        for f in files:
            if not f.is_file():
                raise VolumeDefect(f, "missing file")
        for f in files:
            _check_nifti(f)
            if _is_nifti(f) and (count := nonfinite_voxels(f)):
                raise VolumeDefect(f, nonfinite_reason(count))
        try:
            if self._plans is not None:
                return self._plans.run(files)
            image, _ = self._reader_class().read_images([str(f) for f in files])
        except PluginError:
            raise
        except Exception as e:  # truncated gzip, wrong header, mismatched channel shapes...
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            names = ", ".join(f.name for f in files)
            raise PluginError(f"Cannot read image {files[0].parent}/{names} ({type(e).__name__}: {msg[:160]}).",
                              _CHECK_HINT) from None
        return np.ascontiguousarray(zscore(image), dtype=np.float32)

    def _complete_cases(self) -> list[list[Path]]:
        """The cases with every channel file, for the header sample (all cases when none is complete,
        so that opening refuses with the reader's own words)."""
        complete = [fs for c, fs in zip(self.case_ids, self.cases) if c not in self.defects]
        return complete or self.cases


class NiftiFolderSource(_FileCasesSource):
    """A folder of ``*.nii`` / ``*.nii.gz`` volumes.

    When every file follows nnU-Net's channel naming (``case_0000.nii.gz``, ``case_0001.nii.gz``)
    the files of a case are its channels; otherwise every file is a single-channel case.
    """

    def __init__(self, folder: str | os.PathLike, *, plans: str | os.PathLike | None = None,
                 configuration: str = "3d_fullres", plans_identifier: str = "nnUNetPlans"):
        folder = Path(folder)
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                       and _strip_ending(f.name, NIFTI_ENDINGS) is not None)
        if not files:
            raise PluginError(f"No images (*.nii, *.nii.gz) in {folder}.", _NO_IMAGES_FIX)
        channel_named = all(re.search(r"_\d{4}\.nii(\.gz)?$", f.name) for f in files)
        grouped: dict[str, list[Path]] = {}
        self.defects = {}
        if channel_named:
            for ending in NIFTI_ENDINGS:
                found, defects = _group_channels(folder, ending, None)
                grouped.update(found)
                self.defects.update(defects)
        else:
            grouped = {_strip_ending(f.name, NIFTI_ENDINGS): [f] for f in files}  # type: ignore[misc]
        self.case_ids = sorted(grouped)
        self.cases = [grouped[c] for c in self.case_ids]
        spacing, channels = _median_spacing(self._complete_cases())
        self._reader_class = SimpleITKIO  # nnU-Net's reader for NIfTI: arrays come out (z, y, x)
        self._plans = None
        extra: dict[str, Any] = {"path": str(folder)}
        normalization = [ZSCORE] * channels
        if plans is not None:
            self._plans = _PlansPreprocessing(plans, configuration, plans_identifier, channels, {})
            spacing, normalization = self._plans.spacing(), list(self._plans.config.normalization_schemes)
            extra.update(self._plans.info())
        self.info = _info("nifti_folder", spacing=spacing, normalization=normalization, in_channels=channels,
                          spatial_dims=3, n_cases=len(self.case_ids),
                          description=f"{len(self.case_ids)} NIfTI volume(s) with {channels} channel(s) from {folder}",
                          **extra)


class NnUNetRawSource(_FileCasesSource):
    """An nnU-Net raw dataset: imagesTr, plus imagesUnlabelled (ours) and optionally imagesTs.

    Test images are left out by default: pretraining on the images you will report results on
    leaks the test set into the encoder.
    """

    FOLDERS = ("imagesTr", "imagesUnlabelled", "imagesTs")

    def __init__(self, folder: str | os.PathLike, *, plans: str | os.PathLike | None = None,
                 configuration: str = "3d_fullres", plans_identifier: str = "nnUNetPlans",
                 include_test: bool = False):
        folder = Path(folder)
        try:
            dataset_json = json.loads((folder / "dataset.json").read_text())
            file_ending = dataset_json["file_ending"]
            n_channels = len(dataset_json["channel_names"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PluginError(f"{folder}/dataset.json is unreadable or lacks file_ending/channel_names ({e}).",
                              "Fix dataset.json (nnU-Net v2 format) or point to a plain folder of NIfTI files.") from None
        grouped: dict[str, list[Path]] = {}
        counts: dict[str, int] = {}
        self.defects = {}
        if "dataset" in dataset_json:  # explicit file lists (nnU-Net's alternative to imagesTr)
            for k, v in dataset_json["dataset"].items():
                grouped[k] = [Path(os.path.expandvars(p)) if os.path.isabs(os.path.expandvars(p))
                              else folder / os.path.expandvars(p) for p in v["images"]]
            counts["dataset.json"] = len(grouped)
        for sub in self.FOLDERS:
            if (sub == "imagesTs" and not include_test) or not (folder / sub).is_dir():
                continue
            if sub == "imagesTr" and "dataset" in dataset_json:
                continue
            found, defects = _group_channels(folder / sub, file_ending, n_channels)
            counts[sub] = len(found)
            for case, files in found.items():
                key = case if case not in grouped else f"{sub}/{case}"
                grouped[key] = files
                if case in defects:
                    self.defects[key] = defects[case]
        if not grouped:
            raise PluginError(f"No images in {folder} (looked in {', '.join(self.FOLDERS[:2 + include_test])} "
                              f"for *_0000{file_ending}).", _NO_IMAGES_FIX)
        self.case_ids = sorted(grouped)
        self.cases = [grouped[c] for c in self.case_ids]
        self._plans = None
        extra: dict[str, Any] = {"path": str(folder), "dataset_name": folder.name, "case_counts": counts}
        if plans is not None:
            self._plans = _PlansPreprocessing(plans, configuration, plans_identifier, n_channels, dataset_json)
            spacing, normalization = self._plans.spacing(), list(self._plans.config.normalization_schemes)
            extra.update(self._plans.info())
            self._reader_class = self._plans.plans_manager.image_reader_writer_class
        else:
            # No example file: nnU-Net would print tracebacks while probing readers on it.
            self._reader_class = determine_reader_writer_from_dataset_json(dataset_json, None, verbose=False)
            spacing, _ = _median_spacing(self._complete_cases())
            normalization = [ZSCORE] * n_channels
        parts = ", ".join(f"{k} {v}" for k, v in counts.items())
        self.info = _info("nnunet_raw", spacing=spacing, normalization=normalization, in_channels=n_channels,
                          spatial_dims=3, n_cases=len(self.case_ids),
                          description=f"nnU-Net raw dataset {folder.name}: {len(self.case_ids)} cases ({parts})"
                                      + (f", preprocessed with {self._plans.plans_file.name}:{configuration}"
                                         if self._plans else ", z-scored at native spacing"),
                          **extra)


class NnUNetPreprocessedSource(UnlabelledSource):
    """A configuration's data in ``$nnUNet_preprocessed/DatasetXXX_Name``, read by nnU-Net's dataset class.

    Holds only the cases nnU-Net preprocessed (imagesTr). For the unlabelled images too, open the
    raw dataset with ``plans=`` this folder: same preprocessing, all images.
    """

    def __init__(self, folder: str | os.PathLike, configuration: str = "3d_fullres",
                 plans_identifier: str = "nnUNetPlans"):
        folder = Path(folder)
        plans_file = folder / f"{plans_identifier}.json"
        if not plans_file.is_file():
            others = sorted(p.stem for p in folder.glob("*.json") if p.name not in _NOT_PLANS)
            raise PluginError(f"No plans {plans_file.name} in {folder}.",
                              f"Use plans_identifier one of {others}." if others else
                              f"Run `nnUNetv2_plan_and_preprocess -d {_dataset_id(folder)} -c {configuration}`.")
        pm = _plans_manager(plans_file)
        config = _get_configuration(pm, configuration, plans_file)
        data_folder = folder / config.data_identifier
        has_data = data_folder.is_dir() and any(p.suffix in (".b2nd", ".npz") for p in data_folder.iterdir())
        if not has_data:
            raise PluginError(f"{folder.name} has no preprocessed data for configuration {configuration!r} "
                              f"(expected {data_folder}).",
                              f"Run `nnUNetv2_plan_and_preprocess -d {_dataset_id(folder)} -c {configuration}`.")
        try:
            dataset_class = infer_dataset_class(str(data_folder))
        except (AssertionError, KeyError) as e:
            raise PluginError(f"Cannot tell the file format of {data_folder} ({e}).",
                              f"Delete the folder and rerun `nnUNetv2_plan_and_preprocess -d {_dataset_id(folder)} "
                              f"-c {configuration}`.") from None
        self._dataset = dataset_class(str(data_folder))
        self.case_ids = list(self._dataset.identifiers)
        n_channels = len(config.normalization_schemes)
        self.info = _info(
            "nnunet_preprocessed", spacing=_configuration_spacing(pm, config),
            normalization=list(config.normalization_schemes), in_channels=n_channels, spatial_dims=3,
            n_cases=len(self.case_ids),
            description=f"nnU-Net preprocessed {pm.dataset_name} ({plans_identifier}, {configuration}): "
                        f"{len(self.case_ids)} cases",
            path=str(folder), plans_file=str(plans_file), configuration=configuration, dataset_name=pm.dataset_name,
            plans_identifier=plans_identifier, data_identifier=config.data_identifier,
            transpose_forward=list(pm.transpose_forward), patch_size=list(config.patch_size))

    def load(self, i: int) -> np.ndarray:
        case = self.case_ids[i]
        try:
            data = self._dataset.load_case(case)[0]
            return np.array(data[:], dtype=np.float32)  # blosc2/memmap -> an owned array
        except Exception as e:
            raise PluginError(f"Cannot read preprocessed case {case} in {self._dataset.source_folder} "
                              f"({type(e).__name__}: {e}).",
                              "Rerun nnUNetv2_plan_and_preprocess for this dataset.") from None


class ArraySource(UnlabelledSource):
    """In-memory volumes (tests, notebooks): a list of (C, *spatial) arrays.

    ``normalize`` z-scores each channel like the file sources; ``spacing`` is informational.
    """

    def __init__(self, volumes: Sequence[np.ndarray] | np.ndarray, *, spacing: Sequence[float] | None = None,
                 normalize: bool = True, case_ids: Sequence[str] | None = None, description: str = "in-memory volumes"):
        if len(volumes) == 0:
            raise PluginError("ArraySource got no volumes.", "Pass at least one (C, *spatial) array.")
        self._volumes = [np.asarray(v) for v in volumes]
        channels = {v.shape[0] for v in self._volumes}
        dims = {v.ndim - 1 for v in self._volumes}
        if len(channels) != 1 or len(dims) != 1:
            raise PluginError(f"Volumes differ in channels {sorted(channels)} or dimensions {sorted(dims)}.",
                              "Give arrays shaped (C, *spatial) with the same C and number of spatial axes.")
        self._normalize = normalize
        self.case_ids = list(case_ids) if case_ids is not None else [f"case_{i:03d}" for i in range(len(volumes))]
        c = channels.pop()
        self.info = _info("arrays", spacing=spacing, normalization=[ZSCORE if normalize else "none"] * c,
                          in_channels=c, spatial_dims=dims.pop(), n_cases=len(self._volumes),
                          description=f"{description} ({len(self._volumes)})")

    def load(self, i: int) -> np.ndarray:
        v = np.array(self._volumes[i], dtype=np.float32)
        return zscore(v) if self._normalize else v


_NO_IMAGES_FIX = ("Give a folder of .nii/.nii.gz files, an nnU-Net raw dataset (dataset.json + imagesTr) or an nnU-Net "
                  "preprocessed dataset folder (nnUNetPlans.json + data).")
_NOT_PLANS = {"dataset.json", "dataset_fingerprint.json", "splits_final.json"}


def _dataset_id(folder: Path) -> str:
    found = dataset_id(folder.name)
    return "ID" if found is None else str(found)


def open_source(path: str | int | os.PathLike, configuration: str = "3d_fullres",
                plans_identifier: str = "nnUNetPlans", *, plans: str | os.PathLike | None = None,
                include_test: bool = False) -> UnlabelledSource:
    """Open unlabelled data, detecting what ``path`` is.

    Args:
        path: a folder of NIfTI files; an nnU-Net raw dataset folder (dataset.json + imagesTr);
            an nnU-Net preprocessed dataset folder (``<plans_identifier>.json`` + data) or its
            data folder; or a dataset id / name (``990``, ``"Dataset990_Synthetic"``) looked up in
            ``$nnUNet_preprocessed``.
        configuration, plans_identifier: which nnU-Net plans and configuration to use.
        plans: for NIfTI folders and raw datasets, a plans file (or preprocessed dataset folder)
            whose configuration preprocesses each case with nnU-Net's preprocessor.
        include_test: raw datasets only: also use imagesTs (off by default: test-set leakage).
    """
    text = os.fspath(path) if not isinstance(path, int) else str(path)
    p = Path(text).expanduser()
    if not p.exists() and (re.fullmatch(r"\d{1,3}", text) or re.fullmatch(r"Dataset\d{3}_[\w-]+", text)):
        p = preprocessed_dataset_dir(text)
    if not p.exists():
        raise PluginError(f"Data path {p} does not exist.",
                          "Check the path, or give an nnU-Net dataset id/name with $nnUNet_preprocessed set.")
    if not p.is_dir():
        raise PluginError(f"Data path {p} is a file, not a folder.", _NO_IMAGES_FIX)
    if (p / f"{plans_identifier}.json").is_file():
        return NnUNetPreprocessedSource(p, configuration, plans_identifier)
    if (p / "dataset.json").is_file() and ((p / "imagesTr").is_dir() or (p / "imagesUnlabelled").is_dir()):
        return NnUNetRawSource(p, plans=plans, configuration=configuration, plans_identifier=plans_identifier,
                               include_test=include_test)
    parent_plans = p.parent / f"{plans_identifier}.json"
    if parent_plans.is_file() and any(f.suffix in (".b2nd", ".npz") for f in p.iterdir()):
        # The data folder itself (e.g. .../nnUNetPlans_3d_fullres): use the configuration it holds.
        plans_json = json.loads(parent_plans.read_text())
        for name, conf in plans_json.get("configurations", {}).items():
            if conf.get("data_identifier") == p.name:
                return NnUNetPreprocessedSource(p.parent, name, plans_identifier)
    if any(p.glob("*Plans*.json")) or (p / "dataset_fingerprint.json").is_file():  # preprocessed, other plans
        return NnUNetPreprocessedSource(p, configuration, plans_identifier)
    if any(_strip_ending(f.name, NIFTI_ENDINGS) is not None for f in p.iterdir()):
        return NiftiFolderSource(p, plans=plans, configuration=configuration, plans_identifier=plans_identifier)
    raise PluginError(f"No images found in {p}.", _NO_IMAGES_FIX)

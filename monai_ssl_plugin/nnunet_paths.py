"""nnU-Net's folder conventions, in one place: environment variables, dataset ids and names, and where
the plugin's exported weights go.

nnU-Net finds everything through three environment variables; a dataset is the folder
``DatasetXXX_Name`` (XXX: a three-digit id) under each of them. The plugin adds one folder,
``$nnUNet_preprocessed/<DatasetName>/ssl_pretrained/``, where the export writes and the trainers look.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from monai_ssl_plugin.errors import PluginError

RAW, PREPROCESSED, RESULTS = "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"
PATH_VARS = (RAW, PREPROCESSED, RESULTS)
PRETRAINED_DIR = "ssl_pretrained"  # folder under $nnUNet_preprocessed/<Dataset>/ the trainers read
_DATASET_NAME = re.compile(r"Dataset(\d{3})_")


def dataset_id(folder_name: str) -> int | None:
    """``"Dataset501_Brain"`` -> 501; None when the name is not an nnU-Net dataset folder."""
    m = _DATASET_NAME.match(folder_name)
    return int(m[1]) if m else None


def dataset_prefix(name_or_id: str | int) -> str:
    """The folder-name prefix a dataset id or name selects: ``501`` -> ``"Dataset501_"``."""
    text = str(name_or_id)
    return text if text.startswith("Dataset") else f"Dataset{int(text):03d}_"


def env_root(var: str, env: Mapping[str, str] | None = None) -> Path:
    """The folder an nnU-Net environment variable names (in ``env``, default this process's
    environment), or one line saying it is not set."""
    root = (os.environ if env is None else env).get(var)
    if not root:
        raise PluginError(f"{var} is not set.", f"export {var}=/path/to/{var}")
    return Path(root)


def dataset_folder(var: str, dataset_name: str, env: Mapping[str, str] | None = None) -> Path:
    """``$<var>/<DatasetXXX_Name>``: a dataset's folder under ``nnUNet_raw``, ``_preprocessed`` or ``_results``."""
    return env_root(var, env) / dataset_name


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """The three nnU-Net folders of ``env`` in ``os.environ`` for in-process helpers (the plans writer,
    the export, the dataset resolver read them there), restored afterwards."""
    saved = {k: os.environ.get(k) for k in PATH_VARS}
    os.environ.update({k: env[k] for k in PATH_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def preprocessed_dataset_dir(name_or_id: str | int) -> Path:
    """``"990"``, ``990`` or ``"Dataset990_Synthetic"`` -> the folder in ``$nnUNet_preprocessed``."""
    name_or_id = str(name_or_id)
    if not (name_or_id.startswith("Dataset") or name_or_id.isdigit()):
        raise PluginError(f"{name_or_id!r} is neither a dataset id nor a DatasetXXX_Name.",
                          "Pass the number (e.g. 501) or the full name (e.g. Dataset501_MNIBrainTissue).")
    root = os.environ.get(PREPROCESSED)
    if not root:
        raise PluginError(f"Cannot resolve dataset {name_or_id!r}: $nnUNet_preprocessed is not set.",
                          "Set nnUNet_preprocessed, or pass the dataset folder path.")
    prefix = dataset_prefix(name_or_id)
    hits = sorted(p for p in Path(root).glob(f"{prefix}*") if p.is_dir() and
                  (p.name == name_or_id or not name_or_id.startswith("Dataset")))
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise PluginError(f"Dataset id {name_or_id} matches several folders in {root}: {[h.name for h in hits]}.",
                          "Pass the full dataset name or folder path.")
    raw = os.environ.get(RAW)
    in_raw = sorted(Path(raw).glob(f"{prefix}*")) if raw else []
    if in_raw:
        found = dataset_id(in_raw[0].name)
        raise PluginError(f"Dataset {name_or_id} is in nnUNet_raw ({in_raw[0]}) but not preprocessed.",
                          f"Run `nnUNetv2_plan_and_preprocess -d {'ID' if found is None else found} -c 3d_fullres`, "
                          f"or pass the raw folder path.")
    raise PluginError(f"Dataset {name_or_id!r} not found in $nnUNet_preprocessed ({root}).",
                      "Check the id/name, or pass the dataset folder path.")


def pretrained_file_path(dataset_name: str, configuration: str = "3d_fullres",
                         plans_identifier: str = "nnUNetPlans") -> Path:
    """The conventional place of a dataset's pretrained weights, where the plugin's trainers look."""
    return env_root(PREPROCESSED) / dataset_name / PRETRAINED_DIR / f"{plans_identifier}__{configuration}.pth"


def results_folder(dataset_name: str, trainer: str, plans_identifier: str, configuration: str,
                   env: Mapping[str, str] | None = None) -> Path:
    """Where ``nnUNetv2_train`` writes a model: ``$nnUNet_results/<Dataset>/<trainer>__<plans>__<configuration>``
    (``nnUNet_results`` read from ``env``, default this process's environment)."""
    return dataset_folder(RESULTS, dataset_name, env) / f"{trainer}__{plans_identifier}__{configuration}"

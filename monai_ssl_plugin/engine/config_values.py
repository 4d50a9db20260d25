"""Values from the command line and bundle configs: flags as fire passes them, required ids, the device.

Bundle YAML reaches these through :mod:`monai_ssl_plugin.engine.run` (``ssl_run.as_bool`` ...).
"""

from __future__ import annotations

from typing import Any

import torch

from monai_ssl_plugin.data.consumer import open_data
from monai_ssl_plugin.errors import PluginError


def as_bool(value: Any) -> bool:
    """A flag from the command line: fire passes ``--resume true`` as the string ``"true"``."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", "", "none", "null"):
            return False
        raise PluginError(f"Cannot read {value!r} as true/false.", "Pass true or false.")
    return bool(value)


def required(value: Any, name: str) -> Any:
    """``value``, or a one-line error naming the missing ``--name``."""
    if value in (None, "", "null", "None"):
        raise PluginError(f"The bundle needs --{name}.",
                          f"Pass --{name} (for data: a NIfTI folder, an nnU-Net raw or preprocessed dataset).")
    return value


def auto_device(device: str | None = None) -> torch.device:
    """``device`` if given (``"cpu"``, ``"cuda:1"``), else the first GPU when there is one, else the CPU."""
    if device not in (None, "", "auto"):
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise PluginError(f"Device {device!r} was requested but CUDA is not available.", "Use --device cpu.")
        return dev
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def open_dataset(data: Any, configuration: str = "3d_fullres", plans_identifier: str = "nnUNetPlans",
                 plans: Any = None, read_like: Any = None) -> Any:
    """The training data a pretraining bundle reads, named by the model zoo's ``train#dataset#data`` id.

    The zoo (and apps built on it, such as MONAI FL) point a bundle at other data by overriding
    ``train#dataset#data``; here ``data`` is what ``--dataset_dir`` takes: a NIfTI folder, an nnU-Net
    raw or preprocessed dataset folder, or a dataset id (see
    :func:`monai_ssl_plugin.data.sources.open_source`). ``read_like``: a MONAI bundle whose reading
    transforms read the volumes instead (:func:`monai_ssl_plugin.data.consumer.open_data`).
    """
    return open_data(required(data, "dataset_dir"), configuration, plans_identifier, plans=plans, read_like=read_like)

"""Read unlabelled volumes the way a target MONAI bundle reads its training data.

``ConsumerReadSource(folder, read_like=BUNDLE)`` takes the deterministic reading part of the bundle's
train pipeline (``LoadImage``, channel-first, ``Orientation``, ``Spacing``, the intensity transforms,
type casts), instantiated from the bundle's own train config, and applies it to every volume of the
folder. Pretraining on it records MONAI's axis order (``LoadImage``: x, y, z), the bundle's spacing
and its normalisation (e.g. ``ScaleIntensityRanged``), so the weights match the consumer by
construction, the way the nnU-Net route uses the target's plans. Random transforms, crops and
transforms of other keys (labels, boxes) are left out: pretraining crops its own patches.

The bundle's network definition is recorded too (``consumer_network``: class name and arguments),
so ``backbone: auto`` pretrains the consumer's own architecture where its arguments are plain values.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import numpy as np

from monai_ssl_plugin.data.sources import UnlabelledSource, _info, open_source
from monai_ssl_plugin.errors import PluginError

INTENSITY = ("NormalizeIntensity", "ScaleIntensityRange", "ScaleIntensityRangePercentiles", "ScaleIntensity",
             "ClipIntensityPercentiles")
READING = ("LoadImage", "EnsureChannelFirst", "Orientation", "Spacing", "EnsureType", "CastToType") + INTENSITY
TRAIN_CONFIGS = ("train.json", "train.yaml", "train.yml")
# where the training dataset's transform lives: zoo bundles (train#...) and the zoo templates (top level)
_TRANSFORM_IDS = ("train#dataset#transform", "train#preprocessing", "train_dataset#transform", "preprocessing")


def _train_config(bundle: Path) -> Path:
    for name in TRAIN_CONFIGS:
        if (bundle / "configs" / name).is_file():
            return bundle / "configs" / name
    if bundle.is_file():
        return bundle
    raise PluginError(f"{bundle} has no configs/train.json or configs/train.yaml.",
                      "Pass --read_like the target bundle's root folder (or its train config file).")


def _parser(config_file: Path) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file))
    if "bundle_root" in parser:
        parser["bundle_root"] = str(config_file.parent.parent)
    return parser


def _base(name: str) -> str:
    return name[:-1] if name.endswith("d") and name[:-1] in READING else name


def reading_transforms(parser: Any, origin: str) -> tuple[list[Any], str]:
    """(the deterministic reading transforms of the train pipeline, the image key)."""
    from monai.transforms import Compose, MapTransform, Randomizable

    for id_ in _TRANSFORM_IDS:
        if id_ in parser:
            pipeline = parser.get_parsed_content(id_, instantiate=True)
            break
    else:
        raise PluginError(f"{origin} has no training transform at {' / '.join(_TRANSFORM_IDS)}.",
                          "Point --read_like at a bundle whose train config defines train#preprocessing.")
    items = pipeline.flatten().transforms if isinstance(pipeline, Compose) else list(pipeline)
    kept = [t for t in items if _base(type(t).__name__) in READING and not isinstance(t, Randomizable)]
    loaders = [t for t in kept if _base(type(t).__name__) == "LoadImage"]
    if not loaders:
        raise PluginError(f"The training transform of {origin} does not start with LoadImage(d).",
                          "Read the data with open_source instead (without --read_like).")
    keys = list(getattr(loaders[0], "keys", ("image",)))
    key = "image" if "image" in keys else keys[0]
    out = []
    for t in kept:
        if isinstance(t, MapTransform):
            if key not in t.keys:
                continue
            t.allow_missing_keys = True  # labels / boxes are not there
        out.append(t)
    return out, key


def call_kwargs(expression: Any) -> dict[str, Any] | None:
    """``{"class", "kwargs"}`` of a config expression that is one call with literal keyword arguments
    (the zoo's ``"$monai.networks.nets.resnet.resnet50(spatial_dims=3, ...)"`` RetinaNet backbone)."""
    if not isinstance(expression, str) or not expression.startswith("$"):
        return None
    try:
        call = ast.parse(expression[1:].strip(), mode="eval").body
        if not isinstance(call, ast.Call) or call.args:
            return None
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
        return {"class": name, "kwargs": {k.arg: ast.literal_eval(k.value) for k in call.keywords}}
    except (SyntaxError, ValueError):
        return None


def consumer_network(parser: Any) -> dict[str, Any] | None:
    """``{"class": name, "kwargs": {...}}`` of ``network_def`` when every argument is a plain value; for a
    RetinaNet, that of its ``backbone`` (the ResNet inside the feature extractor)."""
    if "network_def" not in parser or not isinstance(parser["network_def"], dict):
        return None
    node = parser["network_def"]
    target = node.get("_target_")
    if not isinstance(target, str):
        return None
    if target.split(".")[-1] in ("RetinaNet", "RetinaNetDetector"):
        return call_kwargs(parser["backbone"]) if "backbone" in parser else None
    kwargs = {}
    for k in node:
        if k.startswith("_"):
            continue
        value = parser.get_parsed_content(f"network_def#{k}", instantiate=True)
        if not isinstance(value, (int, float, str, bool, list, tuple, type(None))):
            return None
        kwargs[k] = list(value) if isinstance(value, tuple) else value
    return {"class": target.split(".")[-1], "kwargs": kwargs}


class ConsumerReadSource(UnlabelledSource):
    """The NIfTI volumes of ``folder``, each read by ``read_like``'s own reading transforms (see module doc)."""

    def __init__(self, folder: str | os.PathLike, read_like: str | os.PathLike):
        folder, bundle = Path(folder).expanduser(), Path(read_like).expanduser().resolve()
        self.files = sorted(f for f in folder.iterdir() if f.name.endswith((".nii", ".nii.gz"))) if folder.is_dir() else []
        if not self.files:
            raise PluginError(f"No .nii / .nii.gz volumes in {folder}.", "Pass --dataset_dir a folder of NIfTI volumes.")
        cfg = _train_config(bundle)
        parser = _parser(cfg)
        self.transforms, self.key = reading_transforms(parser, str(cfg))
        self.case_ids = [f.name.split(".nii")[0] for f in self.files]
        names = [type(t).__name__ for t in self.transforms]
        first = self.load(0)
        self.info = _info("nifti_folder", spacing=self._pixdim(), normalization=self._normalization() * first.shape[0],
                          in_channels=first.shape[0], spatial_dims=first.ndim - 1, n_cases=len(self.files),
                          description=f"{len(self.files)} NIfTI volumes in {folder}, read like {bundle.name} "
                                      f"({' -> '.join(names)})",
                          read_like=str(cfg), transforms=names, consumer_network=consumer_network(parser))
        self.info["axis_order"] = "monai"

    def _pixdim(self) -> list[float] | None:
        for t in self.transforms:
            if _base(type(t).__name__) == "Spacing":
                inner = getattr(t, "spacing_transform", t)
                return [float(p) for p in np.atleast_1d(inner.pixdim)]
        return None

    def _normalization(self) -> list[str]:
        found = [type(t).__name__ for t in self.transforms if _base(type(t).__name__) in INTENSITY]
        return [found[-1]] if found else ["none"]

    def load(self, i: int) -> np.ndarray:
        path = self.files[i]
        data: Any = {self.key: str(path)}
        try:
            for t in self.transforms:
                data = t(data)
        except Exception as e:  # unreadable file, or a transform that needs what the folder lacks
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise PluginError(f"Cannot read image {path} with the target bundle's transforms "
                              f"({type(e).__name__}: {msg[:160]}).",
                              "Remove or replace the file, or check the bundle's reading transforms.") from None
        image = data[self.key]
        return np.ascontiguousarray(np.asarray(image.detach().cpu() if hasattr(image, "detach") else image),
                                    dtype=np.float32)


def open_data(path: str | int | os.PathLike, configuration: str = "3d_fullres", plans_identifier: str = "nnUNetPlans",
              *, plans: str | os.PathLike | None = None, read_like: str | os.PathLike | None = None) -> UnlabelledSource:
    """``read_like`` given: :class:`ConsumerReadSource`; otherwise :func:`~.sources.open_source`."""
    if read_like in (None, "", "null", "None"):
        return open_source(path, configuration, plans_identifier, plans=plans)
    if plans not in (None, "", "null", "None"):
        raise PluginError("--read_like and --plans both say how to read the data.",
                          "Pass --read_like for a MONAI consumer or --plans for an nnU-Net one, not both.")
    return ConsumerReadSource(path, read_like)

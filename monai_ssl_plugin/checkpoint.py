"""Checkpoint files: the record every pretrained artifact carries, atomic writes and safe loads.

The record is the contract between pretraining and every consumer (nnU-Net trainers, MONAI
overlays, export): consumers read it, they never guess the backbone, axis order or intensity
normalisation the weights were trained with.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import monai
import numpy
import torch

import monai_ssl_plugin
from monai_ssl_plugin.errors import PluginError

# Axis orders a volume can have when it reaches the network: nnU-Net transposes images read with
# SimpleITK to (z, y, x); MONAI's LoadImage keeps (x, y, z). Weights trained in one order and used
# in the other are silently wrong for anisotropic kernels, so the order is recorded, never guessed.
AXIS_ORDERS = ("nnunet", "monai")


@dataclass
class CheckpointRecord:
    """What a pretrained checkpoint must say about itself (see docs/architecture.md)."""

    backbone_family: str  # e.g. "nnunet.PlainConvUNet", "monai.ResNet"
    backbone_kwargs: dict[str, Any]  # constructor arguments, JSON-serialisable
    in_channels: int
    spatial_dims: int
    axis_order: str  # one of AXIS_ORDERS
    spacing: list[float] | None
    normalization: list[str]  # per input channel, e.g. ["ZScoreNormalization"]
    patch_size: list[int]
    pretext: str
    pretext_settings: dict[str, Any]
    key_prefixes: dict[str, Any]  # {"stem": ..., "encoder": ..., "decoder": ..., "in_proj": [...]}
    pretrained_parts: list[str]  # which of stem/encoder/decoder the pretext trained
    steps: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # description of the pretraining data

    def __post_init__(self) -> None:
        if self.axis_order not in AXIS_ORDERS:
            raise PluginError(f"Unknown axis order {self.axis_order!r}.", f"Use one of {AXIS_ORDERS}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckpointRecord":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def software_versions() -> dict[str, str]:
    """Versions of the packages a checkpoint depends on, for provenance."""
    # str(): torch.__version__ is a TorchVersion object, which weights_only loading refuses
    out = {"torch": str(torch.__version__), "monai": str(monai.__version__), "numpy": str(numpy.__version__),
           "monai_ssl_plugin": monai_ssl_plugin.__version__}
    try:
        out["nnunetv2"] = version("nnunetv2")
    except PackageNotFoundError:  # nnunetv2 is optional for pure-MONAI use
        pass
    return out


def _umask_mode(mode: int = 0o666) -> int:
    """``mode`` as an ordinary ``open()`` would create it (mkstemp alone gives 0600)."""
    current = os.umask(0)
    os.umask(current)
    return mode & ~current


def _atomic_write(path: str | os.PathLike, write: Any, binary: bool) -> Path:
    """Write through ``write(file)`` to a temporary file in the same folder, fsync, then rename.

    A crash mid-write leaves the previous file intact (rename is atomic on POSIX), so a torn
    write can never replace a good file, and no temporary file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically: a torn write never replaces a good checkpoint."""
    return _atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file atomically."""
    return _atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write a binary file atomically."""
    return _atomic_write(path, lambda f: f.write(data), binary=True)


def atomic_write_stream(write: Callable[[BinaryIO], None], path: str | os.PathLike) -> Path:
    """Write a binary file atomically through ``write(file)``: for writers that stream (a zip archive of
    a bundle with its weights) instead of holding every byte in memory first."""
    return _atomic_write(path, write, binary=True)


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: pickled code in a downloaded file never runs."""
    path = Path(path)
    if not path.is_file():
        raise PluginError(f"Checkpoint {path} does not exist.", "Check the path (pretraining writes <output>/checkpoints/latest.pt).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError for code objects, RuntimeError for torn files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PluginError(
            f"Cannot load {path} safely ({type(e).__name__}: {first}).",
            "The file is corrupt, truncated, or contains pickled code; only plain tensor checkpoints are accepted.",
        ) from None


CHECKSUM_KEY = "checksum"  # sha256 over every tensor and value of a checkpoint, written by seal()


def _feed(h: Any, node: Any, path: str) -> None:
    """Hash ``node`` in a fixed order: key paths, dtypes, shapes and bytes of tensors, reprs of scalars."""
    if isinstance(node, torch.Tensor):
        t = node.detach().cpu().contiguous().reshape(-1)
        h.update(f"{path}|{t.dtype}|{list(node.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(node, dict):
        for key in sorted(node, key=str):
            _feed(h, node[key], f"{path}/{key}")
    elif isinstance(node, (list, tuple)):
        h.update(f"{path}|{type(node).__name__}{len(node)}|".encode())
        for i, item in enumerate(node):
            _feed(h, item, f"{path}/{i}")
    else:
        h.update(f"{path}|{node!r}|".encode())


def tensor_checksum(state: dict[str, Any]) -> str:
    """sha256 of a checkpoint's content (every entry but the checksum itself).

    torch's zip container does not check its members on load, so one flipped byte in a tensor
    loads silently; this digest, stored in the file, is what catches it.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != CHECKSUM_KEY}, "")
    return h.hexdigest()


def seal(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with its :func:`tensor_checksum` under :data:`CHECKSUM_KEY` (a new dict)."""
    return {**state, CHECKSUM_KEY: tensor_checksum(state)}


def load_checked(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """:func:`safe_load` plus the checksum check of a sealed checkpoint (files without one load as before)."""
    state = safe_load(path, map_location)
    recorded = state.get(CHECKSUM_KEY) if isinstance(state, dict) else None
    if recorded is not None and tensor_checksum(state) != recorded:
        raise PluginError(f"Checkpoint {path} fails its checksum: its content changed after it was written "
                          "(disk or copy error, or an edit).", "Use an intact copy (the previous generation "
                          "beside it, or the original file).")
    return state


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# What a pretraining checkpoint file (``<output>/checkpoints/latest.pt`` / ``final.pt``) holds. Every
# entry is plain tensors / containers, so ``safe_load`` (weights_only=True) reads it:
#   "network":   backbone.network.state_dict()  -> exactly the downstream network's keys
#   "pretext":   pretext.state_dict()           -> heads, EMA teachers, queues (for --resume)
#   "optimizer", "scheduler": their state_dicts (for --resume)
#   "engine":    {"iteration": int, "epoch": int}
#   "rng":       {"torch": ByteTensor, "cuda": [ByteTensor], "numpy": ..., "python": ...}
#   "record":    CheckpointRecord.to_dict()
CHECKPOINT_KEYS = ("network", "pretext", "optimizer", "scheduler", "engine", "rng", "record")


def build_record(backbone: Any, pretext: Any, data_info: dict[str, Any], patch_size: list[int],
                 steps: int = 0) -> CheckpointRecord:
    """The record for a pretext over a backbone adapter trained on data described by ``data_info``.

    ``data_info`` comes from the data source (``UnlabelledSource.info``): axis order, spacing,
    normalisation per channel, and a short description of the data.
    """
    prefixes = backbone.key_prefixes()
    parts = ["stem", "encoder"] + (["decoder"] if getattr(pretext, "trains_decoder", backbone.has_decoder) else [])
    settings = pretext.settings() if hasattr(pretext, "settings") else {}
    return CheckpointRecord(
        backbone_family=backbone.family, backbone_kwargs=backbone.constructor, in_channels=backbone.in_channels,
        spatial_dims=backbone.spatial_dims, axis_order=data_info.get("axis_order", "nnunet"),
        spacing=data_info.get("spacing"), normalization=list(data_info.get("normalization", [])),
        patch_size=[int(p) for p in patch_size], pretext=getattr(pretext, "pretext_name", type(pretext).__name__),
        pretext_settings=settings, key_prefixes=prefixes, pretrained_parts=parts, steps=steps,
        versions=software_versions(), data={k: v for k, v in data_info.items() if k != "normalization"})

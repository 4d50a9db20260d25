"""Read SSL weights from wherever they live, together with what they say about themselves.

Accepted sources:
- a pretraining checkpoint (``{"network": state_dict, "record": {...}, ...}``, see ``checkpoint.CHECKPOINT_KEYS``);
- an nnU-Net export of one (``{"network_weights": ..., "ssl_record": ...}``);
- an SSL bundle directory: ``models/model.pt`` (either of the above, or a bare state dict whose record
  is then read from ``configs/metadata.json`` under ``ssl_record`` / ``record``);
- a bare state dict (a file or an in-memory mapping; ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers
  are looked through). It carries no record, so nothing can be checked: the caller must state at least
  the backbone family, and is warned.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monai_ssl_plugin.checkpoint import CheckpointRecord, safe_load
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.keymap import strip_wrapper_prefixes

SourceLike = str | os.PathLike | Mapping[str, Any]
MODEL_FILES = ("models/model.pt", "models/model.pth")


@dataclass
class SSLSource:
    """Weights plus the record (``None`` for a bare state dict) and where they came from."""

    state: dict[str, torch.Tensor]
    record: CheckpointRecord | None
    origin: str  # a path or "<in-memory ...>"
    kind: str  # "checkpoint" | "nnunet_export" | "bundle" | "state_dict"
    stated: dict[str, Any]  # what the caller stated about a record-less source

    @property
    def family(self) -> str:
        return self.record.backbone_family if self.record is not None else str(self.stated.get("backbone_family"))

    @property
    def in_channels(self) -> int | None:
        return self.record.in_channels if self.record is not None else self.stated.get("in_channels")

    @property
    def axis_order(self) -> str | None:
        return self.record.axis_order if self.record is not None else self.stated.get("axis_order")

    @property
    def normalization(self) -> list[str]:
        return list(self.record.normalization) if self.record is not None else list(self.stated.get("normalization") or [])

    def describe(self) -> str:
        if self.record is None:
            return f"{self.origin} (bare state dict, stated family {self.family})"
        r = self.record
        return f"{self.origin} ({r.backbone_family}, pretext {r.pretext or '?'}, {r.steps} steps, axis order {r.axis_order})"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _split(obj: Any, origin: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, str]:
    """(state, record dict or None, kind) of a loaded object."""
    if not isinstance(obj, Mapping):
        raise PluginError(f"{origin} is not a checkpoint dict (got {type(obj).__name__}).",
                          "Pass a monai-ssl pretraining checkpoint, an SSL bundle directory or a state dict.")
    if isinstance(obj.get("network"), Mapping):
        return dict(obj["network"]), obj.get("record"), "checkpoint"
    if isinstance(obj.get("network_weights"), Mapping):
        return dict(obj["network_weights"]), obj.get("ssl_record"), "nnunet_export"
    for wrapper in ("state_dict", "model"):
        if _is_state_dict(obj.get(wrapper)):
            return dict(obj[wrapper]), obj.get("record"), "state_dict"
    if _is_state_dict(obj):
        return dict(obj), None, "state_dict"
    keys = ", ".join(map(str, list(obj)[:8])) or "<empty>"
    raise PluginError(f"{origin} holds no network weights (keys: {keys}).",
                      "Pass a pretraining checkpoint (checkpoints/final.pt), an SSL bundle directory or a state dict.")


def _record_from_metadata(bundle: Path) -> dict[str, Any] | None:
    meta = bundle / "configs" / "metadata.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PluginError(f"Cannot read {meta} ({type(e).__name__}).", "Fix or remove the bundle's metadata.json.") from None
    rec = data.get("ssl_record") or data.get("record")
    return rec if isinstance(rec, Mapping) else None


def read_source(source: SourceLike, *, backbone_family: str | None = None, in_channels: int | None = None,
                axis_order: str | None = None, normalization: str | list[str] | None = None,
                log: Callable[[str], None] | None = print) -> SSLSource:
    """Read weights and record from ``source``.

    ``backbone_family`` / ``in_channels`` / ``axis_order`` / ``normalization`` state what a bare state dict
    is (``backbone_family`` is required for one). For a source with a record they must agree with it.
    """
    if isinstance(source, Mapping):
        origin = "<in-memory checkpoint>"
        state, rec, kind = _split(source, origin)
    else:
        path = Path(source).expanduser()
        origin = str(path)
        if path.is_dir():
            model = next((path / m for m in MODEL_FILES if (path / m).is_file()), None)
            if model is None:
                raise PluginError(f"{path} is a directory without models/model.pt.",
                                  "Pass an SSL bundle directory that holds trained weights, or the checkpoint file itself.")
            state, rec, _ = _split(safe_load(model), str(model))
            rec = rec or _record_from_metadata(path)
            origin, kind = str(model), "bundle"
        else:
            state, rec, kind = _split(safe_load(path), origin)
    state = strip_wrapper_prefixes(state)
    stated = {"backbone_family": backbone_family, "in_channels": in_channels, "axis_order": axis_order,
              "normalization": [normalization] if isinstance(normalization, str) else normalization}
    record = None
    if rec is not None:
        try:
            record = CheckpointRecord.from_dict(dict(rec))
        except (TypeError, PluginError) as e:
            raise PluginError(f"{origin} has an unreadable record ({str(e).splitlines()[0]}).",
                              "Re-export the weights from the original pretraining checkpoint.") from None
        if backbone_family is not None and backbone_family != record.backbone_family:
            raise PluginError(f"{origin} records backbone {record.backbone_family!r}, but {backbone_family!r} was stated.",
                              "Drop backbone_family (the record is authoritative) or pick the right checkpoint.")
        if in_channels is not None and int(in_channels) != int(record.in_channels):
            raise PluginError(f"{origin} records {record.in_channels} input channel(s), but {in_channels} were stated.",
                              "Drop the statement (the record is authoritative) or pick the right checkpoint.")
        if axis_order is not None and axis_order != record.axis_order:
            raise PluginError(f"{origin} records axis order {record.axis_order!r}, but {axis_order!r} was stated.",
                              "Drop the statement (the record is authoritative) or pick the right checkpoint.")
    else:
        if backbone_family is None:
            raise PluginError(f"{origin} is a bare state dict without a pretraining record, so its backbone, axis order "
                              "and normalisation cannot be checked.",
                              "State what it is: backbone_family='monai.ResNet' (and source_axis_order=, in_channels=), "
                              "or pass the pretraining checkpoint that carries the record.")
        if log is not None:
            log(f"[monai-ssl] WARNING: {origin} has no pretraining record; trusting the caller's statement "
                f"(family {backbone_family}, axis order {axis_order or 'unstated'}, "
                f"in_channels {in_channels or 'unstated'}, "
                f"normalisation {stated['normalization'] or 'unstated'}).")
    return SSLSource(state=state, record=record, origin=origin, kind=kind, stated=stated)

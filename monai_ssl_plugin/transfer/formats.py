"""The one reader of pretrained weights: every file layout the plugin reads, one type for all of them.

Layouts (``kind``):

- ``checkpoint``: a monai-ssl pretraining checkpoint (``network`` + ``record``, see
  ``checkpoint.CHECKPOINT_KEYS``);
- ``nnunet_export``: its nnU-Net export (``network_weights`` + ``ssl_record`` + ``nnssl_adaptation_plan``);
- ``nnssl``: an nnssl checkpoint (``network_weights`` + ``nnssl_adaptation_plan``, no ``ssl_record``):
  the record is derived from the plan and its prefixes renamed to nnU-Net's;
- ``nnunet``: an nnU-Net checkpoint (``network_weights`` only): no record;
- ``bundle``: an SSL bundle directory (``models/model.pt`` in any of these layouts, the record possibly
  in ``configs/metadata.json`` under ``ssl_record`` / ``record``);
- ``state_dict``: a bare state dict (a file or a mapping; ``{"state_dict": ...}`` / ``{"model": ...}``
  wrappers are looked through). It carries no record, so the caller must state the backbone family.

Files are loaded with ``weights_only=True``; DDP / ``torch.compile`` prefixes are stripped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from monai_ssl_plugin.checkpoint import CheckpointRecord, safe_load
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.axes import record_to_nnunet_order, state_to_nnunet_order
from monai_ssl_plugin.transfer.dynunet_record import DYNUNET_FAMILY, dynunet_as_plain_unet
from monai_ssl_plugin.transfer.keymap import remap_keys, strip_wrapper_prefixes
from monai_ssl_plugin.transfer.networks import record_network
from monai_ssl_plugin.transfer.nnssl import is_derived_from_nnssl, record_from_adaptation_plan
from monai_ssl_plugin.transfer.records import check_statements, parse_record

SourceLike = str | os.PathLike | Mapping[str, Any]
MODEL_FILES = ("models/model.pt", "models/model.pth")
_WEIGHTS_FIX = "Pass a monai-ssl pretraining checkpoint (checkpoints/final.pt), its nnU-Net export or an SSL bundle."


@dataclass
class PretrainedWeights:
    """Network weights and what their source says about them.

    ``record`` is None for nnU-Net checkpoints and bare state dicts (then ``stated`` holds what the
    caller said); ``adaptation_plan`` is nnssl's plan when the file carries one; ``axis_transposed``
    lists the kernels the reader transposed from (x, y, z) to (z, y, x).
    """

    state: dict[str, torch.Tensor]
    record: CheckpointRecord | None
    origin: str  # a path or "<in-memory checkpoint>"
    kind: str  # see the module docstring
    path: Path | None = None  # the file read (None for an in-memory source)
    adaptation_plan: dict[str, Any] | None = None
    stated: dict[str, Any] = field(default_factory=dict)
    axis_transposed: list[str] = field(default_factory=list)

    @property
    def from_nnssl(self) -> bool:
        """True when the record was derived from nnssl's adaptation plan (no ssl_record in the file)."""
        return is_derived_from_nnssl(self.record)

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
        if self.record is not None:
            return list(self.record.normalization)
        return list(self.stated.get("normalization") or [])

    def describe(self) -> str:
        if self.record is None:
            return f"{self.origin} (bare state dict, stated family {self.family})"
        r = self.record
        return f"{self.origin} ({r.backbone_family}, pretext {r.pretext or '?'}, {r.steps} steps, axis order {r.axis_order})"


@dataclass
class _Layout:
    """What one loaded object holds, before any interpretation."""

    state: dict[str, torch.Tensor]
    record: Mapping[str, Any] | None
    kind: str
    plan: dict[str, Any] | None = None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _layout(obj: Any, origin: str, accept_bare: bool) -> _Layout:
    """Which layout a loaded object is, or one line saying it holds no weights."""
    if not isinstance(obj, Mapping):
        raise PluginError(f"{origin} is not a checkpoint dict (got {type(obj).__name__}).", _WEIGHTS_FIX)
    plan = obj.get("nnssl_adaptation_plan")
    plan = dict(plan) if isinstance(plan, Mapping) else None
    if isinstance(obj.get("network"), Mapping):
        return _Layout(dict(obj["network"]), obj.get("record"), "checkpoint", plan)
    if isinstance(obj.get("network_weights"), Mapping):
        rec = obj.get("ssl_record")
        kind = "nnunet_export" if rec is not None else ("nnssl" if plan is not None else "nnunet")
        return _Layout(dict(obj["network_weights"]), rec, kind, plan)
    if accept_bare:
        for wrapper in ("state_dict", "model"):
            if _is_state_dict(obj.get(wrapper)):
                return _Layout(dict(obj[wrapper]), obj.get("record"), "state_dict")
        if _is_state_dict(obj):
            return _Layout(dict(obj), None, "state_dict")
    keys = ", ".join(map(str, list(obj)[:8])) or "<empty>"
    raise PluginError(f"{origin} holds no network weights (keys: {keys}).", _WEIGHTS_FIX)


def _record_from_metadata(bundle: Path) -> dict[str, Any] | None:
    meta = bundle / "configs" / "metadata.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise PluginError(f"Cannot read {meta} ({type(e).__name__}).", "Fix or remove the bundle's metadata.json.") from None
    rec = data.get("ssl_record") or data.get("record")
    return rec if isinstance(rec, Mapping) else None


def _load(source: SourceLike, accept_bare: bool) -> tuple[_Layout, str, Path | None]:
    """(layout, origin, file) of a mapping, a file or an SSL bundle directory."""
    if isinstance(source, Mapping):
        return _layout(source, "<in-memory checkpoint>", accept_bare), "<in-memory checkpoint>", None
    path = Path(source).expanduser()
    if not path.is_dir():
        return _layout(safe_load(path), str(path), accept_bare), str(path), path
    model = next((path / m for m in MODEL_FILES if (path / m).is_file()), None)
    if model is None:
        raise PluginError(f"{path} is a directory without models/model.pt.",
                          "Pass an SSL bundle directory that holds trained weights, or the checkpoint file itself.")
    layout = _layout(safe_load(model), str(model), accept_bare)
    layout.record = layout.record or _record_from_metadata(path)
    layout.kind = "bundle"
    return layout, str(model), model


def _canonical_prefixes(state: Mapping[str, torch.Tensor], record: CheckpointRecord
                        ) -> tuple[dict[str, torch.Tensor], CheckpointRecord]:
    """Rename a foreign file's stem / encoder prefixes (e.g. nnssl's ``online_encoder.stages``) to the
    names nnU-Net's network uses (``key_to_stem`` / ``key_to_encoder``), through the one key remapper."""
    named = record.key_prefixes
    if named.get("encoder") == "encoder.stages" and str(named.get("stem", "")).startswith("encoder."):
        return dict(state), record  # already nnU-Net's names (dynamic_network_architectures U-Nets)
    net = record_network(record)
    mapping = {}
    for part, attr in (("stem", "key_to_stem"), ("encoder", "key_to_encoder")):
        src, dst = named.get(part), getattr(net, attr, None)
        if src and dst and src != dst:
            mapping[src.rstrip(".") + "."] = dst.rstrip(".") + "."
    if not mapping:
        return dict(state), record
    state = remap_keys(state, {**mapping, "": ""})
    renamed = [remap_keys({p + ".": 0}, {**mapping, "": ""}) for p in named.get("in_proj") or []]
    record.key_prefixes = {**named, "stem": net.key_to_stem, "encoder": net.key_to_encoder,
                           "in_proj": [next(iter(r)).rstrip(".") for r in renamed]}
    return state, record


def _record_of(layout: _Layout, state: dict[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], Mapping[str, Any] | None]:
    """The record as the file gives it, or derived from nnssl's plan (prefixes renamed to nnU-Net's)."""
    if layout.record is not None or layout.plan is None:
        return state, layout.record
    derived = record_from_adaptation_plan(layout.plan)
    state, derived = _canonical_prefixes(state, derived)
    return state, derived.to_dict()


def _refuse_missing_record(weights: PretrainedWeights, require_record: bool, accept_bare: bool) -> None:
    """Without a record, nnU-Net consumers read nnU-Net files as nnU-Net's; any other reader needs a statement."""
    if weights.record is not None:
        return
    if require_record:
        raise PluginError(f"{weights.origin} carries no pretraining record (ssl_record) and no nnssl_adaptation_plan.",
                          "Export from a monai-ssl pretraining checkpoint, which records architecture, axis order "
                          "and normalisation (or pass an nnssl checkpoint with its adaptation plan).")
    if accept_bare and weights.stated.get("backbone_family") is None:
        raise PluginError(f"{weights.origin} is a bare state dict without a pretraining record, so its backbone, axis "
                          "order and normalisation cannot be checked.",
                          "State what it is: backbone_family='monai.ResNet' (and source_axis_order=, in_channels=), "
                          "or pass the pretraining checkpoint that carries the record.")


def _to_nnunet_order(weights: PretrainedWeights, log: Callable[[str], None] | None = print) -> None:
    """Transpose a ``monai``-ordered record and its kernels to nnU-Net's (z, y, x), in place (exact or refused); a
    ``monai.DynUNet`` checkpoint first becomes the nnU-Net PlainConvUNet whose encoder it computes."""
    if weights.record is not None and weights.record.backbone_family == DYNUNET_FAMILY:
        weights.state, weights.record = dynunet_as_plain_unet(weights.state, weights.record, weights.origin, log)
    record = weights.record
    if record is None or record.axis_order != "monai":
        return
    converted = record_to_nnunet_order(record.to_dict())
    weights.state, weights.axis_transposed = state_to_nnunet_order(weights.state, int(converted.get("spatial_dims", 3)))
    weights.record = parse_record(converted, weights.origin)


def read_weights(source: SourceLike, *, require_record: bool = False, to_nnunet_order: bool = False,
                 accept_bare: bool = True, backbone_family: str | None = None, in_channels: int | None = None,
                 axis_order: str | None = None, normalization: str | list[str] | None = None,
                 log: Callable[[str], None] | None = print) -> PretrainedWeights:
    """Read weights and what they say about themselves from any layout in the module docstring.

    Args:
        source: a file, an SSL bundle directory or an in-memory checkpoint / state dict.
        require_record: refuse a source without a record (nnU-Net checkpoints, bare state dicts).
        to_nnunet_order: the reader is an nnU-Net consumer: transpose a ``monai``-ordered checkpoint to nnU-Net's
            (z, y, x) order (weights and record; exact for nnU-Net's CNNs, refused otherwise), and read a plain-block
            ``monai.DynUNet`` checkpoint as nnU-Net's PlainConvUNet (encoder only, zero conv biases).
        accept_bare: read bare state dicts (a record-less source then needs ``backbone_family``);
            otherwise they count as holding no network weights and an nnU-Net checkpoint passes
            without a record.
        backbone_family, in_channels, axis_order, normalization: the caller's statement about a
            bare state dict (``backbone_family`` required for one); for a source with a record they
            must agree with it.
        log: where the warning about trusting a statement goes (None: silent).

    Raises a one-line :class:`PluginError` for missing, corrupt, foreign or contradicted sources.
    """
    layout, origin, path = _load(source, accept_bare)
    state, rec = _record_of(layout, strip_wrapper_prefixes(layout.state))
    if not state:
        raise PluginError(f"{origin} has an empty or malformed state dict.", "Re-export or re-run the pretraining.")
    stated = {"backbone_family": backbone_family, "in_channels": in_channels, "axis_order": axis_order,
              "normalization": [normalization] if isinstance(normalization, str) else normalization}
    record = parse_record(rec, origin) if rec is not None else None
    weights = PretrainedWeights(strip_wrapper_prefixes(state), record, origin, layout.kind, path, layout.plan, stated)
    _refuse_missing_record(weights, require_record, accept_bare)
    if record is not None:
        check_statements(record, origin, backbone_family=backbone_family, in_channels=in_channels,
                         axis_order=axis_order)
    elif accept_bare and log is not None:
        log(f"[monai-ssl] WARNING: {origin} has no pretraining record; trusting the caller's statement "
            f"(family {backbone_family}, axis order {axis_order or 'unstated'}, in_channels {in_channels or 'unstated'}, "
            f"normalisation {stated['normalization'] or 'unstated'}).")
    if to_nnunet_order:
        _to_nnunet_order(weights, log)
    return weights

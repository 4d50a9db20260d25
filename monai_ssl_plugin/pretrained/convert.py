"""Converters: a published checkpoint (as loaded with ``weights_only=True``) -> the plugin's checkpoint.

Each converter renames keys with the maps in :mod:`monai_ssl_plugin.transfer.keymap`, checks every
tensor against the network the plugin's consumers build (names and shapes; nothing is reshaped),
and writes a :class:`~monai_ssl_plugin.checkpoint.CheckpointRecord` from the file itself plus the
catalog's published facts. The result is read by ``transfer.formats.read_weights`` like a
pretraining checkpoint of the plugin (``{"network": ..., "record": ...}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import torch

from monai_ssl_plugin.checkpoint import CheckpointRecord, software_versions
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretrained.catalog import PretrainedEntry
from monai_ssl_plugin.transfer.formats import read_weights
from monai_ssl_plugin.transfer.keymap import nnssl_to_nnunet, swin_ssl_to_monai, voco_to_monai
from monai_ssl_plugin.transfer.networks import record_network

Converted = tuple[dict[str, torch.Tensor], CheckpointRecord, dict[str, Any]]  # state, record, summary
# Buffers MONAI recomputes from the window size: a file may omit them without losing anything.
DERIVED_BUFFERS = (".attn.relative_position_index",)


def _layout_error(entry: PretrainedEntry, problem: str) -> PluginError:
    return PluginError(f"{entry.name}: the file does not have the published layout ({problem}).",
                       f"Delete the cached copy and download it again (`monai-ssl pretrained get {entry.name} --force`); "
                       f"if it persists, the publisher changed the file: see {entry.homepage or entry.location}.")


def check_against(entry: PretrainedEntry, state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
                  required: tuple[str, ...]) -> None:
    """Every source tensor has the reference's shape, and every reference key under ``required`` is there."""
    for key, value in state.items():
        if key not in reference:
            raise _layout_error(entry, f"unexpected tensor {key}")
        if tuple(value.shape) != tuple(reference[key].shape):
            raise _layout_error(entry, f"{key} has shape {list(value.shape)}, the architecture needs "
                                       f"{list(reference[key].shape)}")
    missing = [k for k in reference if k.startswith(required) and k not in state and not k.endswith(DERIVED_BUFFERS)]
    if missing:
        raise _layout_error(entry, f"{len(missing)} tensor(s) of the pretrained part missing, first {missing[0]}")


def _summary(source_keys: int, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    return {"source_tensors": source_keys, "converted_tensors": len(state), "dropped_tensors": source_keys - len(state)}


def _convert_nnssl(obj: Mapping[str, Any], entry: PretrainedEntry, pretrained_only: bool) -> Converted:
    """nnssl's ``checkpoint_final.pth`` (``network_weights`` + ``nnssl_adaptation_plan``) -> an nnU-Net record;
    with ``pretrained_only`` only the stem and encoder are kept (the rest is the pretext's)."""
    if not isinstance(obj.get("network_weights"), Mapping) or not isinstance(obj.get("nnssl_adaptation_plan"), Mapping):
        raise _layout_error(entry, "no network_weights / nnssl_adaptation_plan")
    weights = read_weights({"network_weights": obj["network_weights"],
                            "nnssl_adaptation_plan": obj["nnssl_adaptation_plan"]}, log=None)
    record = weights.record
    reference = record_network(record).state_dict()
    prefixes = (record.key_prefixes["stem"] + ".", record.key_prefixes["encoder"] + ".")
    state = nnssl_to_nnunet(weights.state, set(reference))
    if pretrained_only:
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    check_against(entry, state, reference, prefixes)
    record.pretext = f"nnssl/{entry.extra.get('method', '?')}"
    record.pretext_settings = {"trainer_name": obj.get("trainer_name"), "epochs": obj.get("current_epoch")}
    return state, record, _summary(len(obj["network_weights"]), state)


def convert_nnssl_resenc(obj: Mapping[str, Any], entry: PretrainedEntry) -> Converted:
    """nnssl's ResEnc-L ``checkpoint_final.pth`` -> nnU-Net's ResidualEncoderUNet (its decoder kept where present)."""
    return _convert_nnssl(obj, entry, pretrained_only=False)


def convert_nnssl_primus(obj: Mapping[str, Any], entry: PretrainedEntry) -> Converted:
    """nnssl's Primus ``checkpoint_final.pth`` -> nnU-Net's ``Primus`` at the pretraining patch: ``down_projection``
    + ``eva`` (what nnssl's and nnU-Net master's loaders transfer); the pretext's mask token and SimMIM decoder
    are dropped. The plan must name the catalog's architecture."""
    plan = obj.get("nnssl_adaptation_plan")
    arch = ((plan.get("architecture_plans") or {}) if isinstance(plan, Mapping) else {}).get("arch_class_name")
    if arch != entry.extra["arch_class_name"]:
        raise _layout_error(entry, f"its adaptation plan names {arch!r}, the catalog {entry.extra['arch_class_name']!r}")
    return _convert_nnssl(obj, entry, pretrained_only=True)


def _swin_backbone(state: Mapping[str, torch.Tensor], use_v2: bool) -> Any:
    """The plugin's SwinUNETR adapter sized like the file (feature size and channels from the patch embedding)."""
    from monai_ssl_plugin.backbones import create_backbone  # heavy (MONAI networks): only when converting

    embed = state.get("swinViT.patch_embed.proj.weight")
    if embed is None:
        return None
    return create_backbone("monai_swinunetr", in_channels=int(embed.shape[1]), feature_size=int(embed.shape[0]),
                           spatial_dims=embed.ndim - 2, use_v2=use_v2)


def _convert_swin(mapped: dict[str, torch.Tensor], source_keys: int, entry: PretrainedEntry,
                  use_v2: bool, parts: tuple[str, ...]) -> Converted:
    backbone = _swin_backbone(mapped, use_v2)
    if backbone is None:
        raise _layout_error(entry, "no patch embedding (swinViT.patch_embed.proj.weight after the key map)")
    reference = backbone.network.state_dict()
    state = {k: v for k, v in mapped.items() if k.startswith(parts)}
    check_against(entry, state, reference, parts)
    facts = entry.extra
    record = CheckpointRecord(
        backbone_family=backbone.family, backbone_kwargs=backbone.constructor, in_channels=backbone.in_channels,
        spatial_dims=backbone.spatial_dims, axis_order="monai", spacing=list(facts["spacing"]),
        normalization=list(facts["normalization"]) * backbone.in_channels, patch_size=list(facts["patch_size"]),
        pretext=facts["pretext"], pretext_settings={}, key_prefixes=backbone.key_prefixes(),
        pretrained_parts=["stem", "encoder"])
    return state, record, _summary(source_keys, state)


def _tensor_dict(obj: Mapping[str, Any], entry: PretrainedEntry, wrappers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The state dict inside ``obj`` (under one of ``wrappers``, or ``obj`` itself), tensors only."""
    inner = next((obj[w] for w in wrappers if isinstance(obj.get(w), Mapping)), obj)
    state = {k: v for k, v in inner.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise _layout_error(entry, f"no tensors (top-level keys: {', '.join(map(str, list(obj)[:6]))})")
    return state


def convert_swin_ssl(obj: Mapping[str, Any], entry: PretrainedEntry) -> Converted:
    """``model_swinvit.pt`` (``{"state_dict": {"module.<swin key>": ...}}``) -> MONAI SwinUNETR's ``swinViT``."""
    state = _tensor_dict(obj, entry, ("state_dict",))
    return _convert_swin(swin_ssl_to_monai(state), len(state), entry, use_v2=False, parts=("swinViT.",))


VOCO_PARTS = ("swinViT.", "encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10.")


def convert_voco_swin(obj: Mapping[str, Any], entry: PretrainedEntry) -> Converted:
    """VoCo's ``VoCo_*_SSL_head.pt`` (a ``VoCoHead`` state dict, bare or under ``state_dict``) -> SwinUNETR v2."""
    state = _tensor_dict(obj, entry, ("state_dict", "net", "student"))
    return _convert_swin(voco_to_monai(state), len(state), entry, use_v2=True, parts=VOCO_PARTS)


CONVERTERS: dict[str, Callable[[Mapping[str, Any], PretrainedEntry], Converted]] = {
    "nnssl_resenc": convert_nnssl_resenc, "nnssl_primus": convert_nnssl_primus, "swin_ssl": convert_swin_ssl,
    "voco_swin": convert_voco_swin}


# Entries used as published: checked, never converted (none today: every entry has a plugin backbone).
VERIFIERS: dict[str, Callable[[Mapping[str, Any], PretrainedEntry], dict[str, Any]]] = {}


def converted_checkpoint(obj: Mapping[str, Any], entry: PretrainedEntry, provenance: dict[str, Any]
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plugin's checkpoint dict for ``obj`` (``network`` + ``record``; the catalog's facts in ``record.data``)
    and the conversion summary."""
    if not isinstance(obj, Mapping):
        raise _layout_error(entry, f"a {type(obj).__name__}, not a dict")
    state, record, summary = CONVERTERS[entry.converter](obj, entry)
    record.versions = software_versions()
    record.data = {**(record.data or {}), "pretrained_catalog": {
        "name": entry.name, "title": entry.title, "paper": entry.paper, "data": entry.data, "licence": entry.licence,
        "location": entry.location, "sha256": provenance.get("sha256"), "sha256_source": provenance.get("sha256_source")}}
    plain = json.loads(json.dumps(record.to_dict()))  # plain types only: weights_only loading
    return {"network": {k: v.detach().clone().contiguous() for k, v in state.items()}, "record": plain}, summary

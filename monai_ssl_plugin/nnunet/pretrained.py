"""Find, check and load pretrained weights into the network an nnU-Net trainer built.

Used by :class:`~monai_ssl_plugin.nnunet.trainers.nnUNetTrainerSSL` right after ``initialize()``:
the record is checked against the plans (axis order, normalisation, architecture) and the
pretrained parts are copied with the plugin's reported loader, so a bad pairing fails before the
first training step with the first mismatching layer named.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.loading import LoadReport, load_weights
from monai_ssl_plugin.export.nnunet import (EXPORT_COMMAND, PretrainedWeights, architecture_differences,
                                            architecture_mismatch_error, first_mismatch, is_seg_layer, plans_fix,
                                            pretrained_file_path, read_pretrained)

ENV_PRETRAINED = "nnUNet_SSL_pretrained"  # explicit file, overrides the conventional place
ENV_ALLOW_NORMALIZATION_MISMATCH = "nnUNet_SSL_allow_normalization_mismatch"  # "1": warn instead of refusing


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def find_pretrained_file(dataset_name: str, configuration: str, plans_identifier: str) -> Path:
    """``$nnUNet_SSL_pretrained`` if set, else the conventional export location; raise if neither exists."""
    explicit = os.environ.get(ENV_PRETRAINED, "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise PluginError(f"{ENV_PRETRAINED}={explicit} does not exist.",
                              f"Point it to a file written by `{EXPORT_COMMAND}`, or unset it to use the "
                              "dataset's conventional file.")
        return path
    path = pretrained_file_path(dataset_name, configuration, plans_identifier)
    if not path.is_file():
        raise PluginError(f"No pretrained weights for {dataset_name} {plans_identifier} {configuration} "
                          f"(looked for {path} and {ENV_PRETRAINED}).",
                          f"Run `{EXPORT_COMMAND} CHECKPOINT --dataset {dataset_name} --configuration {configuration} "
                          f"--plans_identifier {plans_identifier}`, or set {ENV_PRETRAINED}=/path/to/export.pth.")
    return path


def check_record(weights: PretrainedWeights, normalization_schemes: Sequence[str], spacing: Sequence[float] | None,
                 log: Callable[[str], None]) -> None:
    """Refuse weights whose record contradicts the plans; warn about softer differences.

    - axis order must be ``nnunet`` (a ``monai``-ordered checkpoint saw (x, y, z) volumes);
    - normalisation per channel must equal the plans' ``normalization_schemes`` (set
      ``nnUNet_SSL_allow_normalization_mismatch=1`` to only warn);
    - a different spacing is reported (pretrained features transfer less well far from it).
    """
    record = weights.record
    if record is None:
        log(f"[monai-ssl] WARNING: {weights.path} has no ssl_record: axis order and normalisation cannot be checked "
            "(assuming nnU-Net order); loading stem + encoder only.")
        return
    if record.axis_order != "nnunet":
        raise PluginError(f"{weights.path} was pretrained on {record.axis_order}-ordered volumes (x, y, z), but "
                          "nnU-Net feeds its network (z, y, x) volumes; the kernels would see transposed anatomy.",
                          "Pretrain on nnU-Net raw or preprocessed data (axis order 'nnunet') and export again.")
    norm = list(normalization_schemes)
    if not record.normalization:
        log(f"[monai-ssl] WARNING: the record of {weights.path} does not say its intensity normalisation; "
            f"the plans use {norm}.")
    elif list(record.normalization) != norm:
        msg = (f"{weights.path} was pretrained with intensity normalisation {list(record.normalization)}, the plans "
               f"use {norm}.")
        if not _truthy(os.environ.get(ENV_ALLOW_NORMALIZATION_MISMATCH)):
            raise PluginError(msg, "Pretrain on data normalised like this dataset (e.g. its nnU-Net preprocessed "
                                   f"folder), or set {ENV_ALLOW_NORMALIZATION_MISMATCH}=1 to fine-tune anyway.")
        log(f"[monai-ssl] WARNING: {msg} Continuing because {ENV_ALLOW_NORMALIZATION_MISMATCH} is set.")
    if record.spacing is not None and spacing is not None and len(record.spacing) == len(spacing):
        ratio = max(max(a, b) / max(min(a, b), 1e-8) for a, b in zip(record.spacing, spacing))
        if ratio > 1.5:
            log(f"[monai-ssl] NOTE: pretraining spacing {list(record.spacing)} differs from the plans' "
                f"{list(spacing)}; transfer is weaker far from the pretraining spacing (Wald et al. 2025).")


def pretrained_prefixes(weights: PretrainedWeights, network: nn.Module) -> tuple[list[str], list[str]]:
    """(parts, state-dict prefixes) to load: stem + encoder, plus the decoder when the pretext trained it.

    Prefixes come from the record (or nnssl's adaptation plan), falling back to the network's own
    ``key_to_stem`` / ``key_to_encoder``; seg layers are never among them.
    """
    record, plan = weights.record, weights.adaptation_plan or {}
    if record is not None:
        parts = [p for p in ("stem", "encoder", "decoder") if p in record.pretrained_parts]
        named = record.key_prefixes
    else:
        parts = ["stem", "encoder"]
        named = {"stem": plan.get("key_to_stem"), "encoder": plan.get("key_to_encoder")}
    fallback = {"stem": getattr(network, "key_to_stem", None), "encoder": getattr(network, "key_to_encoder", None),
                "decoder": "decoder"}
    prefixes = []
    for part in parts:
        prefix = named.get(part) or fallback.get(part)
        if not prefix:
            raise PluginError(f"Cannot tell where the {part} lives in the network.",
                              "Export again from a monai-ssl checkpoint (its record names the key prefixes).")
        prefixes.append(prefix)
    return parts, prefixes


def _selector(prefixes: Sequence[str]) -> Callable[[str], bool]:
    # "decoder" also covers "decoder.encoder.*", the decoder's reference to the same encoder tensors
    heads = tuple(p.rstrip(".") + "." for p in prefixes)
    return lambda key: key.startswith(heads) or key in prefixes


def load_pretrained_into(network: nn.Module, path: Path, *, normalization_schemes: Sequence[str],
                         spacing: Sequence[float] | None, what: str, dataset_name: str, configuration: str,
                         plans_architecture: dict | None = None, num_input_channels: int | None = None,
                         log: Callable[[str], None] = print) -> LoadReport:
    """Check ``path`` against the plans and copy its pretrained parts into ``network``.

    Raises :class:`PluginError` (before any weight changes) on a contradicting record or when a
    layer of the pretrained parts is missing or shaped differently, naming the first such layer.
    Logs the load report (loaded / skipped / missing) through ``log``.
    """
    weights = read_pretrained(path, require_record=False)
    check_record(weights, normalization_schemes, spacing, log)
    module = network.module if isinstance(getattr(network, "module", None), nn.Module) else network
    module = getattr(module, "_orig_mod", module)
    parts, prefixes = pretrained_prefixes(weights, module)
    include = _selector(prefixes)
    mismatch = first_mismatch(weights.state, module.state_dict(), include=include, exclude=is_seg_layer)
    if mismatch is not None:
        diffs: list[str] = []
        record = weights.record
        if record is not None and num_input_channels is not None and record.in_channels != num_input_channels:
            diffs.append(f"input channels {record.in_channels} vs {num_input_channels}")
        if record is not None and plans_architecture is not None:
            c = record.backbone_kwargs
            diffs += architecture_differences(c["arch_class_name"], c["arch_kwargs"],
                                              plans_architecture["network_class_name"],
                                              plans_architecture["arch_kwargs"])
        raise architecture_mismatch_error(mismatch, what, plans_fix(dataset_name, configuration), diffs)
    log(f"[monai-ssl] loading pretrained {' + '.join(parts)} from {path}")
    report = load_weights(module, weights.state, include=include, exclude=is_seg_layer, min_fraction=0.999,
                          strict_shapes=True, log=log)
    for line in report.details().splitlines()[1:]:
        log(f"[monai-ssl] {line.strip()}")
    state = module.state_dict()
    loaded = {state[k].data_ptr() for k in report.loaded}  # aliases (decoder.encoder.*) share the loaded tensors
    fresh = [k for k, v in state.items() if not include(k) and not is_seg_layer(k) and v.data_ptr() not in loaded]
    log(f"[monai-ssl] pretrained {' + '.join(parts)}: {len(report.loaded)} tensors loaded, "
        f"{len(report.missing)} missing, {len(report.skipped_shape)} skipped; starting fresh: "
        f"{len(report.skipped_filtered)} seg-layer tensors" + (f" + {len(fresh)} others" if fresh else ""))
    return report

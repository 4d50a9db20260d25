"""Find, check and load pretrained weights into the network an nnU-Net trainer built.

Used by :class:`~monai_ssl_plugin.nnunet.trainers.nnUNetTrainerSSL` right after ``initialize()``:
the record is checked against the plans (axis order, normalisation, architecture) and the
pretrained parts are copied with the plugin's reported loader, so a bad pairing fails before the
first training step with the first mismatching layer named and the command that fixes it.

What is loaded (``load``): ``auto`` (the parts the pretext trained: stem + encoder, plus the
decoder for MAE-type pretexts; stem + encoder for nnssl files), ``encoder`` (stem + encoder) or
``encoder+decoder``. Shape differences are adapted only when allowed (``allowed_adaptations``,
see :mod:`monai_ssl_plugin.transfer.adaptation`) and every adaptation is reported. A checkpoint
pretrained on MONAI-ordered (x, y, z) volumes is transposed exactly to nnU-Net's (z, y, x), or
refused when the plans are not the axis-reversed pretrained architecture.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from monai_ssl_plugin.distributed import unwrap
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet.target import (EXPORT_COMMAND, adaptation_hint, architecture_differences, loaded_fraction,
                                            architecture_mismatch_error, plans_fix)
from monai_ssl_plugin.nnunet_paths import pretrained_file_path
from monai_ssl_plugin.transfer.adaptation import DEFAULT_ADAPTATIONS, ShapeAdapter, n_stages, parse_adaptations
from monai_ssl_plugin.transfer.compare import TransferCheck, check_transfer, is_seg_layer, part_selector
from monai_ssl_plugin.transfer.formats import PretrainedWeights, read_weights
from monai_ssl_plugin.transfer.loading import LoadReport, alias_names, load_weights
from monai_ssl_plugin.transfer.normalization import compare_normalization
from monai_ssl_plugin.transfer.records import require_nnunet_backbone

ENV_PRETRAINED = "nnUNet_SSL_pretrained"  # explicit file, overrides the conventional place
ENV_ALLOW_NORMALIZATION_MISMATCH = "nnUNet_SSL_allow_normalization_mismatch"  # "1": warn instead of refusing
LOAD_MODES = ("auto", "encoder", "encoder+decoder")


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

    - axis order must be ``nnunet`` (``read_weights(to_nnunet_order=True)`` has already
      transposed a ``monai``-ordered nnU-Net CNN exactly);
    - normalisation per channel must equal the plans' ``normalization_schemes`` (set
      ``nnUNet_SSL_allow_normalization_mismatch=1`` to only warn). nnssl checkpoints are z-scored
      by construction (nnssl has no CT path): a different scheme (e.g. CTNormalization) is a warning;
    - a different spacing is reported (pretrained features transfer less well far from it).
    """
    record = weights.record
    if record is None:
        log(f"[monai-ssl] WARNING: {weights.origin} has no ssl_record and no nnssl_adaptation_plan: axis order and "
            "normalisation cannot be checked (assuming nnU-Net order); loading stem + encoder only.")
        return
    if record.axis_order != "nnunet":
        require_nnunet_backbone(record, weights.origin)
    norm = list(normalization_schemes)
    if not record.normalization:
        log(f"[monai-ssl] WARNING: the record of {weights.origin} does not say its intensity normalisation; "
            f"the plans use {norm}.")
        _check_spacing(record.spacing, spacing, log)
        return
    # per input channel of the plans, tiled like the stem when the channels adaptation repeats it
    check = compare_normalization(record.normalization, norm, record.in_channels)
    if check.expected is None:  # channel counts that cannot be paired: the architecture check names them
        log(f"[monai-ssl] NOTE: normalisation not compared per channel: pretrained on {check.pretrained_channels} "
            f"channel(s) {list(record.normalization)}, the plans have {len(norm)} {norm}.")
    elif check.differences:
        detail = "; ".join(check.differences)
        if weights.from_nnssl:
            log(f"[monai-ssl] WARNING: {weights.origin} is an nnssl checkpoint, pretrained with "
                f"{list(record.normalization)} (nnssl z-scores everything); the plans use {norm} ({detail}). "
                "Fine-tuning adapts, but features transfer less well across normalisations (monai-ssl pretraining "
                "keeps CTNormalization).")
        else:
            msg = (f"{weights.origin} was pretrained with intensity normalisation {list(record.normalization)}, the plans "
                   f"use {norm} ({detail}).")
            if not _truthy(os.environ.get(ENV_ALLOW_NORMALIZATION_MISMATCH)):
                raise PluginError(msg, "Pretrain on data normalised like this dataset (e.g. its nnU-Net preprocessed "
                                       f"folder), or set {ENV_ALLOW_NORMALIZATION_MISMATCH}=1 to fine-tune anyway.")
            log(f"[monai-ssl] WARNING: {msg} Continuing because {ENV_ALLOW_NORMALIZATION_MISMATCH} is set.")
    else:
        c = check.pretrained_channels
        repeated = f" ({c} channel{'s' if c > 1 else ''} repeated)" if check.repeat > 1 else ""
        log(f"[monai-ssl] normalisation {norm} matches the pretraining record{repeated}")
    _check_spacing(record.spacing, spacing, log)


def _check_spacing(pretrained: Sequence[float] | None, spacing: Sequence[float] | None,
                   log: Callable[[str], None]) -> None:
    """A spacing far from the pretraining one is reported, not refused."""
    if pretrained is not None and spacing is not None and len(pretrained) == len(spacing):
        ratio = max(max(a, b) / max(min(a, b), 1e-8) for a, b in zip(pretrained, spacing))
        if ratio > 1.5:
            log(f"[monai-ssl] NOTE: pretraining spacing {list(pretrained)} differs from the plans' "
                f"{list(spacing)}; transfer is weaker far from the pretraining spacing (Wald et al. 2025).")


def pretrained_prefixes(weights: PretrainedWeights, network: nn.Module, load: str = "auto",
                        log: Callable[[str], None] = print) -> tuple[list[str], list[str]]:
    """(parts, state-dict prefixes) to load; seg layers are never among them.

    ``load="auto"``: stem + encoder, plus the decoder when the record says the pretext trained it;
    ``"encoder"``: stem + encoder; ``"encoder+decoder"``: all three (a warning when the record says the
    decoder was not pretrained). Prefixes come from the record (or nnssl's adaptation plan), falling
    back to the network's own ``key_to_stem`` / ``key_to_encoder``.
    """
    if load not in LOAD_MODES:
        raise PluginError(f"Unknown load mode {load!r}.", f"Use one of {', '.join(LOAD_MODES)} (nnUNet_SSL_load).")
    record, plan = weights.record, weights.adaptation_plan or {}
    trained = list(record.pretrained_parts) if record is not None else ["stem", "encoder"]
    if load == "auto":
        parts = [p for p in ("stem", "encoder", "decoder") if p in trained]
    elif load == "encoder":
        parts = ["stem", "encoder"]
    else:
        parts = ["stem", "encoder", "decoder"]
        if "decoder" not in trained:
            log(f"[monai-ssl] WARNING: the record of {weights.origin} says the decoder was not pretrained "
                f"(pretrained parts: {trained}); loading it anyway because encoder+decoder was asked for.")
    named = record.key_prefixes if record is not None else {"stem": plan.get("key_to_stem"),
                                                            "encoder": plan.get("key_to_encoder")}
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


@dataclass
class PretrainedLoad:
    """What :func:`load_pretrained_into` did: the loader's report plus how each adapted tensor was changed."""

    report: LoadReport
    parts: list[str]
    notes: dict[str, str] = field(default_factory=dict)  # key -> adaptation applied


def _json(x: object) -> object:
    return json.loads(json.dumps(x))


def _check_transposed_architecture(weights: PretrainedWeights, plans_architecture: dict | None, what: str,
                                   fix: str) -> None:
    """A transposed (monai -> nnunet) checkpoint is exact only on the axis-reversed architecture: check it."""
    if not weights.axis_transposed or weights.record is None or plans_architecture is None:
        return
    mine, theirs = weights.record.backbone_kwargs["arch_kwargs"], plans_architecture["arch_kwargs"]
    for name in ("kernel_sizes", "strides"):
        a, b = _json(mine.get(name)), _json(theirs.get(name))
        if a != b:
            raise PluginError(f"{weights.origin} was pretrained on (x, y, z) volumes; transposed to nnU-Net's (z, y, x) "
                              f"its {name} are {a}, but {what} has {b}, so the transposed network would not compute "
                              "the pretrained function.", fix)


@dataclass
class _Selection:
    """The parts to load, their key prefixes, and the encoder stage counts (pretrained, plans)."""

    parts: list[str]
    prefixes: list[str]
    stage_counts: tuple[int | None, int | None]

    @property
    def stages_differ(self) -> bool:
        return None not in self.stage_counts and self.stage_counts[0] != self.stage_counts[1]

    def include(self, decoder: bool = True) -> Callable[[str], bool]:
        return part_selector([px for pt, px in zip(self.parts, self.prefixes) if decoder or pt != "decoder"])


def _read(path: Path, log: Callable[[str], None]) -> PretrainedWeights:
    """The file, in nnU-Net's axis order (a ``monai``-ordered checkpoint transposed exactly, and said so)."""
    weights = read_weights(path, require_record=False, to_nnunet_order=True, accept_bare=False)
    if weights.axis_transposed:
        log(f"[monai-ssl] axis order: {path} was pretrained on (x, y, z) volumes; transposed "
            f"{len(weights.axis_transposed)} kernels to nnU-Net's (z, y, x) (exact for convolutions; kernel sizes and "
            "strides reversed in the record)")
    return weights


def _select(weights: PretrainedWeights, module: nn.Module, load: str, plans_architecture: dict | None,
            allow_stages: bool, log: Callable[[str], None]) -> _Selection:
    """Parts to load; with the ``stages`` adaptation and differing stage counts the decoder starts fresh."""
    parts, prefixes = pretrained_prefixes(weights, module, load, log)
    record = weights.record
    counts = (n_stages(record.backbone_kwargs.get("arch_kwargs")) if record is not None else None,
              n_stages(plans_architecture.get("arch_kwargs")) if plans_architecture else None)
    selection = _Selection(parts, prefixes, counts)
    if selection.stages_differ and allow_stages and "decoder" in parts:
        log(f"[monai-ssl] encoder stages differ ({counts[0]} pretrained vs {counts[1]} in the plans): "
            "loading the common encoder stages; the decoder starts fresh")
        keep = [(pt, px) for pt, px in zip(parts, prefixes) if pt != "decoder"]
        selection = _Selection([k[0] for k in keep], [k[1] for k in keep], counts)
    return selection


def _differences(weights: PretrainedWeights, plans_architecture: dict | None,
                 num_input_channels: int | None) -> list[str]:
    """How the pretrained architecture differs from the plans' (for messages)."""
    record, diffs = weights.record, []
    if record is not None and plans_architecture is not None:
        c = record.backbone_kwargs
        diffs = architecture_differences(c["arch_class_name"], c["arch_kwargs"], plans_architecture["network_class_name"],
                                         plans_architecture["arch_kwargs"])
    if record is not None and num_input_channels is not None and record.in_channels != num_input_channels:
        diffs.insert(0, f"input channels {record.in_channels} vs {num_input_channels}")
    return diffs


def _in_proj(weights: PretrainedWeights, module: nn.Module) -> list[str]:
    named = (weights.record.key_prefixes.get("in_proj") or []) if weights.record is not None else []
    return list(getattr(module, "keys_to_in_proj", ()) or ()) + list(named)


def _dry_run(weights: PretrainedWeights, target: dict, selection: _Selection, allowed: tuple[str, ...],
             in_proj: list[str], refuse: Callable[[TransferCheck], PluginError], min_loaded_fraction: float,
             aliases: dict[str, str]) -> TransferCheck:
    """What the load would do; refused (before any weight changes) naming the first layer and the adaptation
    that would fix it: ``stages`` is offered only if a dry run with it passes and loads at least
    ``min_loaded_fraction`` of the targeted values (two unrelated architectures share no stage)."""
    allow_stages = "stages" in allowed
    check = check_transfer(weights.state, target, selection.include(), exclude=is_seg_layer,
                           adapter=ShapeAdapter(allowed, in_proj), allow_stage_differences=allow_stages)
    if check.problem is None:
        return check
    if selection.stages_differ and not allow_stages:
        encoder = selection.include(decoder=False)
        retry = check_transfer(weights.state, target, encoder, exclude=is_seg_layer,
                               adapter=ShapeAdapter(allowed, in_proj), allow_stage_differences=True)
        if retry.problem is None:
            enough = loaded_fraction(retry, target, encoder, aliases) >= min_loaded_fraction
            check.first_refused_kind = "stages" if enough else None
        else:
            check.first_refused_kind = retry.first_refused_kind
    elif check.first_refused_kind == "stages":
        check.first_refused_kind = None  # a missing key that is not a stage-count difference
    raise refuse(check)


def _checkloaded_fraction(check: TransferCheck, target: dict, selection: _Selection, min_loaded_fraction: float,
                           what: str, fix: str, aliases: dict[str, str]) -> None:
    """With stage differences, refuse when too little of the targeted values would load; lowering the minimum
    is offered only when something would load at all."""
    if not (check.missing or check.unexpected):
        return
    fraction = loaded_fraction(check, target, selection.include(), aliases)
    if fraction < min_loaded_fraction:
        counts = selection.stage_counts
        lower = "; or lower nnUNet_SSL_min_loaded_fraction." if fraction > 0 else \
            " (nothing of the pretrained network has a place in this one)."
        raise PluginError(f"Only {100 * fraction:.1f}% of the targeted pretrained values would load into {what} "
                          f"(need {100 * min_loaded_fraction:.1f}%): {len(check.missing)} tensors missing, e.g. "
                          f"{check.missing[0]} (encoder stages: {counts[0]} pretrained vs {counts[1]}).",
                          fix[:-1] + lower)


def _notes(adapter: ShapeAdapter, weights: PretrainedWeights, report: LoadReport) -> dict[str, str]:
    """How each loaded tensor was changed: shape adaptations and the axis transposition (both reported)."""
    notes = dict(adapter.notes)
    for key in sorted(set(weights.axis_transposed) & set(report.loaded)):
        notes[key] = "axes (x, y, z) -> (z, y, x)" + (f"; {notes[key]}" if key in notes else "")
        if key not in report.adapted:
            report.adapted.append(key)
    return notes


def _log_load(module: nn.Module, target: dict, selection: _Selection, report: LoadReport, notes: dict[str, str],
              log: Callable[[str], None]) -> None:
    """The report, each adaptation with how, and what starts fresh."""
    for line in report.details().splitlines()[1:]:
        if not line.strip().startswith("adapted"):  # listed below, with how
            log(f"[monai-ssl] {line.strip()}")
    shown = [k for k in notes if not k.startswith("decoder.encoder.")]
    for key in shown[:10]:
        log(f"[monai-ssl] adapted {key}: {notes[key]}")
    if len(shown) > 10:
        log(f"[monai-ssl] ... {len(shown) - 10} more adapted")
    include = selection.include()
    loaded = {target[k].data_ptr() for k in report.loaded}  # aliases (decoder.encoder.*) share the loaded tensors
    fresh = [k for k, v in module.state_dict().items()
             if not include(k) and not is_seg_layer(k) and v.data_ptr() not in loaded]
    parts = " + ".join(selection.parts)
    log(f"[monai-ssl] pretrained {parts}: {len(report.loaded)} tensors loaded "
        f"({len(report.adapted)} adapted), {len(report.missing)} missing, {len(report.unexpected)} unexpected, "
        f"{len(report.skipped_shape)} skipped; starting fresh: {len(report.skipped_filtered)} seg-layer tensors"
        + (f" + {len(fresh)} others" if fresh else ""))


def load_pretrained_into(network: nn.Module, path: Path, *, normalization_schemes: Sequence[str],
                         spacing: Sequence[float] | None, what: str, dataset_name: str, configuration: str,
                         plans_architecture: dict | None = None, num_input_channels: int | None = None,
                         load: str = "auto", allowed_adaptations: Sequence[str] | str = DEFAULT_ADAPTATIONS,
                         min_loaded_fraction: float = 0.5, log: Callable[[str], None] = print) -> PretrainedLoad:
    """Check ``path`` against the plans and copy its pretrained parts into ``network``.

    Raises :class:`PluginError` (before any weight changes) on a contradicting record, or when a
    layer of the pretrained parts is missing or shaped differently and no allowed adaptation fits,
    naming the first such layer, the architecture difference and the command that fixes it.
    With the ``stages`` adaptation, differing stage counts load the common encoder stages (the
    decoder then starts fresh) and refuse below ``min_loaded_fraction`` of the targeted values.
    Logs the load report (loaded / adapted / skipped / missing) through ``log``.
    """
    allowed = parse_adaptations(allowed_adaptations)
    weights = _read(path, log)
    fix = plans_fix(dataset_name, configuration, path)
    _check_transposed_architecture(weights, plans_architecture, what, fix)
    check_record(weights, normalization_schemes, spacing, log)
    module = unwrap(network)
    selection = _select(weights, module, load, plans_architecture, "stages" in allowed, log)
    diffs = _differences(weights, plans_architecture, num_input_channels)
    target, in_proj, aliases = module.state_dict(), _in_proj(weights, module), alias_names(module)
    check = _dry_run(weights, target, selection, allowed, in_proj, lambda c: architecture_mismatch_error(
        c.problem, what, plans_fix(dataset_name, configuration, path, adaptation_hint(c, allowed)), diffs),
        min_loaded_fraction, aliases)
    _checkloaded_fraction(check, target, selection, min_loaded_fraction, what, fix, aliases)
    shape_free = [d for d in diffs if not d.startswith("input channels")]
    if shape_free and not check.adapted and not (check.missing or check.unexpected):
        log(f"[monai-ssl] NOTE: the plans' architecture differs where the shapes agree: {'; '.join(shape_free[:3])}")
    log(f"[monai-ssl] loading pretrained {' + '.join(selection.parts)} from {path}")
    adapter = ShapeAdapter(allowed, in_proj)
    partial = check.missing or check.unexpected
    report = load_weights(module, weights.state, include=selection.include(), exclude=is_seg_layer,
                          min_fraction=min(min_loaded_fraction, 0.999) if partial else 0.999,
                          adapt=adapter, strict_shapes=True, log=log)
    notes = _notes(adapter, weights, report)
    _log_load(module, target, selection, report, notes, log)
    return PretrainedLoad(report, selection.parts, notes)

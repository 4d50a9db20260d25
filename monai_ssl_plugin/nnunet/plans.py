"""Plans variants: make a target dataset's nnU-Net plans build the pretrained architecture.

nnU-Net chooses the architecture from each dataset's fingerprint, so weights pretrained on one plan
rarely fit another. A variant copies the target's plans (its spacing, normalisation and
preprocessed data stay as they are: ``data_identifier`` is kept, so nothing is preprocessed again)
and replaces only the architecture, the patch size (made valid for the strides) and the batch size.

Route (b), a shared checkpoint on a new dataset: ``write_plans_variant(dataset, checkpoint=FILE)``
takes the architecture from the checkpoint's record (a monai-ssl checkpoint or export) or from
nnssl's adaptation plan (an nnssl checkpoint), transposed to nnU-Net's axis order when the
checkpoint was pretrained on (x, y, z) volumes; keeps the target's normalisation and spacing unless
asked otherwise (``spacing="checkpoint"`` / ``normalization="checkpoint"``: a new data identifier,
to be preprocessed once); picks a patch size valid for the strides and not larger than the
target's median image allows; and writes the from-scratch twin ``<name>_scratch.json`` with
identical plans. :func:`plans_differences` / :func:`assert_twin_plans` check that two plans differ
only in their name; the trainers log :func:`plans_fingerprint` so the check works from logs too.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from monai_ssl_plugin.backbones.nnunet import load_plans, resolve_configuration
from monai_ssl_plugin.checkpoint import CheckpointRecord, atomic_write_text
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet_paths import dataset_id, preprocessed_dataset_dir
from monai_ssl_plugin.transfer.formats import read_weights
from monai_ssl_plugin.transfer.normalization import compare_normalization
from monai_ssl_plugin.transfer.records import require_nnunet_backbone

TWIN_SUFFIX = "_scratch"
PROVENANCE_KEY = "monai_ssl_plugin"  # nnU-Net ignores unknown plans keys
_NAME_KEYS = ("plans_name", "continue_training")  # what may differ between twins (nnU-Net adds continue_training)


# The bottleneck keeps at least this many voxels per downsampled axis: the rule pretraining enforces
# (engine.network.check_patch_size), so instance norm never sees a single voxel (nnU-Net's planner keeps 4).
MIN_BOTTLENECK = 2


def valid_patch_size(patch: Sequence[int], divisor: Sequence[int]) -> list[int]:
    """Round each side down to a multiple of the network's total stride, and up to ``MIN_BOTTLENECK`` times it
    on every downsampled axis (images smaller than that are padded, as nnU-Net pads)."""
    return [max(d * MIN_BOTTLENECK if d > 1 else 1, (int(p) // d) * d) for p, d in zip(patch, divisor)]


def bottleneck_problem(patch: Sequence[int], arch_kwargs: Mapping[str, Any]) -> str | None:
    """Why ``patch`` would crash this architecture at the first step (None: it fits)."""
    divisor = stride_divisor(arch_kwargs, len(patch))
    bad = [i for i, (p, d) in enumerate(zip(patch, divisor)) if int(p) % d or (d > 1 and int(p) // d < MIN_BOTTLENECK)]
    if not bad:
        return None
    return (f"patch size {list(patch)} does not fit the network's total stride {divisor} (axis {bad[0]}: each side "
            f"must be a multiple of the stride and at least {MIN_BOTTLENECK}x it, else the bottleneck holds "
            f"{[int(p) // d for p, d in zip(patch, divisor)]} voxels per axis)")


def primus_patch_size(arch_kwargs: Mapping[str, Any], patch: Sequence[int] | None, median: Sequence[int] | None,
                      say: Callable[[str], None]) -> list[int]:
    """Primus's patch is its ``input_shape`` (the pretraining patch): its learned position embedding has one entry
    per token of it, so another patch is refused rather than resampled; smaller images are padded."""
    shape = [int(s) for s in arch_kwargs["input_shape"]]
    if patch is not None and [int(p) for p in patch] != shape:
        raise PluginError(f"Primus was pretrained at patch {shape} (one learned position embedding per "
                          f"{list(arch_kwargs['patch_embed_size'])} token); patch {list(patch)} would need it resampled.",
                          f"Drop --patch_size (the variant uses {shape}).")
    if median and any(s > m for s, m in zip(shape, median)):
        say(f"[monai-ssl] NOTE: Primus's patch {shape} (its pretraining patch) is larger than the median image "
            f"{list(median)}: smaller images are padded.")
    return shape


def capped_patch_size(patch: Sequence[int], divisor: Sequence[int], median_shape: Sequence[int] | None) -> list[int]:
    """``patch`` no larger than the median image rounded up to the stride, then valid for the strides."""
    if median_shape:
        patch = [min(int(p), int(math.ceil(float(m) / d)) * d) for p, d, m in zip(patch, divisor, median_shape)]
    return valid_patch_size(patch, divisor)


def stride_divisor(arch_kwargs: Mapping[str, Any], dims: int) -> list[int]:
    """Product of the strides per axis (patch sizes must be multiples of it); no network is built."""
    div = [1] * dims
    for s in arch_kwargs["strides"]:
        s = list(s) if isinstance(s, (list, tuple)) else [s] * dims
        div = [d * int(si) for d, si in zip(div, s)]
    return div


def architecture_from_backbone(constructor: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net's plans ``architecture`` entry for an :class:`NnUNetBackbone` constructor record."""
    return {"network_class_name": constructor["arch_class_name"], "arch_kwargs": copy.deepcopy(constructor["arch_kwargs"]),
            "_kw_requires_import": list(constructor["arch_kwargs_req_import"])}


# ---------------------------------------------------------------------------------------------
# Fairness: twins differ only in their name
# ---------------------------------------------------------------------------------------------
def _plans_dict(plans: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(load_plans(plans) if not isinstance(plans, Mapping) else dict(plans)))


def plans_fingerprint(plans: str | Path | Mapping[str, Any]) -> str:
    """A short hash of everything in the plans except the name: twins have equal fingerprints."""
    d = {k: v for k, v in _plans_dict(plans).items() if k not in _NAME_KEYS}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def plans_differences(a: str | Path | Mapping[str, Any], b: str | Path | Mapping[str, Any],
                      limit: int = 10) -> list[str]:
    """Where two plans differ, ignoring ``plans_name`` (``"configurations.3d_fullres.patch_size: [..] vs [..]"``)."""
    out: list[str] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(x) + [k for k in y if k not in x]:
                if not where and k in _NAME_KEYS:
                    continue
                if k not in x or k not in y:
                    out.append(f"{where + '.' if where else ''}{k}: only in {'the second' if k not in x else 'the first'}")
                else:
                    walk(x[k], y[k], f"{where + '.' if where else ''}{k}")
        elif x != y:
            out.append(f"{where}: {json.dumps(x)[:80]} vs {json.dumps(y)[:80]}")

    walk(_plans_dict(a), _plans_dict(b), "")
    return out


def assert_twin_plans(a: str | Path | Mapping[str, Any], b: str | Path | Mapping[str, Any]) -> None:
    """Raise unless the two plans are identical apart from their name (a fair pretrained-vs-scratch pair)."""
    diffs = plans_differences(a, b)
    if diffs:
        raise PluginError(f"The plans differ beyond their name: {'; '.join(diffs[:3])}.",
                          "Train the pretrained run and its baseline with the same -p (or the twin written by "
                          "monai-ssl nnunet-plans).")


def twin_plans_path(plans_file: str | Path) -> Path:
    """Where :func:`write_plans_variant` writes the from-scratch twin of ``plans_file``."""
    p = Path(plans_file)
    return p.with_name(f"{p.stem}{TWIN_SUFFIX}.json")


# ---------------------------------------------------------------------------------------------
# Writing variants
# ---------------------------------------------------------------------------------------------
def _median_shape(plans: dict, conf: dict, spacing: Sequence[float] | None) -> list[int] | None:
    """The configuration's median image size in voxels, recomputed for another ``spacing``."""
    median = conf.get("median_image_size_in_voxels")
    if spacing is None or [float(s) for s in spacing] == [float(s) for s in conf.get("spacing", [])]:
        return [int(m) for m in median] if median else None
    shape_mm = None
    orig_shape, orig_spacing = plans.get("original_median_shape_after_transp"), plans.get(
        "original_median_spacing_after_transp")
    if orig_shape and orig_spacing and len(orig_shape) == len(spacing):
        shape_mm = [float(s) * float(sp) for s, sp in zip(orig_shape, orig_spacing)]
    elif median and conf.get("spacing"):
        shape_mm = [float(m) * float(sp) for m, sp in zip(median, conf["spacing"])]
    return [max(1, round(mm / float(s))) for mm, s in zip(shape_mm, spacing)] if shape_mm else None


@dataclass
class _Source:
    """Where a variant's architecture comes from: a checkpoint's record or a preset."""

    constructor: dict[str, Any]
    name: str
    record: CheckpointRecord | None = None
    from_nnssl: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)


def _check_channels(record: CheckpointRecord, n_channels: int, dataset_name: str, say: Callable[[str], None]) -> None:
    """More input channels (a multiple) are adapted by the trainers; anything else is refused."""
    if record.in_channels == n_channels:
        return
    if n_channels > record.in_channels and n_channels % record.in_channels == 0:
        say(f"[monai-ssl] NOTE: pretrained on {record.in_channels} input channel(s), dataset {dataset_name} has "
            f"{n_channels}: the trainers repeat the stem's input weights x{n_channels // record.in_channels} "
            "(divided by the repeat) and report it (adaptation 'channels', on by default).")
        return
    raise PluginError(f"The checkpoint was pretrained on {record.in_channels} input channel(s); dataset "
                      f"{dataset_name} has {n_channels}.",
                      "Only more channels, a multiple of the pretrained count, can be adapted; pretrain on "
                      "data with this dataset's channels.")


def _from_checkpoint(checkpoint: str | Path, name: str, n_channels: int, dataset_name: str,
                     say: Callable[[str], None]) -> _Source:
    """Route (b): the architecture of a checkpoint's record (nnU-Net's axis order)."""
    weights = read_weights(checkpoint, require_record=True, to_nnunet_order=True, accept_bare=False)
    record = require_nnunet_backbone(weights.record, str(checkpoint))
    _check_channels(record, n_channels, dataset_name, say)
    if weights.axis_transposed:
        say(f"[monai-ssl] NOTE: {checkpoint} was pretrained on (x, y, z) volumes: the variant uses the axis-reversed "
            "kernel sizes and strides; the trainers transpose the weights exactly.")
    provenance = dict(architecture_from=str(checkpoint), pretrained_family=record.backbone_family,
                      pretrained_in_channels=record.in_channels,
                      pretrained_from="nnssl_adaptation_plan" if weights.from_nnssl else "ssl_record")
    return _Source(record.backbone_kwargs, name, record, weights.from_nnssl, provenance)


def _from_preset(backbone: str, name: str, n_channels: int, dims: int) -> _Source:
    """Route (a): a registered nnU-Net preset."""
    from monai_ssl_plugin.backbones import create_backbone  # heavy (every registered backbone)

    with torch.device("meta"):  # only the constructor is needed: no memory, no initialisation
        constructor = create_backbone(backbone, in_channels=n_channels, spatial_dims=dims).constructor
    return _Source(constructor, name, provenance={"architecture_from": f"preset {backbone}"})


def _target_spacing(spacing: str | Sequence[float], record: CheckpointRecord | None, dims: int) -> list[float] | None:
    """None to keep the target's spacing, else the spacing to preprocess at."""
    if isinstance(spacing, str) and spacing == "target":
        return None
    if isinstance(spacing, str) and spacing == "checkpoint":
        if record is None or record.spacing is None:
            raise PluginError("spacing='checkpoint' needs a checkpoint whose record gives its spacing.",
                              "Pass --spacing with explicit values, or keep the target's spacing.")
        values = [float(s) for s in record.spacing]
    elif isinstance(spacing, str):
        raise PluginError(f"Unknown spacing option {spacing!r}.", "Use 'target', 'checkpoint' or explicit values.")
    else:
        values = [float(s) for s in spacing]
    if len(values) != dims:
        raise PluginError(f"spacing {values} has {len(values)} axes; the configuration is {dims}D.",
                          f"Give {dims} values (in the network's axis order).")
    return values


def _apply_spacing(values: list[float] | None, plans: dict, conf: dict, new_conf: dict, reprocess: list[str]) -> None:
    if values is None or values == [float(s) for s in conf["spacing"]]:
        return
    reprocess.append(f"spacing {list(conf['spacing'])} -> {values}")
    new_conf["median_image_size_in_voxels"] = _median_shape(plans, conf, values) or conf.get("median_image_size_in_voxels")
    new_conf["spacing"] = values


def _apply_normalization(normalization: str, source: _Source, conf: dict, new_conf: dict, reprocess: list[str],
                         dataset_name: str, say: Callable[[str], None]) -> None:
    """Keep the target's schemes (warning about a pretraining mismatch) or take the checkpoint's, per channel."""
    target_norm, record = list(conf["normalization_schemes"]), source.record
    if normalization not in ("target", "checkpoint"):
        raise PluginError(f"Unknown normalization option {normalization!r}.", "Use 'target' or 'checkpoint'.")
    if normalization == "checkpoint":
        if record is None or not record.normalization:
            raise PluginError("normalization='checkpoint' needs a checkpoint whose record gives its normalisation.",
                              "Keep the target's normalisation.")
        # per target channel, tiled as the channels adaptation tiles the stem
        theirs = compare_normalization(record.normalization, target_norm, record.in_channels).expected
        if theirs is None:
            raise PluginError(f"The checkpoint's normalisation {record.normalization} (for {record.in_channels} "
                              f"channel(s)) does not give one scheme for each of the {len(target_norm)} channels.",
                              "Keep the target's normalisation.")
        if theirs != target_norm:
            reprocess.append(f"normalisation {target_norm} -> {theirs}")
            new_conf["normalization_schemes"] = theirs
        return
    if record is None or not record.normalization:
        return
    theirs = list(record.normalization)
    if compare_normalization(theirs, target_norm, record.in_channels).matches:
        return
    if source.from_nnssl:
        say(f"[monai-ssl] WARNING: nnssl pretrained with {theirs} (nnssl z-scores everything); the variant keeps "
            f"{target_norm} of {dataset_name}. The trainers warn about it; monai-ssl pretraining keeps "
            "nnU-Net's CTNormalization.")
    else:
        say(f"[monai-ssl] WARNING: pretrained with {theirs}, {dataset_name} uses {target_norm}: the trainers "
            "refuse this unless nnUNet_SSL_allow_normalization_mismatch=1 (or pass normalization='checkpoint' "
            "and preprocess again).")


def _apply_patch_and_batch(new_conf: dict, conf: dict, source: _Source, patch_size: Sequence[int] | None,
                           batch_size: int | None, dims: int, say: Callable[[str], None]) -> None:
    """An explicit patch made valid for the strides, else the pretraining's (or the target's) capped at the
    median image; never a bottleneck under ``MIN_BOTTLENECK`` voxels per axis; the batch size only when asked."""
    if batch_size is not None:
        new_conf["batch_size"] = int(batch_size)
    if "input_shape" in new_conf["architecture"]["arch_kwargs"]:
        new_conf["patch_size"] = primus_patch_size(new_conf["architecture"]["arch_kwargs"], patch_size,
                                                   new_conf.get("median_image_size_in_voxels"), say)
        return
    divisor = stride_divisor(new_conf["architecture"]["arch_kwargs"], dims)
    if patch_size is not None:
        new_conf["patch_size"] = valid_patch_size([int(p) for p in patch_size], divisor)
    else:
        pretrain = list(source.record.patch_size) if source.record is not None and source.record.patch_size else None
        base = pretrain if pretrain and len(pretrain) == dims else conf["patch_size"]
        new_conf["patch_size"] = capped_patch_size(base, divisor, new_conf.get("median_image_size_in_voxels"))
    median = new_conf.get("median_image_size_in_voxels")
    if median and any(p > m and p == MIN_BOTTLENECK * d for p, m, d in zip(new_conf["patch_size"], median, divisor)):
        say(f"[monai-ssl] NOTE: patch {new_conf['patch_size']} is larger than the median image {list(median)}: the "
            f"network's total stride is {divisor} and its bottleneck needs {MIN_BOTTLENECK} voxels per axis, so "
            "smaller images are padded. A shallower pretrained network fits such data better.")


def _write(ds_dir: Path, plans: dict, configuration: str, new_conf: dict, provenance: dict[str, Any], name: str,
           twin: bool, say: Callable[[str], None]) -> Path:
    """The variant (and its from-scratch twin), atomically."""
    out = copy.deepcopy(plans)
    out["plans_name"] = name
    out["configurations"] = {configuration: new_conf}
    out[PROVENANCE_KEY] = provenance
    target = ds_dir / f"{name}.json"
    atomic_write_text(json.dumps(out, indent=2), target)
    if twin:
        twin_plans = dict(out, plans_name=f"{name}{TWIN_SUFFIX}")
        atomic_write_text(json.dumps(twin_plans, indent=2), twin_plans_path(target))
        assert_twin_plans(out, twin_plans)
        say(f"[monai-ssl] from-scratch twin: -p {name}{TWIN_SUFFIX} (identical plans, fingerprint "
            f"{plans_fingerprint(out)}); or the same -p {name} with -tr nnUNetTrainerScratch")
    return target


def write_plans_variant(dataset: str | int, *, backbone: str | None = None, checkpoint: str | Path | None = None,
                        source_plans: str = "nnUNetPlans", configuration: str = "3d_fullres",
                        plans_identifier: str | None = None, patch_size: Sequence[int] | None = None,
                        batch_size: int | None = None, spacing: str | Sequence[float] = "target",
                        normalization: str = "target", scratch_twin: bool | None = None,
                        log: Callable[[str], None] | None = print) -> Path:
    """Write ``<plans_identifier>.json`` next to the dataset's plans with the pretrained architecture.

    Args:
        dataset: nnU-Net dataset id or name (preprocessed with ``source_plans``).
        backbone: a registered nnU-Net preset (e.g. ``nnunet_plain_small``; route (a): pretrain then
            with these plans). Exactly one of ``backbone`` and ``checkpoint``.
        checkpoint: route (b): a monai-ssl checkpoint / export (architecture from its record) or an
            nnssl checkpoint (from ``nnssl_adaptation_plan``; nnssl's ``ResEncL`` is nnU-Net's
            ResidualEncoderUNet preset). A ``monai``-ordered record gets the axis-reversed
            kernels and strides (the trainers transpose the weights exactly).
        plans_identifier: the new plans name (default ``<source_plans>_ssl`` for a checkpoint,
            ``<source_plans>_<backbone>`` for a preset).
        patch_size: explicit patch (made a multiple of the strides). Default: the checkpoint's
            pretraining patch (else the source plans'), capped at the target's median image size.
        batch_size: default: the source plans'.
        spacing: ``"target"`` (keep, default), ``"checkpoint"`` (the pretraining spacing, in the
            network's axis order) or explicit values. Anything but ``"target"`` needs one
            preprocessing run (a new ``data_identifier``; the command is printed).
        normalization: ``"target"`` (keep, default) or ``"checkpoint"`` (the pretraining scheme per
            channel; needs preprocessing too).
        scratch_twin: also write ``<name>_scratch.json``, identical except its name (default: with
            ``checkpoint``). The same file with ``-tr nnUNetTrainerScratch`` is an equally fair twin.
        log: where notes go (None: silent).

    Returns the plans file; the identifier to pass as ``-p`` is its stem.
    """
    say = log or (lambda msg: None)
    if (backbone is None) == (checkpoint is None):
        raise PluginError("Say which architecture to use.", "Pass exactly one of --backbone NAME or --checkpoint FILE.")
    ds_dir = preprocessed_dataset_dir(dataset)
    plans = load_plans(ds_dir / f"{source_plans}.json")
    conf = resolve_configuration(plans, configuration)
    n_channels, dims = len(conf["normalization_schemes"]), len(conf["patch_size"])
    source = _from_checkpoint(checkpoint, plans_identifier or f"{source_plans}_ssl", n_channels, ds_dir.name, say) \
        if checkpoint is not None else _from_preset(backbone, plans_identifier or f"{source_plans}_{backbone}",
                                                    n_channels, dims)
    if source.name == source_plans:
        raise PluginError(f"The variant would overwrite {source_plans}.json.", "Pass another --plans_identifier.")
    new_conf = {**conf, **{k: v for k, v in copy.deepcopy(plans["configurations"][configuration]).items()
                           if k != "inherits_from"}, "architecture": architecture_from_backbone(source.constructor)}
    reprocess: list[str] = []
    target_spacing = _target_spacing(spacing, source.record, dims)
    _apply_spacing(target_spacing, plans, conf, new_conf, reprocess)
    _apply_normalization(normalization, source, conf, new_conf, reprocess, ds_dir.name, say)
    if reprocess:
        new_conf["data_identifier"] = f"{source.name}_{configuration}"
    _apply_patch_and_batch(new_conf, conf, source, patch_size, batch_size, dims, say)
    provenance = {"source_plans": source_plans, **source.provenance,
                  "spacing": "target" if target_spacing is None else target_spacing, "normalization": normalization}
    twin = scratch_twin if scratch_twin is not None else checkpoint is not None
    target = _write(ds_dir, plans, configuration, new_conf, provenance, source.name, twin, say)
    if reprocess:
        say(f"[monai-ssl] {'; '.join(reprocess)}: preprocess once with `nnUNetv2_preprocess -d {dataset_id(ds_dir.name)} "
            f"-plans_name {source.name} -c {configuration}` (data identifier {new_conf['data_identifier']}).")
    return target

"""Export pretrained weights to nnU-Net, and the architecture check every nnU-Net transfer runs.

The exported ``.pth`` holds:

- ``network_weights``: the *full* pretrained network state dict. nnU-Net's stock
  ``nnUNetv2_train ... -pretrained_weights FILE`` (``load_pretrained_weights``) asserts that every
  key of the target network outside ``.seg_layers.`` is present with the same shape, so an
  encoder-only file cannot pass; a full network from the same plans does (seg layers are skipped,
  so an MAE reconstruction head with ``C_in`` outputs is fine).
- ``nnssl_adaptation_plan``: nnssl's layout (see :mod:`monai_ssl_plugin.export.nnssl`), also
  written as ``adaptation_plan.json`` beside the file.
- ``ssl_record``: our :class:`~monai_ssl_plugin.checkpoint.CheckpointRecord` as a dict.

With ``dataset`` the file goes where the plugin's trainers look:
``$nnUNet_preprocessed/<DatasetName>/ssl_pretrained/<plans_identifier>__<configuration>.pth``,
after checking that the dataset's plans build exactly the pretrained architecture.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.checkpoint import CheckpointRecord, atomic_save, atomic_write_text, safe_load
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.keymap import remap_keys, strip_wrapper_prefixes
from monai_ssl_plugin.export.adaptation import (DEFAULT_ADAPTATIONS, ShapeAdapter, record_to_nnunet_order,
                                                state_to_nnunet_order)
from monai_ssl_plugin.export.nnssl import is_derived_from_nnssl, nnssl_adaptation_plan, record_from_adaptation_plan

SEG_LAYERS = ".seg_layers."  # nnU-Net's load_pretrained_weights skips keys containing this
PRETRAINED_DIR = "ssl_pretrained"  # folder under $nnUNet_preprocessed/<Dataset>/ the trainers read
ADAPTATION_PLAN_FILE = "adaptation_plan.json"
EXPORT_COMMAND = "monai-ssl export-nnunet"


def is_seg_layer(key: str) -> bool:
    """True for nnU-Net's segmentation output layers (never transferred)."""
    return SEG_LAYERS in key or key.startswith(SEG_LAYERS[1:])


def pretrained_file_path(dataset_name: str, configuration: str = "3d_fullres",
                         plans_identifier: str = "nnUNetPlans") -> Path:
    """The conventional place of a dataset's pretrained weights, where the plugin's trainers look."""
    root = os.environ.get("nnUNet_preprocessed")
    if not root:
        raise PluginError("nnUNet_preprocessed is not set.", "export nnUNet_preprocessed=/path/to/nnUNet_preprocessed")
    return Path(root) / dataset_name / PRETRAINED_DIR / f"{plans_identifier}__{configuration}.pth"


# ---------------------------------------------------------------------------------------------
# Reading pretrained files
# ---------------------------------------------------------------------------------------------
@dataclass
class PretrainedWeights:
    """The network weights of a pretrained file and what it says about them.

    ``record`` is None for foreign nnU-Net / nnssl files (no ``ssl_record``); ``adaptation_plan``
    is nnssl's plan when the file carries one.
    """

    path: Path
    state: dict[str, torch.Tensor]
    record: CheckpointRecord | None
    adaptation_plan: dict[str, Any] | None
    axis_transposed: list[str] = field(default_factory=list)  # kernels transposed from (x, y, z) to (z, y, x)

    @property
    def from_nnssl(self) -> bool:
        """True when the record was derived from nnssl's adaptation plan (no ssl_record in the file)."""
        return is_derived_from_nnssl(self.record)


def read_pretrained(path: str | os.PathLike, require_record: bool = True,
                    to_nnunet_order: bool = False) -> PretrainedWeights:
    """Read a pretraining checkpoint (``network`` + ``record``), an nnU-Net export or an nnssl checkpoint
    (``network_weights`` + ``ssl_record`` and/or ``nnssl_adaptation_plan``).

    Loads with ``weights_only=True``. A file without ``ssl_record`` but with nnssl's plan gets a
    record derived from the plan (``record.data["derived_from"] == "nnssl_adaptation_plan"``).
    With ``to_nnunet_order`` a ``monai``-ordered checkpoint is transposed to nnU-Net's (z, y, x)
    order (weights and record; exact for nnU-Net's CNNs, refused otherwise). Raises a one-line
    :class:`PluginError` for missing, corrupt or foreign files (and for files without any record
    when ``require_record``).
    """
    path = Path(path)
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict):
        raise PluginError(f"{path} is not a checkpoint dict.", "Pass a monai-ssl pretraining checkpoint (.pt).")
    if "network" in ckpt:
        state, record = ckpt["network"], ckpt.get("record")
    elif "network_weights" in ckpt:
        state, record = ckpt["network_weights"], ckpt.get("ssl_record")
    else:
        raise PluginError(f"{path} holds no network weights (keys: {', '.join(map(str, list(ckpt)[:8]))}).",
                          "Pass a monai-ssl pretraining checkpoint (checkpoints/final.pt) or its nnU-Net export.")
    if not isinstance(state, Mapping) or not state:
        raise PluginError(f"{path} has an empty or malformed state dict.", "Re-export or re-run the pretraining.")
    plan = ckpt.get("nnssl_adaptation_plan")
    if record is None and isinstance(plan, Mapping):
        derived = record_from_adaptation_plan(dict(plan))
        state, derived = _canonical_prefixes(strip_wrapper_prefixes(state), derived)
        record = derived.to_dict()
    if record is None and require_record:
        raise PluginError(f"{path} carries no pretraining record (ssl_record) and no nnssl_adaptation_plan.",
                          "Export from a monai-ssl pretraining checkpoint, which records architecture, axis order "
                          "and normalisation (or pass an nnssl checkpoint with its adaptation plan).")
    state = strip_wrapper_prefixes(state)
    converted: list[str] = []
    if record is not None and to_nnunet_order and record.get("axis_order") == "monai":
        record = record_to_nnunet_order(record)
        state, converted = state_to_nnunet_order(state, int(record.get("spatial_dims", 3)))
    try:
        rec = CheckpointRecord.from_dict(record) if record is not None else None
    except (TypeError, PluginError) as e:
        raise PluginError(f"{path} has an unreadable record ({str(e).splitlines()[0]}).",
                          "Re-run the export from the original pretraining checkpoint.") from None
    return PretrainedWeights(path, state, rec, plan, converted)


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


# ---------------------------------------------------------------------------------------------
# Networks to compare against (built on the meta device: shapes only, no memory, no init)
# ---------------------------------------------------------------------------------------------
def _build(arch_class_name: str, arch_kwargs: dict, req_import: list[str], in_channels: int,
           out_channels: int) -> nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    with torch.device("meta"):
        return get_network_from_plans(arch_class_name, arch_kwargs, req_import, in_channels, out_channels,
                                      allow_init=False, deep_supervision=True)


def record_network(record: CheckpointRecord) -> nn.Module:
    """The network the record says was pretrained (meta device)."""
    c = record.backbone_kwargs
    return _build(c["arch_class_name"], c["arch_kwargs"], c["arch_kwargs_req_import"], int(record.in_channels),
                  int(c.get("out_channels") or record.in_channels))


@dataclass
class DatasetTarget:
    """A dataset's configuration as nnU-Net's trainer sees it."""

    dataset_name: str
    configuration: str
    plans_identifier: str
    configuration_dict: dict[str, Any]  # resolved (inherits_from applied)
    num_input_channels: int
    num_output_channels: int

    @property
    def architecture(self) -> dict[str, Any]:
        return self.configuration_dict["architecture"]

    def network(self) -> nn.Module:
        """The network ``nnUNetv2_train`` builds for this configuration (meta device)."""
        a = self.architecture
        return _build(a["network_class_name"], a["arch_kwargs"], a["_kw_requires_import"], self.num_input_channels,
                      self.num_output_channels)


def dataset_target(dataset: int | str, configuration: str = "3d_fullres",
                   plans_identifier: str = "nnUNetPlans") -> DatasetTarget:
    """Read ``$nnUNet_preprocessed/<Dataset>/<plans_identifier>.json`` + ``dataset.json`` as nnU-Net does."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from monai_ssl_plugin.backbones.nnunet import load_plans, resolve_configuration
    from monai_ssl_plugin.data.sources import preprocessed_dataset_dir

    folder = preprocessed_dataset_dir(dataset)
    plans = load_plans(folder / f"{plans_identifier}.json")
    conf = resolve_configuration(plans, configuration)
    ds_file = folder / "dataset.json"
    if not ds_file.is_file():
        raise PluginError(f"{ds_file} does not exist.", f"Run nnUNetv2_plan_and_preprocess -d {dataset} first.")
    dataset_json = json.loads(ds_file.read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    return DatasetTarget(folder.name, configuration, plans_identifier, conf,
                         determine_num_input_channels(pm, cm, dataset_json),
                         pm.get_label_manager(dataset_json).num_segmentation_heads)


# ---------------------------------------------------------------------------------------------
# Architecture comparison: name the first layer that differs
# ---------------------------------------------------------------------------------------------
_PART_PATTERNS = (
    (re.compile(r"^(?:decoder\.)?encoder\.stem\."), lambda m: "stem"),
    (re.compile(r"^(?:decoder\.)?encoder\.stages\.(\d+)\."), lambda m: f"encoder stage {m.group(1)}"),
    (re.compile(r"^decoder\.stages\.(\d+)\."), lambda m: f"decoder stage {m.group(1)}"),
    (re.compile(r"^decoder\.transpconvs\.(\d+)\."), lambda m: f"decoder upsampling {m.group(1)}"),
    (re.compile(r"^decoder\.seg_layers\.(\d+)\."), lambda m: f"segmentation layer {m.group(1)}"),
)


def describe_layer(key: str) -> str:
    """Where a state-dict key lives in an nnU-Net U-Net: ``"encoder stage 2"``, ``"stem"``..."""
    for pattern, name in _PART_PATTERNS:
        m = pattern.match(key)
        if m:
            return name(m)
    return key.rsplit(".", 1)[0]


def describe_shape(key: str, shape: tuple[int, ...]) -> str:
    """A tensor shape in layer terms: channels and kernel for convolutions."""
    shape = tuple(int(s) for s in shape)
    if len(shape) >= 3:
        kernel = "x".join(map(str, shape[2:]))
        if "transpconvs" in key:  # ConvTranspose weights are (in, out, *kernel)
            return f"{shape[0]} in / {shape[1]} out channels, kernel {kernel}"
        return f"{shape[0]} out / {shape[1]} in channels, kernel {kernel}"
    if len(shape) == 1:
        return f"{shape[0]} channels"
    return f"shape {shape}"


def first_mismatch(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                   include: Callable[[str], bool] | None = None,
                   exclude: Callable[[str], bool] | None = is_seg_layer) -> str | None:
    """Describe the first target layer (in network order) that the source lacks or shapes differently.

    Only keys selected by ``include`` and not ``exclude`` count. After the target's keys, source
    keys the target lacks are reported (the checkpoint has more stages/blocks). None: they match.
    """
    include = include or (lambda k: True)
    exclude = exclude or (lambda k: False)
    for key, dst in target.items():
        if exclude(key) or not include(key):
            continue
        where = describe_layer(key)
        if key not in source:
            return f"{key} ({where}) is in the network but not in the checkpoint"
        src = source[key]
        if tuple(src.shape) != tuple(dst.shape):
            return (f"{key} ({where}): checkpoint {describe_shape(key, tuple(src.shape))} vs network "
                    f"{describe_shape(key, tuple(dst.shape))}")
    for key in source:
        if key not in target and include(key) and not exclude(key):
            return f"{key} ({describe_layer(key)}) is in the checkpoint but not in the network"
    return None


def architecture_differences(a_class: str, a_kwargs: Mapping[str, Any], b_class: str,
                             b_kwargs: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two nnU-Net architectures (``a`` = checkpoint, ``b`` = plans)."""
    a_kwargs, b_kwargs = json.loads(json.dumps(a_kwargs)), json.loads(json.dumps(b_kwargs))  # tuples -> lists
    out = []
    if a_class.rsplit(".", 1)[-1] != b_class.rsplit(".", 1)[-1]:
        out.append(f"network class {a_class.rsplit('.', 1)[-1]} vs {b_class.rsplit('.', 1)[-1]}")
    if a_kwargs.get("n_stages") != b_kwargs.get("n_stages"):
        out.append(f"n_stages {a_kwargs.get('n_stages')} vs {b_kwargs.get('n_stages')}")
    per_stage = ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage", "n_blocks_per_stage",
                 "n_conv_per_stage_decoder")
    for name in per_stage:
        a, b = a_kwargs.get(name), b_kwargs.get(name)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            for i, (x, y) in enumerate(zip(a, b)):
                if x != y:
                    out.append(f"{name} at stage {i}: {x} vs {y}")
                    break
            else:
                out.append(f"{name} has {len(a)} vs {len(b)} entries")
        else:
            out.append(f"{name} {a} vs {b}")
    for name in sorted(set(a_kwargs) | set(b_kwargs)):
        if name not in per_stage and name != "n_stages" and a_kwargs.get(name) != b_kwargs.get(name):
            out.append(f"{name} {a_kwargs.get(name)} vs {b_kwargs.get(name)}")
    return out


def architecture_mismatch_error(mismatch: str, what: str, fix: str,
                                differences: list[str] | None = None) -> PluginError:
    """The one-line error for an architecture mismatch (first layer, then up to three plan differences)."""
    extra = f" (architectures differ: {'; '.join(differences[:3])})" if differences else ""
    return PluginError(f"The pretrained architecture does not match {what}: first mismatching layer {mismatch}{extra}.",
                       fix)


PLANS_COMMAND = "monai-ssl nnunet-plans"
VARIANT_IDENTIFIER = "nnUNetPlans_ssl"  # write_plans_variant's default name for checkpoint variants


def plans_fix(dataset: str, configuration: str, checkpoint: str | os.PathLike | None = None,
              hint: str | None = None) -> str:
    """How to make a dataset's plans build the pretrained architecture: the command, then alternatives."""
    ckpt = str(checkpoint) if checkpoint is not None else "CHECKPOINT"
    conf = f" --configuration {configuration}" if configuration != "3d_fullres" else ""
    text = (f"Run `{PLANS_COMMAND} {dataset} --checkpoint {ckpt}{conf}` (writes plans with the pretrained "
            f"architecture) and train with -p {VARIANT_IDENTIFIER}, or pretrain with this dataset's own plans")
    return text + (f"; {hint}" if hint else "") + "."


@dataclass
class TransferCheck:
    """What loading ``source`` into ``target`` would do (computed before any weight changes)."""

    problem: str | None  # the first thing that cannot be loaded or adapted, described; None = fine
    adapted: dict[str, str]  # key -> how it would be adapted
    missing: list[str]  # selected target keys the source lacks (allowed with stage adaptation)
    unexpected: list[str]  # selected source keys the target lacks (allowed with stage adaptation)
    first_refused_kind: str | None = None  # "channels" / "kernels" / "stages" when allowing it would help


def check_transfer(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                   include: Callable[[str], bool], exclude: Callable[[str], bool] | None = is_seg_layer,
                   adapter: ShapeAdapter | None = None, allow_stage_differences: bool = False) -> TransferCheck:
    """Like :func:`first_mismatch`, but with the allowed adaptations applied (dry run, nothing loaded).

    - a shape difference the ``adapter`` can adapt -> ``adapted``; otherwise the problem;
    - a key only one side has (e.g. an encoder stage the other network lacks) -> ``missing`` /
      ``unexpected`` when ``allow_stage_differences``; otherwise the problem.
    """
    exclude = exclude or (lambda k: False)
    adapted: dict[str, str] = {}
    missing: list[str] = []
    unexpected: list[str] = []
    problem = kind = None
    for key, dst in target.items():
        if exclude(key) or not include(key):
            continue
        where = describe_layer(key)
        if key not in source:
            if allow_stage_differences:
                missing.append(key)
                continue
            if problem is None:  # the hint follows the first problem only: a later one cannot make it fixable
                problem, kind = f"{key} ({where}) is in the network but not in the checkpoint", "stages"
            continue
        src = source[key]
        if tuple(src.shape) == tuple(dst.shape):
            continue
        out = adapter(key, src, dst) if adapter is not None else None
        if out is not None:
            adapted[key] = adapter.notes.get(key, "adapted")
            continue
        if problem is None:
            why = adapter.refusals.get(key) if adapter is not None else None
            problem = (f"{key} ({where}): checkpoint {describe_shape(key, tuple(src.shape))} vs network "
                       f"{describe_shape(key, tuple(dst.shape))}" + (f" [{why}]" if why else ""))
            s_shape, d_shape = tuple(src.shape), tuple(dst.shape)
            if len(s_shape) >= 3 and len(s_shape) == len(d_shape) and s_shape[0] == d_shape[0]:
                if s_shape[1] != d_shape[1] and (adapter is None or adapter.is_in_proj(key)):
                    kind = "channels"
                elif s_shape[1] == d_shape[1] and s_shape[2:] != d_shape[2:]:
                    kind = "kernels"
    for key in source:
        if key in target or exclude(key) or not include(key):
            continue
        if allow_stage_differences:
            unexpected.append(key)
            continue
        if problem is None:
            problem, kind = f"{key} ({describe_layer(key)}) is in the checkpoint but not in the network", "stages"
    return TransferCheck(problem, adapted, missing, unexpected, kind)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
def _require_nnunet_record(weights: PretrainedWeights) -> CheckpointRecord:
    record = weights.record
    assert record is not None
    if not record.backbone_family.startswith("nnunet."):
        raise PluginError(f"{weights.path} holds a {record.backbone_family} backbone, not an nnU-Net network.",
                          "Export to nnU-Net needs a checkpoint pretrained on an nnU-Net backbone "
                          "(nnunet_* presets or NnUNetBackbone.from_plans).")
    if record.axis_order != "nnunet":  # read_pretrained(to_nnunet_order=True) converts what it can
        raise PluginError(f"{weights.path} was pretrained on {record.axis_order}-ordered volumes (x, y, z); nnU-Net "
                          f"feeds its networks (z, y, x).",
                          "Pretrain on nnU-Net raw or preprocessed data (axis order 'nnunet').")
    return record


@dataclass
class NormalizationCheck:
    """The pretrained intensity normalisation compared per input channel of the plans.

    ``expected[j]`` is the scheme pretraining used for what the fine-tuned network's input channel ``j``
    reads (None when the channel counts cannot be paired: the architecture check refuses those);
    ``differences`` names each channel whose plans scheme differs; ``repeat`` is how often the
    pretrained channels are tiled by the ``channels`` adaptation (1: no adaptation).
    """

    expected: list[str] | None
    plans: list[str]
    pretrained_channels: int
    repeat: int
    differences: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.expected is not None and not self.differences


def compare_normalization(pretrained: Sequence[str] | None, plans: Sequence[str],
                          pretrained_channels: int | None = None) -> NormalizationCheck:
    """Pair the plans' scheme of each input channel with the pretrained scheme behind it.

    A record giving one scheme for a multi-channel pretraining applies it to every pretrained channel.
    With more input channels than pretrained (a multiple), the ``channels`` adaptation tiles the stem
    (:func:`~monai_ssl_plugin.export.adaptation.repeat_input_channels`: input channel ``j`` gets the
    weights of pretrained channel ``j mod C``), so the schemes are tiled the same way and compared
    channel by channel: ``[CT, ZScore]`` pretrained fits ``[CT, ZScore, CT, ZScore]``, not
    ``[CT, CT, ZScore, ZScore]``.
    """
    schemes, plans = [str(s) for s in (pretrained or [])], [str(s) for s in plans]
    channels = int(pretrained_channels or len(schemes) or 1)
    if len(schemes) == 1 and channels > 1:
        schemes = schemes * channels
    n = len(plans)
    if not schemes or len(schemes) != channels or n < channels or n % channels:
        return NormalizationCheck(None, plans, channels, 1)
    repeat = n // channels
    expected = schemes * repeat
    diffs = [f"channel {j}: {have} in the plans, {want} pretrained"
             + (f" (pretrained channel {j % channels} repeated)" if repeat > 1 else "")
             for j, (have, want) in enumerate(zip(plans, expected)) if have != want]
    return NormalizationCheck(expected, plans, channels, repeat, diffs)


def normalization_matches(pretrained: Sequence[str] | None, plans: Sequence[str],
                          pretrained_channels: int | None = None) -> tuple[bool, int]:
    """(equal per channel, repeat) of :func:`compare_normalization`."""
    check = compare_normalization(pretrained, plans, pretrained_channels)
    return check.matches, check.repeat


def part_selector(prefixes: list[str]) -> Callable[[str], bool]:
    """Keys under any of the prefixes. ``"decoder"`` also covers ``decoder.encoder.*``, the decoder's
    reference to the encoder's tensors; an encoder-only selection leaves those aliases out (they share
    the loaded tensors, and encoder-only files do not have them)."""
    heads = tuple(p.rstrip(".") + "." for p in prefixes)
    return lambda key: key.startswith(heads) or key in prefixes


def export_nnunet(checkpoint_path: str | os.PathLike, output_file: str | os.PathLike | None = None,
                  dataset: int | str | None = None, configuration: str = "3d_fullres",
                  plans_identifier: str = "nnUNetPlans",
                  allowed_adaptations: tuple[str, ...] | list[str] | str = DEFAULT_ADAPTATIONS) -> Path:
    """Write an nnU-Net pretrained-weights file (and ``adaptation_plan.json`` beside it).

    Args:
        checkpoint_path: a monai-ssl pretraining checkpoint, an earlier export, or an nnssl
            checkpoint (``network_weights`` + ``nnssl_adaptation_plan``; its record is derived from
            the plan). A ``monai``-ordered checkpoint is transposed to nnU-Net's (z, y, x) order
            (exact for nnU-Net's CNNs; the written record says ``axis_order_converted_from``).
        output_file: where to write; default: the conventional place for ``dataset`` (see
            :func:`pretrained_file_path`), else ``<checkpoint stem>_nnunet.pth`` beside the checkpoint.
        dataset: nnU-Net dataset id or name. When given, the dataset's plans must build the
            pretrained architecture (every non-seg layer, same shape, up to the allowed
            adaptations), checked before writing.
        configuration, plans_identifier: which plans configuration the weights are for.
        allowed_adaptations: shape differences the fine-tuning trainer will adapt (see
            :mod:`monai_ssl_plugin.export.adaptation`; default: input channels only). The file
            keeps the pretrained shapes; the trainer adapts at load time and reports it.

    Returns the written file. Every check runs before anything is written; both files are written
    atomically (the ``.pth`` last, so its presence means a complete export).
    """
    from monai_ssl_plugin.export.adaptation import parse_adaptations

    allowed = parse_adaptations(allowed_adaptations)
    weights = read_pretrained(checkpoint_path, to_nnunet_order=True)
    record = _require_nnunet_record(weights)
    ctor = record.backbone_kwargs
    own = record_network(record).state_dict()
    # a derived (nnssl) record only vouches for the stem + encoder; seg layers of foreign files may differ
    self_include = part_selector([record.key_prefixes["stem"], record.key_prefixes["encoder"]]) \
        if weights.from_nnssl else (lambda k: True)
    mismatch = first_mismatch(weights.state, own, include=self_include,
                              exclude=is_seg_layer if weights.from_nnssl else None)
    if mismatch is not None:
        raise PluginError(f"{weights.path}: the weights do not match the architecture its record describes "
                          f"(first mismatching layer {mismatch}).", "The checkpoint is inconsistent; re-run the "
                          "pretraining or export from its final checkpoint.")
    if dataset is not None:
        target = dataset_target(dataset, configuration, plans_identifier)
        arch = target.architecture
        network = target.network()
        stages = "stages" in allowed
        include = part_selector([record.key_prefixes["stem"], record.key_prefixes["encoder"]]) \
            if stages or weights.from_nnssl else (lambda k: True)
        adapter = ShapeAdapter(allowed, in_proj=list(getattr(network, "keys_to_in_proj", ()))
                               + list(record.key_prefixes.get("in_proj") or []))
        check = check_transfer(weights.state, network.state_dict(), include, adapter=adapter,
                               allow_stage_differences=stages)
        if check.problem is not None:
            diffs = architecture_differences(ctor["arch_class_name"], ctor["arch_kwargs"], arch["network_class_name"],
                                             arch["arch_kwargs"])
            if record.in_channels != target.num_input_channels:
                diffs.insert(0, f"input channels {record.in_channels} vs {target.num_input_channels}")
            raise architecture_mismatch_error(
                check.problem, f"{target.dataset_name} {plans_identifier} {configuration}",
                plans_fix(target.dataset_name, configuration, checkpoint_path, adaptation_hint(check, allowed)), diffs)
        if check.adapted:
            warnings.warn(f"{len(check.adapted)} tensor(s) differ in shape from {target.dataset_name} "
                          f"{plans_identifier}; the fine-tuning trainer adapts them at load time, e.g. "
                          f"{next(iter(check.adapted))}: {next(iter(check.adapted.values()))}.", stacklevel=2)
        norm = list(target.configuration_dict.get("normalization_schemes", []))
        norm_check = compare_normalization(record.normalization, norm, record.in_channels)
        if record.normalization and norm and norm_check.differences:
            then = ("nnUNetTrainerSSL warns (nnssl z-scores everything)" if weights.from_nnssl else
                    "nnUNetTrainerSSL will refuse it unless nnUNet_SSL_allow_normalization_mismatch=1")
            warnings.warn(f"{weights.path} was pretrained with normalisation {record.normalization}, "
                          f"{target.dataset_name} {configuration} uses {norm} "
                          f"({'; '.join(norm_check.differences[:3])}); {then}.", stacklevel=2)
        if output_file is None:
            output_file = pretrained_file_path(target.dataset_name, configuration, plans_identifier)
    elif output_file is None:
        src = Path(checkpoint_path)
        output_file = src.with_name(f"{src.stem}_nnunet.pth")
    output_file = Path(output_file)
    if output_file.resolve() == weights.path.resolve():
        raise PluginError(f"The export would overwrite its own input {output_file}.", "Pass another output file.")
    if weights.from_nnssl:  # keep nnssl's own plan (its pretrain_plan says more than a derived record)
        plan = json.loads(json.dumps(weights.adaptation_plan))
        plan.update(key_to_encoder=record.key_prefixes["encoder"], key_to_stem=record.key_prefixes["stem"],
                    keys_to_in_proj=list(record.key_prefixes.get("in_proj") or []))
    else:
        plan = nnssl_adaptation_plan(record, configuration)
    payload = {"network_weights": {k: v.detach().cpu().contiguous() for k, v in weights.state.items()},
               # JSON round trip: plain str/list/dict only, so weights_only loading never meets a foreign type
               "nnssl_adaptation_plan": plan, "ssl_record": json.loads(json.dumps(record.to_dict()))}
    atomic_write_text(json.dumps(plan, indent=2), output_file.parent / ADAPTATION_PLAN_FILE)
    atomic_save(payload, output_file)
    return output_file


def adaptation_hint(check: TransferCheck, allowed: tuple[str, ...] | list[str]) -> str | None:
    """``"or let the trainer adapt it: nnUNet_SSL_adapt=channels,kernels"`` when allowing one kind would help."""
    kind = check.first_refused_kind
    if kind is None or kind in allowed:
        return None
    what = {"channels": "repeat the stem over the extra input channels",
            "kernels": "average the pretrained kernels over the changed axes",
            "stages": "load the stages both networks have"}[kind]
    return f"or let the trainer {what}: nnUNet_SSL_adapt={','.join(list(allowed) + [kind])}"

"""The nnU-Net target of a transfer: a dataset's plans, the network they build, and what to say when a
checkpoint does not fit them (the first differing layer, the architecture differences, the command
that writes matching plans, the adaptation that would help).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from monai_ssl_plugin.backbones.nnunet import load_plans, resolve_configuration
from monai_ssl_plugin.checkpoint import CheckpointRecord
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet_paths import preprocessed_dataset_dir
from monai_ssl_plugin.transfer.adaptation import ShapeAdapter
from monai_ssl_plugin.transfer.compare import TransferCheck, check_transfer, first_mismatch, is_seg_layer, part_selector
from monai_ssl_plugin.transfer.formats import PretrainedWeights
from monai_ssl_plugin.transfer.loading import alias_names
from monai_ssl_plugin.transfer.networks import meta_network, record_network

EXPORT_COMMAND = "monai-ssl export-nnunet"
PLANS_COMMAND = "monai-ssl nnunet-plans"
VARIANT_IDENTIFIER = "nnUNetPlans_ssl"  # write_plans_variant's default name for checkpoint variants
STAGES_MIN_FRACTION = 0.5  # the trainers' default nnUNet_SSL_min_loaded_fraction


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
        return meta_network(a["network_class_name"], a["arch_kwargs"], a["_kw_requires_import"],
                            self.num_input_channels, self.num_output_channels)


def dataset_target(dataset: int | str, configuration: str = "3d_fullres",
                   plans_identifier: str = "nnUNetPlans") -> DatasetTarget:
    """Read ``$nnUNet_preprocessed/<Dataset>/<plans_identifier>.json`` + ``dataset.json`` as nnU-Net does."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels  # heavy: nnU-Net
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

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


def plans_fix(dataset: str, configuration: str, checkpoint: str | os.PathLike | None = None,
              hint: str | None = None) -> str:
    """How to make a dataset's plans build the pretrained architecture: the command, then alternatives."""
    ckpt = str(checkpoint) if checkpoint is not None else "CHECKPOINT"
    conf = f" --configuration {configuration}" if configuration != "3d_fullres" else ""
    text = (f"Run `{PLANS_COMMAND} {dataset} --checkpoint {ckpt}{conf}` (writes plans with the pretrained "
            f"architecture) and train with -p {VARIANT_IDENTIFIER}, or pretrain with this dataset's own plans")
    return text + (f"; {hint}" if hint else "") + "."


def adaptation_hint(check: TransferCheck, allowed: tuple[str, ...] | list[str]) -> str | None:
    """``"or let the trainer adapt it: nnUNet_SSL_adapt=channels,kernels"`` when allowing one kind would help."""
    kind = check.first_refused_kind
    if kind is None or kind in allowed:
        return None
    what = {"channels": "repeat the stem over the extra input channels",
            "kernels": "average the pretrained kernels over the changed axes",
            "stages": "load the stages both networks have"}[kind]
    return f"or let the trainer {what}: nnUNet_SSL_adapt={','.join(list(allowed) + [kind])}"


def check_checkpoint_consistent(weights: PretrainedWeights, record: CheckpointRecord) -> None:
    """The weights must be the network their record describes (a derived nnssl record vouches only for
    the stem and encoder; the seg layers of foreign files may differ)."""
    include = part_selector([record.key_prefixes["stem"], record.key_prefixes["encoder"]]) \
        if weights.from_nnssl else None
    mismatch = first_mismatch(weights.state, record_network(record).state_dict(), include=include,
                              exclude=is_seg_layer if weights.from_nnssl else None)
    if mismatch is not None:
        raise PluginError(f"{weights.origin}: the weights do not match the architecture its record describes "
                          f"(first mismatching layer {mismatch}).", "The checkpoint is inconsistent; re-run the "
                          "pretraining or export from its final checkpoint.")


def loaded_fraction(check: TransferCheck, target: Mapping[str, Any], include: Callable[[str], bool],
                    aliases: Mapping[str, str]) -> float:
    """Share of the targeted values (each tensor once, whatever its names) that the checked load would fill."""
    def values(keys) -> int:
        return sum(target[k].numel() for k in {aliases.get(k, k) for k in keys} if target[k].is_floating_point())

    targeted = [k for k in target if include(k) and not is_seg_layer(k)]
    return 1.0 - values(check.missing) / max(values(targeted), 1)


def _stages_would_load(weights: PretrainedWeights, network: nn.Module, include: Callable[[str], bool],
                       adapter: ShapeAdapter, min_fraction: float = STAGES_MIN_FRACTION) -> bool:
    """True when loading the stages both networks have passes and fills ``min_fraction`` of the encoder."""
    state = network.state_dict()
    retry = check_transfer(weights.state, state, include, adapter=adapter, allow_stage_differences=True)
    return retry.problem is None and loaded_fraction(retry, state, include, alias_names(network)) >= min_fraction


def check_fits_target(weights: PretrainedWeights, record: CheckpointRecord, target: DatasetTarget,
                      allowed: tuple[str, ...], checkpoint: str | os.PathLike) -> TransferCheck:
    """Refuse weights the target's plans cannot load (up to the allowed adaptations), naming the first layer;
    the ``stages`` hint only when loading the common stages would fill enough of the encoder."""
    network = target.network()
    encoder = part_selector([record.key_prefixes["stem"], record.key_prefixes["encoder"]])
    include = encoder if "stages" in allowed or weights.from_nnssl else (lambda k: True)
    adapter = ShapeAdapter(allowed, in_proj=list(getattr(network, "keys_to_in_proj", ()))
                           + list(record.key_prefixes.get("in_proj") or []))
    check = check_transfer(weights.state, network.state_dict(), include, adapter=adapter,
                           allow_stage_differences="stages" in allowed)
    if check.problem is None and "stages" in allowed and not _stages_would_load(weights, network, encoder, adapter):
        check.problem = (f"{check.missing[0] if check.missing else 'the encoder'} (and most of the encoder) has no "
                         f"counterpart in the checkpoint: under {100 * STAGES_MIN_FRACTION:.0f}% of it would load")
    if check.problem is None:
        return check
    if check.first_refused_kind == "stages" and not _stages_would_load(weights, network, encoder, adapter):
        check.first_refused_kind = None  # unrelated architectures: loading the common stages would load nothing
    ctor, arch = record.backbone_kwargs, target.architecture
    diffs = architecture_differences(ctor["arch_class_name"], ctor["arch_kwargs"], arch["network_class_name"],
                                     arch["arch_kwargs"])
    if record.in_channels != target.num_input_channels:
        diffs.insert(0, f"input channels {record.in_channels} vs {target.num_input_channels}")
    raise architecture_mismatch_error(
        check.problem, f"{target.dataset_name} {target.plans_identifier} {target.configuration}",
        plans_fix(target.dataset_name, target.configuration, checkpoint, adaptation_hint(check, allowed)), diffs)

"""Write pretrained weights as an nnU-Net pretrained-weights file.

The exported ``.pth`` holds:

- ``network_weights``: the *full* pretrained network state dict. nnU-Net's stock
  ``nnUNetv2_train ... -pretrained_weights FILE`` (``load_pretrained_weights``) asserts that every
  key of the target network outside ``.seg_layers.`` is present with the same shape, so an
  encoder-only file cannot pass; a full network from the same plans does (seg layers are skipped,
  so an MAE reconstruction head with ``C_in`` outputs is fine).
- ``nnssl_adaptation_plan``: nnssl's layout (see :mod:`monai_ssl_plugin.transfer.nnssl`), also
  written as ``adaptation_plan.json`` beside the file; its recommended fine-tuning patch and, for a
  PlainConvUNet on a dataset with more channels, the stem's layout are chosen so that nnU-Net's nnssl
  fine-tuning reads it (:mod:`monai_ssl_plugin.export.nnssl_compat`).
- ``ssl_record``: our :class:`~monai_ssl_plugin.checkpoint.CheckpointRecord` as a dict.

With ``dataset`` the file goes where the plugin's trainers look
(:func:`~monai_ssl_plugin.nnunet_paths.pretrained_file_path`), after the nnU-Net rules
(:mod:`monai_ssl_plugin.nnunet.target`) checked that the dataset's plans build the pretrained
architecture. Reading, record checks and axis order are the transfer layer's
(:func:`~monai_ssl_plugin.transfer.formats.read_weights`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from monai_ssl_plugin.checkpoint import CheckpointRecord, atomic_save, atomic_write_text
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.nnssl_compat import needs_channel_layout, recommended_patch, with_target_channels
from monai_ssl_plugin.nnunet.target import (DatasetTarget, check_checkpoint_consistent, check_fits_target,
                                            dataset_target)
from monai_ssl_plugin.nnunet_paths import pretrained_file_path
from monai_ssl_plugin.transfer.adaptation import DEFAULT_ADAPTATIONS, parse_adaptations
from monai_ssl_plugin.transfer.compare import TransferCheck
from monai_ssl_plugin.transfer.formats import PretrainedWeights, read_weights
from monai_ssl_plugin.transfer.nnssl import nnssl_adaptation_plan
from monai_ssl_plugin.transfer.normalization import compare_normalization
from monai_ssl_plugin.transfer.records import require_nnunet_backbone

ADAPTATION_PLAN_FILE = "adaptation_plan.json"


def _warn_adapted(check: TransferCheck, dataset_name: str, plans_identifier: str) -> None:
    if check.adapted:
        key, how = next(iter(check.adapted.items()))
        warnings.warn(f"{len(check.adapted)} tensor(s) differ in shape from {dataset_name} {plans_identifier}; the "
                      f"fine-tuning trainer adapts them at load time, e.g. {key}: {how}.", stacklevel=4)


def _warn_normalization(weights: PretrainedWeights, record: CheckpointRecord, plans: list[str], where: str) -> None:
    """Warn now about what the trainer will refuse (or, for nnssl files, warn about) at load time."""
    check = compare_normalization(record.normalization, plans, record.in_channels)
    if record.normalization and plans and check.differences:
        then = ("nnUNetTrainerSSL warns (nnssl z-scores everything)" if weights.from_nnssl else
                "nnUNetTrainerSSL will refuse it unless nnUNet_SSL_allow_normalization_mismatch=1")
        warnings.warn(f"{weights.origin} was pretrained with normalisation {record.normalization}, {where} uses "
                      f"{plans} ({'; '.join(check.differences[:3])}); {then}.", stacklevel=4)


def _checked_output(weights: PretrainedWeights, record: CheckpointRecord, checkpoint_path: str | os.PathLike,
                    output_file: str | os.PathLike | None, target: DatasetTarget | None, configuration: str,
                    plans_identifier: str, allowed: tuple[str, ...]) -> Path:
    """Where to write, after the dataset's plans (when given) accepted the weights."""
    if target is not None:
        _warn_adapted(check_fits_target(weights, record, target, allowed, checkpoint_path), target.dataset_name,
                      plans_identifier)
        _warn_normalization(weights, record, list(target.configuration_dict.get("normalization_schemes", [])),
                            f"{target.dataset_name} {configuration}")
        if output_file is None:
            output_file = pretrained_file_path(target.dataset_name, configuration, plans_identifier)
    elif output_file is None:
        src = Path(checkpoint_path)
        output_file = src.with_name(f"{src.stem}_nnunet.pth")
    output_file = Path(output_file)
    if weights.path is not None and output_file.resolve() == weights.path.resolve():
        raise PluginError(f"The export would overwrite its own input {output_file}.", "Pass another output file.")
    return output_file


def _adaptation_plan(weights: PretrainedWeights, record: CheckpointRecord, configuration: str,
                     patch: list[int], for_target: bool) -> dict[str, Any]:
    """nnssl's plan: the file's own for an nnssl checkpoint (its pretrain_plan says more than a derived
    record), with the prefixes renamed to nnU-Net's and, for a dataset, the dataset's patch recommended;
    otherwise (also for a catalog file converted from nnssl, which keeps only the record) built from the record."""
    if not weights.from_nnssl or weights.adaptation_plan is None:
        return nnssl_adaptation_plan(record, configuration, patch)
    plan = json.loads(json.dumps(weights.adaptation_plan))
    plan.update(key_to_encoder=record.key_prefixes["encoder"], key_to_stem=record.key_prefixes["stem"],
                keys_to_in_proj=list(record.key_prefixes.get("in_proj") or []),
                pretrain_num_input_channels=int(record.in_channels))
    if for_target:
        plan["recommended_downstream_patchsize"] = patch
    return plan


def _for_target_channels(weights: PretrainedWeights, record: CheckpointRecord, channels: int | None,
                         where: str) -> tuple[PretrainedWeights, CheckpointRecord]:
    """A PlainConvUNet for more input channels than pretrained: the stem repeated in the file (see nnssl_compat)."""
    if not needs_channel_layout(record, channels):
        return weights, record
    weights, record, keys = with_target_channels(weights, record, int(channels))
    warnings.warn(f"{where} has {channels} input channels, pretrained {record.data['in_channels_adapted_from']}: "
                  f"the export repeats the stem's input weights ({len(keys)} tensors, divided by the repeat) so that "
                  "nnU-Net's nnssl loader, which cannot repeat a PlainConvUNet stem, reads the file too.", stacklevel=3)
    return weights, record


def write_export(weights: PretrainedWeights, record: CheckpointRecord, plan: dict[str, Any], output_file: Path) -> Path:
    """``adaptation_plan.json`` then the ``.pth``, both atomically: the ``.pth`` present means a complete export."""
    payload = {"network_weights": {k: v.detach().cpu().contiguous() for k, v in weights.state.items()},
               # JSON round trip: plain str/list/dict only, so weights_only loading never meets a foreign type
               "nnssl_adaptation_plan": plan, "ssl_record": json.loads(json.dumps(record.to_dict()))}
    atomic_write_text(json.dumps(plan, indent=2), output_file.parent / ADAPTATION_PLAN_FILE)
    atomic_save(payload, output_file)
    return output_file


def export_nnunet(checkpoint_path: str | os.PathLike, output_file: str | os.PathLike | None = None,
                  dataset: int | str | None = None, configuration: str = "3d_fullres",
                  plans_identifier: str = "nnUNetPlans",
                  allowed_adaptations: tuple[str, ...] | list[str] | str = DEFAULT_ADAPTATIONS,
                  target_channels: int | None = None) -> Path:
    """Write an nnU-Net pretrained-weights file (and ``adaptation_plan.json`` beside it).

    Args:
        checkpoint_path: a monai-ssl pretraining checkpoint, an earlier export, an SSL bundle or an
            nnssl checkpoint (``network_weights`` + ``nnssl_adaptation_plan``; its record is derived
            from the plan). A ``monai``-ordered checkpoint is transposed to nnU-Net's (z, y, x) order
            (exact for nnU-Net's CNNs; the written record says ``axis_order_converted_from``).
        output_file: where to write; default: the conventional place for ``dataset`` (see
            :func:`~monai_ssl_plugin.nnunet_paths.pretrained_file_path`), else
            ``<checkpoint stem>_nnunet.pth`` beside the checkpoint.
        dataset: nnU-Net dataset id or name. When given, the dataset's plans must build the
            pretrained architecture (every non-seg layer, same shape, up to the allowed
            adaptations), checked before writing.
        configuration, plans_identifier: which plans configuration the weights are for.
        allowed_adaptations: shape differences the fine-tuning trainer will adapt (see
            :mod:`monai_ssl_plugin.transfer.adaptation`; default: input channels only). The file
            keeps the pretrained shapes (but see ``target_channels``); the trainer adapts at load time and
            reports it.
        target_channels: input channels of the fine-tuning data (default: the dataset's, when given).
            A PlainConvUNet file for more channels than pretrained gets its stem repeated in the file,
            because nnU-Net's nnssl loader cannot repeat that stem (:mod:`.nnssl_compat`).

    Returns the written file. Every check runs before anything is written.
    """
    allowed = parse_adaptations(allowed_adaptations)
    weights = read_weights(checkpoint_path, require_record=True, to_nnunet_order=True, accept_bare=False)
    record = require_nnunet_backbone(weights.record, weights.origin)
    if (record.data or {}).get("converted_from") == "monai.DynUNet":
        raise PluginError(f"{weights.origin} is a DynUNet checkpoint: only its encoder is an nnU-Net PlainConvUNet's, "
                          "and an nnU-Net export holds the whole network.",
                          "Fine-tune with the plugin's trainer, which loads stem + encoder: monai-ssl nnunet-plans "
                          f"DATASET --checkpoint {checkpoint_path}, export nnUNet_SSL_pretrained={checkpoint_path}, "
                          "nnUNetv2_train ... -tr nnUNetTrainerSSL -p nnUNetPlans_ssl.")
    check_checkpoint_consistent(weights, record)
    target = dataset_target(dataset, configuration, plans_identifier) if dataset is not None else None
    out = _checked_output(weights, record, checkpoint_path, output_file, target, configuration, plans_identifier,
                          allowed)
    channels = target_channels or (target.num_input_channels if target is not None else None)
    weights, record = _for_target_channels(weights, record, channels,
                                           target.dataset_name if target is not None else "The target")
    patch = recommended_patch(record, target.configuration_dict.get("patch_size") if target is not None else None)
    return write_export(weights, record, _adaptation_plan(weights, record, configuration, patch, target is not None),
                        out)

"""What the export does so that nnssl-aware readers (nnssl, nnU-Net's nnssl fine-tuning) use the file well.

- **Recommended fine-tuning patch.** nnU-Net's ``nnUNetv2_preprocess_like_nnssl`` trains with
  ``recommended_downstream_patchsize``; a CPU-sized pretraining patch (48³, 64³) would shrink the
  fine-tuning patch, so the export recommends the target's planned patch (``--dataset``), else the
  patch nnU-Net planned for the pretraining data, else the pretraining patch, always valid for the
  network's strides (:func:`~monai_ssl_plugin.nnunet.plans.valid_patch_size`).
- **Input channels of a PlainConvUNet.** Its stem lives inside the encoder (``encoder.stages.0``).
  nnU-Net's nnssl loader looks the stem prefix up as if it were a key, so for a PlainConvUNet it
  loads the whole encoder, stem included, without the channel repeat and fails on a target with more
  input channels. Exported for such a dataset, the file therefore holds the stem already repeated over
  the target's channels (divided by the repeat, exactly as the trainers' ``channels`` adaptation does);
  its record says so (``data.in_channels_adapted_from``). ResidualEncoderUNet files keep their shape:
  there nnU-Net repeats the stem itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from monai_ssl_plugin.checkpoint import CheckpointRecord
from monai_ssl_plugin.nnunet.plans import stride_divisor, valid_patch_size
from monai_ssl_plugin.transfer.adaptation import repeat_input_channels
from monai_ssl_plugin.transfer.formats import PretrainedWeights

STEM_INSIDE_ENCODER = ("nnunet.PlainConvUNet",)


def recommended_patch(record: CheckpointRecord, target_patch: Sequence[int] | None = None) -> list[int]:
    """The fine-tuning patch to recommend: the target's, else nnU-Net's plan of the pretraining data, else the
    pretraining patch; a multiple of the total stride with a bottleneck of at least two voxels per axis. Primus:
    its ``input_shape`` (the pretraining patch), the one patch its learned position embedding covers as it is."""
    if "input_shape" in record.backbone_kwargs["arch_kwargs"]:
        return [int(s) for s in record.backbone_kwargs["arch_kwargs"]["input_shape"]]
    divisor = stride_divisor(record.backbone_kwargs["arch_kwargs"], record.spatial_dims)
    planned = (record.data or {}).get("patch_size")
    for candidate in (target_patch, planned, record.patch_size):
        if candidate and len(candidate) == len(divisor):
            return valid_patch_size([int(p) for p in candidate], divisor)
    return valid_patch_size([1] * len(divisor), divisor)


def needs_channel_layout(record: CheckpointRecord, target_channels: int | None) -> bool:
    """True when nnU-Net's nnssl loader could not adapt the stem itself (see the module docstring)."""
    return (record.backbone_family in STEM_INSIDE_ENCODER and target_channels is not None
            and target_channels > record.in_channels and target_channels % record.in_channels == 0)


def _in_proj_keys(state: dict[str, torch.Tensor], in_proj: Sequence[str]) -> list[str]:
    """The input projection's weight under every name it has (aliases such as ``decoder.encoder.*`` included)."""
    names = [f"{p}.weight" for p in in_proj]
    return [k for k in state if any(k == n or k.endswith("." + n) for n in names)]


def with_target_channels(weights: PretrainedWeights, record: CheckpointRecord,
                         target_channels: int) -> tuple[PretrainedWeights, CheckpointRecord, list[str]]:
    """Weights and record for ``target_channels`` inputs: the stem's input weights repeated (divided by the
    repeat), the normalisation tiled per channel as the stem is. Returns the adapted keys too."""
    state = dict(weights.state)
    keys = _in_proj_keys(state, record.key_prefixes.get("in_proj") or [])
    for key in keys:
        state[key] = repeat_input_channels(state[key], target_channels)
    norm = list(record.normalization)
    ctor = dict(record.backbone_kwargs, in_channels=target_channels)
    new_record = dataclasses.replace(
        record, in_channels=target_channels, backbone_kwargs=ctor,
        normalization=[norm[i % len(norm)] for i in range(target_channels)] if norm else [],
        data={**(record.data or {}), "in_channels_adapted_from": record.in_channels})
    return dataclasses.replace(weights, state=state, record=new_record), new_record, keys

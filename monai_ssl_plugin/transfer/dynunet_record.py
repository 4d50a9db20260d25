"""A MONAI ``DynUNet`` checkpoint read as the nnU-Net ``PlainConvUNet`` whose encoder it computes.

nnU-Net consumers need an nnU-Net record (architecture as ``arch_kwargs``, nnU-Net key names). A plain-block
DynUNet's encoder is a PlainConvUNet encoder with two convolutions per stage (see
:mod:`~monai_ssl_plugin.transfer.unet_keymap`), so its checkpoint is rewritten as one: the encoder keys are
renamed, every convolution bias nnU-Net has and DynUNet lacks is filled with zeros (exact: instance
normalisation follows each convolution), and the record says only stem + encoder were pretrained, because
DynUNet's decoder (transposed convolution, then a block on the concatenated skip) is not nnU-Net's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from monai_ssl_plugin.checkpoint import CheckpointRecord
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.unet_keymap import CONVS_PER_STAGE, PLAIN_FAMILY, dynunet_to_plain_unet, per_stage

DYNUNET_FAMILY = "monai.DynUNet"
_DNA = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
_REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def _name(value: Any) -> str:
    """``("INSTANCE", {...})`` / ``"instance"`` -> ``instance``."""
    return str(value[0] if isinstance(value, (list, tuple)) else value).lower()


def _refuse_other_blocks(ctor: dict[str, Any], origin: str) -> None:
    """Only plain blocks, instance norm and LeakyReLU(0.01) are PlainConvUNet's computation."""
    act = ctor.get("act_name", ("leakyrelu", {"negative_slope": 0.01}))
    slope = (act[1] or {}).get("negative_slope", 0.01) if isinstance(act, (list, tuple)) and len(act) > 1 else 0.01
    problems = [p for p, bad in (("res_block=True", bool(ctor.get("res_block"))),
                                 (f"norm_name={ctor.get('norm_name')!r}", _name(ctor.get("norm_name", "instance")) != "instance"),
                                 (f"act_name={act!r}", _name(act) != "leakyrelu" or float(slope) != 0.01)) if bad]
    if problems:
        raise PluginError(f"{origin} is a DynUNet with {problems[0]}, which nnU-Net's PlainConvUNet does not compute.",
                          "Pretrain DynUNet with res_block=False, instance norm and LeakyReLU(0.01), or an nnU-Net "
                          "backbone (nnunet_plain_small).")


def plain_unet_arch(state: dict[str, torch.Tensor], ctor: dict[str, Any], dims: int) -> dict[str, Any]:
    """nnU-Net ``arch_kwargs`` of the PlainConvUNet whose encoder is this DynUNet's: widths and kernel sizes from the
    weights, strides from the constructor."""
    blocks = ["input_block"] + [f"downsamples.{i}" for i in range(len(ctor["strides"]) - 2)] + ["bottleneck"]
    convs = [state[f"{b}.conv1.conv.weight"] for b in blocks]
    n = len(blocks)
    return {"n_stages": n, "features_per_stage": [int(c.shape[0]) for c in convs],
            "conv_op": f"torch.nn.modules.conv.Conv{dims}d", "kernel_sizes": [list(c.shape[2:]) for c in convs],
            "strides": [list(s) for s in per_stage(ctor["strides"], n, dims)],
            "n_conv_per_stage": [CONVS_PER_STAGE] * n, "n_conv_per_stage_decoder": [CONVS_PER_STAGE] * (n - 1),
            "conv_bias": True, "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}


def dynunet_as_plain_unet(state: dict[str, torch.Tensor], record: CheckpointRecord, origin: str,
                          log: Callable[[str], None] | None = print) -> tuple[dict[str, torch.Tensor], CheckpointRecord]:
    """(state in PlainConvUNet names, its nnU-Net record) for a ``monai.DynUNet`` checkpoint; refused in one line
    where DynUNet's blocks are not PlainConvUNet's."""
    ctor = dict(record.backbone_kwargs or {})
    if "strides" not in ctor or "input_block.conv1.conv.weight" not in state:
        raise PluginError(f"{origin} does not record DynUNet's strides or holds no input_block weights.",
                          "Pass the DynUNet pretraining checkpoint the plugin wrote (its record has the constructor).")
    _refuse_other_blocks(ctor, origin)
    dims = int(record.spatial_dims)
    arch = plain_unet_arch(state, ctor, dims)
    mapped, filled = dynunet_to_plain_unet(state, int(arch["n_stages"]))
    if log is not None:
        log(f"[monai-ssl] DynUNet -> nnU-Net PlainConvUNet: encoder renamed; {len(filled)} convolution biases filled "
            "with zeros (exact: each convolution is followed by an instance norm); DynUNet's decoder is not nnU-Net's "
            "and is not transferred")
    parts = [p for p in record.pretrained_parts if p in ("stem", "encoder")] or ["stem", "encoder"]
    converted = CheckpointRecord.from_dict({
        **record.to_dict(), "backbone_family": PLAIN_FAMILY, "pretrained_parts": parts,
        "backbone_kwargs": {"arch_class_name": _DNA, "arch_kwargs": arch, "arch_kwargs_req_import": list(_REQ_IMPORT),
                            "in_channels": int(record.in_channels), "out_channels": int(record.in_channels)},
        "key_prefixes": {"stem": "encoder.stages.0", "encoder": "encoder.stages", "decoder": "decoder",
                         "in_proj": ["encoder.stages.0.0.convs.0.conv", "encoder.stages.0.0.convs.0.all_modules.0"],
                         "seg_layers": "decoder.seg_layers"},
        "data": {**(record.data or {}), "converted_from": DYNUNET_FAMILY, "zero_filled_biases": filled}})
    return mapped, converted

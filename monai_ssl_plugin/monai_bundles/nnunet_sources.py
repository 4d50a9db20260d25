"""nnU-Net weights into MONAI targets that name them differently: a ``PlainConvUNet`` into ``DynUNet``.

The key map itself is the transfer layer's (:mod:`monai_ssl_plugin.transfer.unet_keymap`); this module
reads the geometry of the DynUNet the bundle built and of the pretrained network (its record, or the
kernel shapes of a record-less nnU-Net file), refuses where the two are not the same computation, and
hands back the renamed tensors plus the biases it did not map, so the load report can say so.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from monai_ssl_plugin.distributed import unwrap
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.monai_bundles.targets import Target
from monai_ssl_plugin.transfer.formats import PretrainedWeights
from monai_ssl_plugin.transfer.keymap import remap_keys
from monai_ssl_plugin.transfer.unet_keymap import (BIAS_NOTE, UNetGeometry, check_same_geometry, per_stage,
                                                   plain_unet_geometry, plain_unet_to_dynunet, short_layer_name)

_CONV = re.compile(r"^encoder\.stages\.(\d+)\.0\.convs\.(\d+)\.conv\.weight$")


def dynunet_geometry(dynunet: nn.Module) -> UNetGeometry:
    """The encoder geometry of a built ``monai.networks.nets.DynUNet`` (plain blocks only)."""
    from monai.networks.blocks.dynunet_block import UnetBasicBlock

    if dynunet.conv_block is not UnetBasicBlock:
        raise PluginError("DynUNet(res_block=True) adds a residual 1x1 convolution per stage that nnU-Net's "
                          "PlainConvUNet does not have.",
                          "Build DynUNet with res_block=False, or use nnU-Net's PlainConvUNet as the bundle network.")
    n, dims = len(dynunet.strides), int(dynunet.spatial_dims)
    block = dynunet.input_block
    act = block.lrelu
    nonlin = short_layer_name(type(act).__name__)
    if isinstance(act, nn.LeakyReLU):
        nonlin += f"({act.negative_slope:g})"
    return UNetGeometry(per_stage(dynunet.kernel_size, n, dims), per_stage(dynunet.strides, n, dims),
                        tuple(int(f) for f in dynunet.filters), (2,) * n,
                        short_layer_name(type(block.norm1).__name__, bool(getattr(block.norm1, "affine", False))),
                        nonlin)


def _source_geometry(source: PretrainedWeights, target: UNetGeometry) -> UNetGeometry:
    """The pretrained PlainConvUNet's geometry: from its record, else from its kernels (strides then unknown:
    taken from the target, and said so)."""
    arch = ((source.record.backbone_kwargs or {}).get("arch_kwargs") if source.record is not None else None)
    if arch:
        return plain_unet_geometry(arch)
    stages: dict[int, list[torch.Tensor]] = {}
    for key, value in source.state.items():
        m = _CONV.match(key)
        if m:
            stages.setdefault(int(m.group(1)), []).append(value)
    if not stages:
        raise PluginError(f"{source.origin} has no nnU-Net encoder convolutions (encoder.stages.*.0.convs.*.conv.weight).",
                          "Pass a PlainConvUNet checkpoint (monai-ssl pretraining or nnU-Net training).")
    convs = [stages[s] for s in sorted(stages)]
    return UNetGeometry(tuple(tuple(c[0].shape[2:]) for c in convs), target.strides,
                        tuple(int(c[0].shape[0]) for c in convs), tuple(len(c) for c in convs), target.norm, target.nonlin)


def plain_unet_into_dynunet(network: nn.Module, target: Target, source: PretrainedWeights, axis_order: str,
                            on_axis_mismatch: str, log: Callable[[str], None] | None = print
                            ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(tensors in the DynUNet's names, the nnU-Net conv biases not mapped), after checking the geometry.

    The geometry is compared in the pipeline's axis order: a ``nnunet``-ordered record is reversed when the
    load will transpose the kernels (``on_axis_mismatch='permute'``).
    """
    root = unwrap(network)
    dynunet = root.get_submodule(target.base.rstrip(".")) if target.base else root
    want = dynunet_geometry(dynunet)
    have = _source_geometry(source, want)
    if source.axis_order not in (None, axis_order) and axis_order != "any" and on_axis_mismatch == "permute":
        have = have.reversed_axes()
    check_same_geometry(have, want)
    if source.record is None and log is not None:
        log("[monai-ssl] note: the source has no record, so its strides cannot be checked (kernel sizes and widths were)")
    mapped, biases = plain_unet_to_dynunet(source.state, len(want.features))
    if log is not None:
        log(f"[monai-ssl] nnU-Net PlainConvUNet -> DynUNet: {len(biases)} {BIAS_NOTE}")
    return (remap_keys(mapped, {"": target.base}) if target.base else mapped), biases


def refusal_fix(family: str, target: Target) -> str | None:
    """A better fix than 'pretrain another backbone' when nnU-Net weights meet a MONAI target."""
    if family.startswith("nnunet.") and target.kind != "nnunet":
        return ("Use nnU-Net's own network as the bundle's network_def (_target_: dynamic_network_architectures."
                f"architectures.unet.{family.split('.', 1)[1]} with the record's arch_kwargs; docs/monai.md), which "
                "receives encoder.* unchanged.")
    return None

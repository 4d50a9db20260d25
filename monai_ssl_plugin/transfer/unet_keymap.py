"""nnU-Net's ``PlainConvUNet`` encoder <-> MONAI's ``DynUNet`` encoder: an exact key map.

The two encoders are the same computation when every nnU-Net stage has two convolutions and DynUNet uses
plain blocks (``res_block=False``): stage 0 is DynUNet's ``input_block``, stages 1..n-2 its
``downsamples.{i}``, the last stage its ``bottleneck``; each stage is conv, norm, LeakyReLU, conv, norm,
LeakyReLU, with the stride on the first convolution. nnU-Net's convolutions carry a bias and DynUNet's do
not: with instance normalisation right after each convolution, a per-channel constant is subtracted by the
norm, so dropping the bias (or filling zeros the other way) changes no output. That holds only for instance
normalisation, which is why both sides' norm layers are checked before keys move. nnU-Net's
``convs.{j}.all_modules.*`` are second names of the same tensors (``conv``, ``norm``) and are not mapped.

Geometry (kernel sizes, strides, widths) lives in the architectures, not only in the weights: it is
compared stage by stage and refused in one line naming the constructor argument to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.keymap import remap_keys, strip_wrapper_prefixes

PLAIN_FAMILY = "nnunet.PlainConvUNet"
CONVS_PER_STAGE = 2  # DynUNet's UnetBasicBlock: conv1/norm1, conv2/norm2
BIAS_NOTE = ("convolution biases not mapped: DynUNet's convolutions have none, and the instance norm right after "
             "each convolution removes any per-channel constant, so the encoder computes the same features")


@dataclass(frozen=True)
class UNetGeometry:
    """Per stage: kernel size and stride per axis, output channels, convolutions; plus the norm and nonlinearity."""

    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    features: tuple[int, ...]
    convs_per_stage: tuple[int, ...]
    norm: str  # "instance" | "instance(no affine)" | "batch" | ...
    nonlin: str  # "leakyrelu(0.01)" | "relu" | ...

    def reversed_axes(self) -> "UNetGeometry":
        """The same network described in the reversed axis order ((z, y, x) <-> (x, y, z))."""
        return UNetGeometry(tuple(tuple(reversed(k)) for k in self.kernel_sizes),
                            tuple(tuple(reversed(s)) for s in self.strides), self.features, self.convs_per_stage,
                            self.norm, self.nonlin)


def per_stage(values: Sequence[Any], n_stages: int, dims: int) -> tuple[tuple[int, ...], ...]:
    """``[3, [1, 3, 3], ...]`` -> one per-axis tuple per stage (a scalar means the same on every axis)."""
    out = tuple(tuple(int(v) for v in x) if isinstance(x, (list, tuple)) else (int(x),) * dims for x in values)
    if len(out) != n_stages:
        raise PluginError(f"{len(out)} per-stage values for {n_stages} stages.",
                          "Give one kernel size and one stride per stage.")
    return out


def short_layer_name(name: Any, affine: bool = True) -> str:
    """``torch.nn.modules.instancenorm.InstanceNorm3d`` -> ``instance``; ``torch.nn.LeakyReLU`` -> ``leakyrelu``."""
    text = str(name or "").rsplit(".", 1)[-1].lower()
    text = "instance" if "instancenorm" in text else "batch" if "batchnorm" in text else text or "none"
    return text + ("" if affine or text != "instance" else "(no affine)")


def plain_unet_geometry(arch_kwargs: Mapping[str, Any]) -> UNetGeometry:
    """The encoder geometry of nnU-Net's ``arch_kwargs`` (as plans files and the plugin's records give them)."""
    n, dims = int(arch_kwargs["n_stages"]), len(arch_kwargs["kernel_sizes"][0])
    convs = arch_kwargs.get("n_conv_per_stage", 2)
    convs = tuple(int(c) for c in convs) if isinstance(convs, (list, tuple)) else (int(convs),) * n
    nonlin = short_layer_name(arch_kwargs.get("nonlin"))
    if nonlin == "leakyrelu":
        nonlin += f"({float((arch_kwargs.get('nonlin_kwargs') or {}).get('negative_slope', 0.01)):g})"
    return UNetGeometry(per_stage(arch_kwargs["kernel_sizes"], n, dims), per_stage(arch_kwargs["strides"], n, dims),
                        tuple(int(f) for f in arch_kwargs["features_per_stage"]), convs,
                        short_layer_name(arch_kwargs.get("norm_op"),
                                         bool((arch_kwargs.get("norm_op_kwargs") or {}).get("affine"))), nonlin)


_FIXES = {"kernel_sizes": "kernel_size", "strides": "strides", "features": "filters", "norm": "norm_name",
          "nonlin": "act_name"}


def check_same_geometry(source: UNetGeometry, target: UNetGeometry, target_name: str = "DynUNet") -> None:
    """Refuse, in one line naming the argument to change, an encoder that is not the source's computation."""
    bad = [i for i, c in enumerate(source.convs_per_stage) if c != CONVS_PER_STAGE]
    if bad:
        raise PluginError(f"The nnU-Net PlainConvUNet has {source.convs_per_stage[bad[0]]} convolution(s) in stage "
                          f"{bad[0]}; {target_name}'s blocks have exactly {CONVS_PER_STAGE}.",
                          "Pretrain a PlainConvUNet with n_conv_per_stage 2 in every stage (nnunet_plain_small), or "
                          "use nnU-Net's own PlainConvUNet as the bundle network.")
    if not (source.norm.startswith("instance") and target.norm.startswith("instance")):
        raise PluginError(f"The convolution bias can only be dropped exactly before an instance norm (nnU-Net: "
                          f"{source.norm}, {target_name}: {target.norm}).",
                          f"Build {target_name} with norm_name=('INSTANCE', {{'affine': True}}) from weights "
                          "pretrained with InstanceNorm.")
    for name, fix in _FIXES.items():
        got, want = getattr(target, name), getattr(source, name)
        if got != want:
            raise PluginError(f"{target_name} has {name} {_plain(got)} but the pretrained PlainConvUNet has "
                              f"{_plain(want)} (in the pipeline's axis order).",
                              f"Build {target_name} with {fix}={_argument(want)}, as the pretrained network.")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _argument(value: Any) -> Any:
    """A geometry value as DynUNet's constructor takes it (``instance`` -> ``('INSTANCE', {'affine': True})``)."""
    if value == "instance":
        return "('INSTANCE', {'affine': True})"
    if isinstance(value, str) and value.startswith("leakyrelu("):
        return f"('leakyrelu', {{'negative_slope': {value[len('leakyrelu('):-1]}}})"
    return _plain(value)


def dynunet_block(stage: int, n_stages: int) -> str:
    """DynUNet's name for nnU-Net's encoder stage ``stage``."""
    if stage == 0:
        return "input_block"
    return "bottleneck" if stage == n_stages - 1 else f"downsamples.{stage - 1}"


def _prefix_table(n_stages: int) -> dict[str, str]:
    """nnU-Net prefix -> DynUNet prefix, for each convolution weight and norm of the encoder."""
    table = {}
    for s in range(n_stages):
        block = dynunet_block(s, n_stages)
        for j in range(CONVS_PER_STAGE):
            src = f"encoder.stages.{s}.0.convs.{j}."
            table[src + "conv.weight"] = f"{block}.conv{j + 1}.conv.weight"
            table[src + "norm."] = f"{block}.norm{j + 1}."
    return table


def plain_unet_to_dynunet(state: Mapping[str, torch.Tensor], n_stages: int
                          ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """nnU-Net PlainConvUNet keys -> DynUNet encoder keys; returns (mapped, the encoder conv biases not mapped).

    Keys outside the encoder (decoder, segmentation layers) and the ``all_modules`` aliases are not mapped.
    """
    state = strip_wrapper_prefixes(state)
    mapped = remap_keys(state, _prefix_table(n_stages))
    biases = [k for k in state if k.startswith("encoder.stages.") and ".convs." in k and k.endswith(".conv.bias")]
    return mapped, biases


def dynunet_to_plain_unet(state: Mapping[str, torch.Tensor], n_stages: int
                          ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """DynUNet encoder keys -> nnU-Net PlainConvUNet keys as nnU-Net's ``state_dict`` lists them (the
    ``all_modules.0`` / ``.1`` second names of each conv / norm included), every conv bias filled with zeros
    (exact before an instance norm); returns (mapped, the biases filled)."""
    inverse = {dst: src for src, dst in _prefix_table(n_stages).items()}
    mapped = remap_keys(strip_wrapper_prefixes(state), inverse)
    filled = []
    for key, weight in list(mapped.items()):
        if key.endswith(".conv.weight"):
            bias = key[: -len("weight")] + "bias"
            mapped[bias] = torch.zeros(weight.shape[0], dtype=weight.dtype)
            filled.append(bias)
    for key, value in list(mapped.items()):  # dropout_op is None in these networks: all_modules = [conv, norm, ...]
        for part, index in ((".conv.", "0"), (".norm.", "1")):
            if part in key:
                mapped[key.replace(part, f".all_modules.{index}.")] = value
    return mapped, filled

"""Compare a checkpoint's tensors with a target network's before anything loads.

:func:`check_transfer` is the dry run of a load: with the allowed shape adaptations applied
(:class:`~monai_ssl_plugin.transfer.adaptation.ShapeAdapter`), it names the first layer that cannot
be loaded, in layer terms (``encoder stage 2``, channels and kernel), so a consumer can refuse
before any weight changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from monai_ssl_plugin.transfer.adaptation import ShapeAdapter

SEG_LAYERS = ".seg_layers."  # nnU-Net's load_pretrained_weights skips keys containing this


def is_seg_layer(key: str) -> bool:
    """True for nnU-Net's segmentation output layers (never transferred)."""
    return SEG_LAYERS in key or key.startswith(SEG_LAYERS[1:])


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


def part_selector(prefixes: list[str]) -> Callable[[str], bool]:
    """Keys under any of the prefixes. ``"decoder"`` also covers ``decoder.encoder.*``, the decoder's
    reference to the encoder's tensors; an encoder-only selection leaves those aliases out (they share
    the loaded tensors, and encoder-only files do not have them)."""
    heads = tuple(p.rstrip(".") + "." for p in prefixes)
    return lambda key: key.startswith(heads) or key in prefixes

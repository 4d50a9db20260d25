"""Shape adaptations for :func:`~monai_ssl_plugin.transfer.loading.load_weights` (its ``adapt`` hook).

When a pretrained tensor and the target's differ in shape, an adaptation may turn one into the
other; every adaptation is reported (``LoadReport.adapted`` plus a note saying how), never silent.
The kinds, by name (what ``nnUNet_SSL_adapt`` and ``allowed=`` list):

- ``channels``: more input channels downstream than in pretraining. The stem's input projection
  is repeated over the new channels and divided by the repeat count (nnssl / nnU-Net master do the
  same for one pretrained channel), so an input whose channels are all equal gives exactly the
  pretrained response. Fewer channels, or a count that is not a multiple, is refused.
- ``kernels``: a different kernel shape. Axes the target collapses to 1 are averaged
  (3x3x3 -> 1x3x3, nnssl's "dynamic" loader); axes the target makes larger (odd sizes) are
  zero-padded around the centre, which computes exactly the pretrained function
  (1x3x3 -> 3x3x3 with nnU-Net's ``(k - 1) // 2`` padding). Cropping a kernel is refused.
- ``stages``: a different number of encoder stages. Not a tensor adaptation: the stages both
  networks have are loaded, the others are reported as missing (target deeper) or unexpected
  (checkpoint deeper), and the caller refuses below a minimum loaded fraction.

The axis-order transposition (``monai`` -> ``nnunet``) is exact and not optional; it lives in
:mod:`monai_ssl_plugin.transfer.axes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from monai_ssl_plugin.errors import PluginError

ADAPTATIONS = ("channels", "kernels", "stages")
DEFAULT_ADAPTATIONS = ("channels",)


def parse_adaptations(value: str | Iterable[str] | None, default: Sequence[str] = DEFAULT_ADAPTATIONS) -> tuple[str, ...]:
    """``"channels,kernels"`` / ``"all"`` / ``"none"`` / an iterable of names -> a tuple of known names."""
    if value is None:
        return tuple(default)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "default"):
            return tuple(default)
        if text == "all":
            return ADAPTATIONS
        if text in ("none", "0", "off", "false"):
            return ()
        names = [p.strip() for p in text.replace("+", ",").split(",") if p.strip()]
    else:
        names = [str(p).strip().lower() for p in value]
    unknown = [n for n in names if n not in ADAPTATIONS]
    if unknown:
        raise PluginError(f"Unknown adaptation(s) {unknown}.", f"Use a comma-separated subset of {list(ADAPTATIONS)}, "
                                                               "'all' or 'none'.")
    return tuple(n for n in ADAPTATIONS if n in names)


# ---------------------------------------------------------------------------------------------
# Tensor adaptations (pure functions)
# ---------------------------------------------------------------------------------------------
def repeat_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor | None:
    """A conv weight ``(O, C, *k)`` for ``channels`` inputs: tiled over the channel axis, divided by the repeat.

    ``channels`` must be a multiple of ``C`` (e.g. 1 -> 4, 2 -> 4); otherwise None. With every input
    channel equal to the pretrained input, the adapted layer gives the pretrained output exactly.
    """
    if weight.ndim < 3:
        return None
    have = int(weight.shape[1])
    if channels <= have or channels % have:
        return None
    repeat = channels // have
    return weight.repeat(1, repeat, *([1] * (weight.ndim - 2))) / repeat


def adapt_kernel(weight: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor | None:
    """A conv / transposed-conv weight with its spatial kernel made ``spatial``.

    Per axis: equal -> kept; target 1 -> averaged over the axis; target larger, both odd ->
    zero-padded around the centre (exact under ``(k - 1) // 2`` padding). Anything else -> None.
    """
    spatial = [int(s) for s in spatial]
    if weight.ndim != len(spatial) + 2:
        return None
    out = weight
    for axis, (have, want) in enumerate(zip(weight.shape[2:], spatial)):
        dim = axis + 2
        if have == want:
            continue
        if want == 1:
            out = out.mean(dim=dim, keepdim=True)
        elif want > have and have % 2 == 1 and want % 2 == 1:
            pad = (want - have) // 2
            shape = list(out.shape)
            shape[dim] = want
            grown = out.new_zeros(shape)
            grown.narrow(dim, pad, have).copy_(out)
            out = grown
        else:
            return None
    return out


def _strip_alias(key: str) -> str:
    # nnU-Net decoders keep a reference to the encoder: "decoder.encoder.stages..." aliases "encoder.stages..."
    return key[len("decoder."):] if key.startswith("decoder.encoder.") else key


class ShapeAdapter:
    """The ``adapt(key, source, target)`` hook of ``load_weights`` for the allowed adaptation kinds.

    Args:
        allowed: subset of :data:`ADAPTATIONS` (``stages`` is handled by the caller, not here).
        in_proj: module prefixes of the stem's input projection(s) (nnU-Net's ``keys_to_in_proj``);
            only these may change their input channels.

    After use, ``notes`` maps each adapted key to what was done, and ``refusals`` maps each key it
    could not adapt to why (for error messages).
    """

    def __init__(self, allowed: Iterable[str] = DEFAULT_ADAPTATIONS, in_proj: Iterable[str] = ()):
        self.allowed = parse_adaptations(list(allowed))
        self.in_proj = {p.rstrip(".") for p in in_proj}
        self.notes: dict[str, str] = {}
        self.refusals: dict[str, str] = {}

    def is_in_proj(self, key: str) -> bool:
        return _strip_alias(key).rsplit(".", 1)[0] in self.in_proj

    def __call__(self, key: str, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor | None:
        src_shape, dst_shape = tuple(src.shape), tuple(dst.shape)
        if src.ndim != dst.ndim:
            self.refusals[key] = f"{src.ndim}-D vs {dst.ndim}-D tensor"
            return None
        out, how = src, []
        # 1) input channels of the stem's projection (dim 1 of a conv weight)
        if src.ndim >= 3 and src_shape[1] != dst_shape[1]:
            if not self.is_in_proj(key):
                self.refusals[key] = f"{src_shape[1]} vs {dst_shape[1]} input channels outside the stem's input layer"
                return None
            if "channels" not in self.allowed:
                self.refusals[key] = (f"input channels {src_shape[1]} vs {dst_shape[1]} (adaptation 'channels' "
                                      "not allowed)")
                return None
            out = repeat_input_channels(out, dst_shape[1])
            if out is None:
                self.refusals[key] = (f"input channels {src_shape[1]} -> {dst_shape[1]}: only more channels, "
                                      "a multiple of the pretrained count, can be adapted")
                return None
            how.append(f"input channels {src_shape[1]} -> {dst_shape[1]} (repeated x{dst_shape[1] // src_shape[1]}, "
                       f"divided by {dst_shape[1] // src_shape[1]})")
        # 2) output channels never adapt (features per stage are the architecture)
        if src_shape[0] != dst_shape[0]:
            self.refusals[key] = f"{src_shape[0]} vs {dst_shape[0]} output channels/features"
            return None
        # 3) kernel shape
        if src.ndim >= 3 and src_shape[2:] != dst_shape[2:]:
            k_src, k_dst = "x".join(map(str, src_shape[2:])), "x".join(map(str, dst_shape[2:]))
            if "kernels" not in self.allowed:
                self.refusals[key] = f"kernel {k_src} vs {k_dst} (adaptation 'kernels' not allowed)"
                return None
            adapted = adapt_kernel(out, dst_shape[2:])
            if adapted is None:
                self.refusals[key] = f"kernel {k_src} -> {k_dst} cannot be adapted (only averaging or odd zero-padding)"
                return None
            out = adapted
            how.append(f"kernel {k_src} -> {k_dst} ("
                       + ", ".join("averaged" if d == 1 else "zero-padded" for s, d in zip(src_shape[2:], dst_shape[2:])
                                   if s != d) + ")")
        if tuple(out.shape) != dst_shape:
            self.refusals[key] = f"shape {src_shape} vs {dst_shape}"
            return None
        self.notes[key] = "; ".join(how)
        return out


# ---------------------------------------------------------------------------------------------
# Stage structure of nnU-Net U-Nets (for the "stages" adaptation)
# ---------------------------------------------------------------------------------------------
def n_stages(arch_kwargs: Mapping[str, Any] | None) -> int | None:
    if not arch_kwargs:
        return None
    n = arch_kwargs.get("n_stages")
    return int(n) if n is not None else None


def stage_prefix_ok(key: str, common_stages: int) -> bool:
    """True unless ``key`` belongs to an encoder stage index >= ``common_stages``."""
    parts = _strip_alias(key).split(".")
    if len(parts) > 2 and parts[0] == "encoder" and parts[1] == "stages" and parts[2].isdigit():
        return int(parts[2]) < common_stages
    return True

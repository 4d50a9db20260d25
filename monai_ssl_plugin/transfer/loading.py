"""Load weights into a network and say exactly what happened.

``strict=False`` that loads nothing is the most common silent failure with pretrained weights;
here every transfer returns a :class:`LoadReport` and raises when too little was loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from monai_ssl_plugin.distributed import unwrap
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.keymap import strip_wrapper_prefixes


def alias_names(module: nn.Module) -> dict[str, str]:
    """State-dict names that are a second name of an earlier entry's tensor -> that first name.

    nnU-Net's U-Nets register modules twice (``decoder.encoder.*`` is the encoder; a stem conv also sits in
    ``all_modules``): the state dict lists such a tensor once per name, but it is one tensor.
    """
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    named = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        canonical = first.setdefault(id(tensor), name)
        if canonical != name:
            aliases[name] = canonical
    return aliases


@dataclass
class LoadReport:
    """Outcome of a weight transfer. Counts are of tensors: a tensor with several state-dict names (an alias,
    see :func:`alias_names`) counts once, under its first name; its other names are in ``aliases``."""

    loaded: list[str] = field(default_factory=list)
    skipped_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, source, target shape
    skipped_filtered: list[str] = field(default_factory=list)  # excluded on purpose (e.g. seg layers)
    unexpected: list[str] = field(default_factory=list)  # in the source, not in the target
    missing: list[str] = field(default_factory=list)  # in the target (selected part), not in the source
    adapted: list[str] = field(default_factory=list)  # loaded after an explicit adaptation
    aliases: list[str] = field(default_factory=list)  # second names of tensors counted under their first name
    n_target_params: int = 0  # number of scalar parameters in the targeted part
    n_loaded_params: int = 0

    @property
    def loaded_fraction(self) -> float:
        return self.n_loaded_params / self.n_target_params if self.n_target_params else 0.0

    def summary(self) -> str:
        s = (f"loaded {len(self.loaded)} tensors ({self.n_loaded_params:,} of {self.n_target_params:,} "
             f"targeted values, {100 * self.loaded_fraction:.1f}%), skipped {len(self.skipped_shape)} "
             f"shape mismatches + {len(self.skipped_filtered)} excluded, {len(self.unexpected)} unexpected, "
             f"{len(self.missing)} missing")
        if self.adapted:
            s += f", {len(self.adapted)} adapted"
        return s

    def details(self, limit: int = 10) -> str:
        lines = [self.summary()]
        for key, src, dst in self.skipped_shape[:limit]:
            lines.append(f"  shape mismatch {key}: checkpoint {tuple(src)} vs network {tuple(dst)}")
        for name, items in (("missing", self.missing), ("unexpected", self.unexpected), ("adapted", self.adapted)):
            for key in items[:limit]:
                lines.append(f"  {name} {key}")
            if len(items) > limit:
                lines.append(f"  ... {len(items) - limit} more {name}")
        return "\n".join(lines)


def _fitted(key: str, src: torch.Tensor, dst: torch.Tensor,
            adapt: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor | None] | None, strict_shapes: bool,
            report: LoadReport) -> torch.Tensor | None:
    """``src`` as it will load into ``dst``: unchanged, adapted (reported), or None when its shape does not
    fit (reported as shape-skipped, or refused with ``strict_shapes``)."""
    if tuple(src.shape) == tuple(dst.shape):
        return src
    adapted = adapt(key, src, dst) if adapt is not None else None
    if adapted is None:
        if strict_shapes:
            raise PluginError(
                f"Layer {key} does not match: checkpoint {tuple(src.shape)} vs network {tuple(dst.shape)}.",
                "Build the target from the same plans/architecture as the pretraining "
                "(monai-ssl nnunet-plans writes matching plans), or allow adaptation.",
            )
        report.skipped_shape.append((key, tuple(src.shape), tuple(dst.shape)))
        return None
    report.adapted.append(key)
    return adapted


def _refuse_too_little(report: LoadReport, min_fraction: float, source: Mapping[str, torch.Tensor],
                       target: Mapping[str, torch.Tensor]) -> None:
    """Refuse a load that moved nothing, or less than ``min_fraction`` of the targeted values, naming why."""
    if report.n_loaded_params > 0 and report.loaded_fraction >= min_fraction:
        return
    first = report.skipped_shape[0] if report.skipped_shape else None
    why = (f"first mismatching layer {first[0]}: checkpoint {first[1]} vs network {first[2]}"
           if first else (f"no key of the checkpoint matches the network (e.g. checkpoint has "
                          f"{next(iter(source), '<nothing>')!r}, network expects {next(iter(target), '<nothing>')!r})"))
    raise PluginError(
        f"Refusing to continue: only {100 * report.loaded_fraction:.1f}% of the targeted weights loaded "
        f"(need {100 * min_fraction:.1f}%); {why}.",
        "Use a checkpoint pretrained for this architecture, or map keys with remap_keys / the target= option.",
    )


def load_weights(
    network: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    include: Callable[[str], bool] | None = None,
    exclude: Callable[[str], bool] | None = None,
    min_fraction: float = 1e-9,
    adapt: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
    strict_shapes: bool = False,
    log: Callable[[str], None] | None = print,
) -> LoadReport:
    """Copy matching tensors from ``state`` into ``network`` and report.

    Args:
        network: the target; DDP / compile wrappers are looked through.
        state: source state dict, keys already in the target's naming (see ``remap_keys``).
        include: selects the target keys that *should* be loaded (the pretrained part); the
            fraction and ``missing`` are computed over these. Default: every key.
        exclude: keys never loaded (e.g. nnU-Net's ``.seg_layers.``), reported as excluded.
        min_fraction: raise when fewer than this share of the targeted values loaded; the default
            only refuses loading *nothing*.
        adapt: called for a shape mismatch as ``adapt(key, source, target)``; returns an adapted
            tensor of the target's shape, or None to skip. Adaptations are reported.
        strict_shapes: raise on the first shape mismatch, naming the layer.
        log: where the one-line summary goes (None: silent).
    """
    module = unwrap(network)
    target = module.state_dict()
    source = strip_wrapper_prefixes(state)
    include = include or (lambda k: True)
    exclude = exclude or (lambda k: False)
    report = LoadReport()
    new_state = {}
    aliases, counted = alias_names(module), set()
    for key, dst in target.items():
        if exclude(key):
            report.skipped_filtered.append(key)
            continue
        if not include(key):
            continue
        if aliases.get(key, key) in counted:  # another name of a tensor already handled: load it, count it once
            report.aliases.append(key)
            if key in source and tuple(source[key].shape) == tuple(dst.shape):
                new_state[key] = source[key].to(dtype=dst.dtype)
            continue
        counted.add(aliases.get(key, key))
        if dst.is_floating_point():
            report.n_target_params += dst.numel()
        if key not in source:
            report.missing.append(key)
            continue
        src = _fitted(key, source[key], dst, adapt, strict_shapes, report)
        if src is None:
            continue
        new_state[key] = src.to(dtype=dst.dtype)
        report.loaded.append(key)
        if dst.is_floating_point():
            report.n_loaded_params += dst.numel()
    report.unexpected = [k for k in source if k not in target]
    _refuse_too_little(report, min_fraction, source, target)
    module.load_state_dict(new_state, strict=False)
    if log is not None:
        log(f"[monai-ssl] {report.summary()}")
    return report

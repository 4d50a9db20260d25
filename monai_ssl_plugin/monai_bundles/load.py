"""``load_pretrained``: SSL weights into a MONAI network, checked against the checkpoint's record.

For plain PyTorch users (the bundle handler and the overlay call the same function)::

    from monai_ssl_plugin.monai_bundles import load_pretrained
    net = monai.networks.nets.SwinUNETR(in_channels=1, out_channels=14)
    report = load_pretrained(net, "runs/ssl/checkpoints/final.pt")  # -> swinViT, checked, reported

Checks, each refused with a one-line :class:`PluginError`: backbone family (can it initialise this
target?), input channels and spatial dimensions (record vs the target's stem), axis order (``monai`` =
x,y,z from ``LoadImage``; ``nnunet`` = z,y,x), intensity normalisation (when the caller states the
pipeline's), and the loaded share (``min_fraction`` of the targeted values).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from monai_ssl_plugin.distributed import unwrap
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.monai_bundles.nnunet_sources import plain_unet_into_dynunet, refusal_fix
from monai_ssl_plugin.monai_bundles.targets import Target, first_conv, map_source, resolve_target
from monai_ssl_plugin.transfer.axes import check_axis_order
from monai_ssl_plugin.transfer.formats import PretrainedWeights, SourceLike, read_weights
from monai_ssl_plugin.transfer.loading import LoadReport, load_weights
from monai_ssl_plugin.transfer.normalization import compare_normalization, normalization_category


def check_normalization(source: PretrainedWeights, normalization: str | Sequence[str] | None,
                        log: Callable[[str], None] | None = print, on_mismatch: str = "warn") -> None:
    """Compare the pipeline's intensity normalisation with the pretraining's (the transfer layer's one
    comparison, :func:`~monai_ssl_plugin.transfer.normalization.compare_normalization`).

    ``normalization``: the pipeline's, per channel or one for all (``None``: not checked, only reported;
    ``"any"``: accept whatever the record says). ``on_mismatch``: ``"warn"`` (load, and say how to match
    by construction: the network's normalisation layers and fine-tuning absorb a change of scale, but the
    first filters saw other intensities) or ``"refuse"``.
    """
    if on_mismatch not in ("warn", "refuse"):
        raise PluginError(f"Unknown on_normalization_mismatch={on_mismatch!r}.", "Use 'warn' or 'refuse'.")
    recorded = source.normalization
    if normalization is None or normalization == "any":
        if log is not None and recorded:
            log(f"[monai-ssl] note: weights were pretrained on {recorded} intensities; normalise inputs the same way")
        return
    wanted = [normalization] if isinstance(normalization, str) else list(normalization)
    if not recorded:
        if log is not None:
            log(f"[monai-ssl] WARNING: the source does not record its intensity normalisation; cannot compare with {wanted}")
        return
    channels = int(source.in_channels or len(recorded))
    if len(wanted) == 1 and channels > 1:  # one transform for the whole pipeline
        wanted = wanted * channels
    if not compare_normalization(recorded, wanted, channels, consumer_name="this pipeline").matches:
        got = "/".join(normalization_category(n) for n in recorded)
        want = "/".join(normalization_category(n) for n in wanted)
        problem = (f"{source.origin} was pretrained on intensities normalised as {recorded} ({got}), "
                   f"this pipeline uses {wanted} ({want}).")
        if on_mismatch == "refuse":
            raise PluginError(problem, "Pretrain reading data the way this bundle does (`monai-ssl pretrain ... "
                              "--read_like BUNDLE`), or pass on_normalization_mismatch='warn' to fine-tune anyway.")
        if log is not None:
            log(f"[monai-ssl] WARNING: {problem} Loading anyway (on_normalization_mismatch='warn'); to match by "
                "construction pretrain with `monai-ssl pretrain ... --read_like BUNDLE`.")


def check_channels(source: PretrainedWeights, mapped: dict[str, torch.Tensor], network: nn.Module, target: Target,
                   in_channels: int | None) -> None:
    """Input channels and spatial dims: record (or source stem) vs target stem vs the caller's statement."""
    dst = first_conv(unwrap(network).state_dict(), target.includes)
    src = first_conv(mapped, target.includes) or first_conv(source.state)
    src_c = source.in_channels if source.in_channels is not None else (src[1].shape[1] if src else None)
    if source.record is not None and dst is not None:
        if source.record.spatial_dims and dst[1].ndim - 2 != int(source.record.spatial_dims):
            raise PluginError(f"{source.origin} is a {source.record.spatial_dims}D backbone, the target {target.name} is "
                              f"{dst[1].ndim - 2}D.", "Use weights pretrained for the same number of spatial dimensions.")
    if dst is not None and src_c is not None and int(dst[1].shape[1]) != int(src_c):
        raise PluginError(f"{source.origin} was pretrained on {src_c} input channel(s), the target {target.name} takes "
                          f"{dst[1].shape[1]} ({dst[0]}).",
                          f"Build the network with in_channels={src_c} (same channels as the pretraining), or pretrain "
                          f"on {dst[1].shape[1]}-channel data.")
    if in_channels is not None and src_c is not None and int(in_channels) != int(src_c):
        raise PluginError(f"{source.origin} was pretrained on {src_c} input channel(s), this pipeline feeds {in_channels}.",
                          "Pretrain on data with the same channels, or feed the channels the weights expect.")


def load_pretrained(network: nn.Module, source: SourceLike, target: str | Target = "auto", *, min_fraction: float = 0.9,
                    axis_order: str = "monai", on_axis_mismatch: str = "permute", in_channels: int | None = None,
                    normalization: str | Sequence[str] | None = None, backbone_family: str | None = None,
                    source_axis_order: str | None = None, source_prefix: str | None = None,
                    on_normalization_mismatch: str = "warn", log: Callable[[str], None] | None = print) -> LoadReport:
    """Initialise the target part of ``network`` from SSL weights and report what happened.

    Args:
        network: the downstream MONAI network (DDP / compile / ``RetinaNetDetector`` wrappers are fine).
        source: pretraining checkpoint, SSL bundle directory, nnU-Net export, or a bare state dict
            (file or mapping; needs ``backbone_family``).
        target: ``"auto"`` (see :mod:`.targets`), a sub-module prefix, or ``""`` for the whole network.
        min_fraction: refuse when less than this share of the targeted values loaded.
        axis_order: the order in which *this* pipeline feeds volumes: ``"monai"`` (``LoadImage``, x,y,z) or
            ``"nnunet"`` (z,y,x); ``"any"`` skips the check.
        on_axis_mismatch: ``"refuse"``, ``"permute"`` (exact kernel transposition) or ``"ignore"``.
        in_channels: channels this pipeline feeds (also checked against the target's stem).
        normalization: this pipeline's intensity normalisation (``None``: not checked; ``"any"``).
        on_normalization_mismatch: ``"warn"`` (load with a warning) or ``"refuse"``.
        backbone_family / source_axis_order: the statement required for a record-less state dict.
        source_prefix: with an explicit ``target`` prefix, the source sub-tree that moves there.
        log: where the report goes (``None``: silent).
    Returns:
        the :class:`~monai_ssl_plugin.transfer.loading.LoadReport` of the transfer.
    """
    src = read_weights(source, backbone_family=backbone_family, axis_order=source_axis_order, log=log)
    tgt = target if isinstance(target, Target) else resolve_target(network, target)
    family = src.family
    if not tgt.accepts(family):
        accepted = ", ".join(k.rstrip("*") for k in tgt.families)
        raise PluginError(f"{src.origin} holds a {family} backbone, which cannot initialise {tgt.describe()} "
                          f"(accepts {accepted}).",
                          refusal_fix(family, tgt) or
                          f"Pretrain a {accepted.split(',')[0]} backbone, or pass target='<prefix>' to load by key names.")
    not_mapped: list[str] = []
    if family in tgt.key_maps:  # names differ structurally: the transfer layer's exact map (see nnunet_sources)
        mapped, not_mapped = plain_unet_into_dynunet(network, tgt, src, axis_order, on_axis_mismatch, log)
    else:
        mapped = map_source(tgt, family, src.state, src.record.key_prefixes if src.record else None, source_prefix)
    check_channels(src, mapped, network, tgt, in_channels)
    dst_state = unwrap(network).state_dict()
    spatial = (first_conv(dst_state, tgt.includes) or (None, torch.zeros(1, 1, 1, 1, 1)))[1].ndim - 2
    mapped = check_axis_order(mapped, family, src.axis_order, axis_order, on_axis_mismatch, spatial_dims=spatial,
                              record_kwargs=src.record.backbone_kwargs if src.record else None, origin=src.origin, log=log)
    if on_axis_mismatch == "permute" and src.axis_order not in (None, axis_order) and axis_order != "any":
        bad = [(k, tuple(v.shape), tuple(dst_state[k].shape)) for k, v in mapped.items()
               if k in dst_state and tgt.includes(k) and tuple(v.shape) != tuple(dst_state[k].shape)]
        if bad:
            k, s, d = bad[0]
            raise PluginError(f"After transposing to {axis_order} order, {k} is {s} but the network has {d}.",
                              "Build the target with the axis-reversed kernel sizes and strides of the pretrained network.")
    check_normalization(src, normalization, log, on_normalization_mismatch)
    if log is not None:
        log(f"[monai-ssl] SSL init: {src.describe()} -> {tgt.describe()}")
    report = load_weights(network, mapped, include=tgt.includes, min_fraction=min_fraction, log=None)
    report.skipped_filtered += not_mapped  # source tensors the key map leaves out on purpose (logged above)
    if log is not None:
        log(f"[monai-ssl] SSL init {tgt.name}: {report.summary()}")
        if report.skipped_shape or report.missing:
            log("\n".join(report.details(limit=5).splitlines()[1:]))
    return report

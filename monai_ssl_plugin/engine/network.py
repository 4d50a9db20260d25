"""What a pretraining bundle builds from its config: the backbone (from the data's plans when there are
some), a checked patch size, the MAE mask block scaled with the patch, and the checkpoint record.

Bundle YAML reaches these through :mod:`monai_ssl_plugin.engine.run` (``ssl_run.check_patch_size``,
``_target_: monai_ssl_plugin.engine.run.build_backbone`` ...).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from monai_ssl_plugin.backbones import BackboneAdapter, MonaiResNetBackbone, NnUNetBackbone, create_backbone
from monai_ssl_plugin.backbones.resnet import RESNET_ARCHS
from monai_ssl_plugin.checkpoint import CheckpointRecord, build_record
from monai_ssl_plugin.errors import PluginError

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "nnunet_plain_small"


# network_def class names (and factories) of a MONAI consumer -> the adapter that pretrains that network
_CONSUMER_CLASSES = {"UNet": "monai_unet", "Unet": "monai_unet", "DynUNet": "monai_dynunet",
                     "SegResNet": "monai_segresnet", "SwinUNETR": "monai_swinunetr", "DenseNet121": "monai_densenet121",
                     "DenseNet": "monai_densenet121"}
# arguments that shape the consumer's task head, not the pretrained part (SSL sets its own outputs)
_HEAD_ARGS = {"out_channels", "num_classes", "img_size"}


def consumer_backbone(network: dict[str, Any], in_channels: int) -> BackboneAdapter | None:
    """The consumer's own network (``{"class", "kwargs"}`` from its ``network_def``) as a backbone, or None
    when the class has no adapter (then ``backbone: auto`` falls back to the default)."""
    cls = str(network.get("class"))
    kwargs = {k: v for k, v in dict(network.get("kwargs") or {}).items() if k not in _HEAD_ARGS}
    if cls == "ResNet" or cls in RESNET_ARCHS:  # ResNet(block, layers, ...) or a resnet10..200 factory
        kwargs.pop("n_input_channels", None)
        kwargs["feed_forward"] = False
        if cls == "ResNet":
            return MonaiResNetBackbone(n_input_channels=in_channels, **kwargs)
        block, layers = RESNET_ARCHS[cls]
        return MonaiResNetBackbone(block, layers, n_input_channels=in_channels, **kwargs)
    name = _CONSUMER_CLASSES.get(cls)
    if name is None:
        logger.warning("No backbone adapter for the consumer's %s; using %s.", network.get("class"), DEFAULT_BACKBONE)
        return None
    kwargs.pop("in_channels", None)
    if name == "monai_densenet121":
        kwargs["out_channels"] = 1  # the classifier's head is never pretrained
    return create_backbone(name, in_channels=in_channels, **kwargs)


def build_backbone(backbone: str = "auto", data_info: dict[str, Any] | None = None, plans: str | None = None,
                   configuration: str = "3d_fullres", in_channels: int | None = None) -> BackboneAdapter:
    """The backbone adapter to pretrain.

    - ``plans`` given: the network of that nnU-Net plans file and ``configuration``;
    - ``backbone="auto"``: the plans of an nnU-Net *preprocessed* ``dataset_dir`` (so the pretrained
      architecture is the one nnU-Net will fine-tune), the network of the ``read_like`` MONAI bundle
      (``consumer_network`` in the data info), otherwise ``nnunet_plain_small``;
    - any other name: that registered backbone.

    ``in_channels`` defaults to the data's channel count.
    """
    info = data_info or {}
    channels = int(in_channels or info.get("in_channels") or 1)
    if plans in ("", "null"):
        plans = None
    if plans is None and backbone == "auto" and info.get("plans_file"):
        plans, configuration = info["plans_file"], info.get("configuration", configuration)
    if plans is not None:
        net = NnUNetBackbone.from_plans(plans, configuration, in_channels=channels)
        logger.info("Backbone: %s from %s (%s), %d input channel(s).", net.family, plans, configuration, channels)
        return net
    if backbone == "auto" and info.get("consumer_network"):
        net = consumer_backbone(info["consumer_network"], channels)
        if net is not None:
            logger.info("Backbone: %s, the network of %s.", net.family, info.get("read_like"))
            return net
    name = DEFAULT_BACKBONE if backbone == "auto" else backbone
    net = create_backbone(name, in_channels=channels)
    logger.info("Backbone: %s (%s), %d input channel(s).", name, net.family, channels)
    return net


def check_patch_size(patch_size: Sequence[int], backbone: Any) -> list[int]:
    """``patch_size`` as ints, after checking it fits the backbone's dimensions and downsampling."""
    patch = [int(p) for p in patch_size]
    dims = getattr(backbone, "spatial_dims", len(patch))
    if len(patch) != dims:
        raise PluginError(f"patch_size {patch} has {len(patch)} axes but the backbone is {dims}D.",
                          f"Give {dims} sizes, e.g. --patch_size \"{[64] * dims}\".")
    divisor = backbone.divisor()
    bad = [p for p, d in zip(patch, divisor) if p % d or p // d < 2]
    if bad:
        fix = [max(2 * d, round(p / d) * d) for p, d in zip(patch, divisor)]
        raise PluginError(f"patch_size {patch} does not fit the backbone (each axis must be a multiple of {divisor}, "
                          "at least twice it).", f"Use e.g. --patch_size \"{fix}\".")
    return patch


def mae_block_size(patch_size: Sequence[int], reference_block: int = 16, reference_patch: int = 160) -> int:
    """Mask block side scaled with the patch: 16 at 160³ (nnssl), rounded to a power of two (>= 2).

    48³ -> 4, 64³ -> 8, 96³ -> 8, 128³ -> 16, 160³ -> 16. Powers of two stay aligned with the
    stride-2 stages, so the SparK re-masking at coarser resolutions is exact.
    """
    scaled = reference_block * min(int(p) for p in patch_size) / reference_patch
    return max(2, 2 ** round(math.log2(max(scaled, 1e-6))))


def record_factory(pretext: nn.Module, data_info: dict[str, Any], patch_size: Sequence[int]
                   ) -> Callable[[int], CheckpointRecord]:
    """``steps -> CheckpointRecord`` for the checkpoint handler (see ``monai_ssl_plugin.checkpoint``)."""
    module = getattr(pretext, "module", pretext)
    info = dict(data_info)

    def record(steps: int) -> CheckpointRecord:
        return build_record(module.backbone, module, info, list(patch_size), steps=steps)

    return record

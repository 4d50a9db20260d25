"""From a checkpoint record back to an adapter: ``backbone_from_record(family, backbone_kwargs)``.

Every adapter's ``constructor`` is the keyword arguments of its own class (for the MONAI adapters,
also those of the wrapped MONAI network), so the family string picks the class and the kwargs
rebuild the identical network.
"""

from __future__ import annotations

from typing import Any

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.backbones.densenet import MonaiDenseNetBackbone
from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.backbones.primus import NnUNetPrimusBackbone
from monai_ssl_plugin.backbones.resnet import MonaiResNetBackbone
from monai_ssl_plugin.backbones.segresnet import MonaiSegResNetBackbone
from monai_ssl_plugin.backbones.swin import MonaiSwinUNETRBackbone
from monai_ssl_plugin.backbones.unet import MonaiDynUNetBackbone, MonaiUNetBackbone
from monai_ssl_plugin.backbones.vit import MonaiUNETRBackbone, MonaiViTBackbone
from monai_ssl_plugin.errors import PluginError

FAMILIES: dict[str, type[BackboneAdapter]] = {
    "monai.ResNet": MonaiResNetBackbone,
    "monai.SwinUNETR": MonaiSwinUNETRBackbone,
    "monai.UNETR": MonaiUNETRBackbone,
    "monai.ViT": MonaiViTBackbone,
    "monai.SegResNet": MonaiSegResNetBackbone,
    "monai.UNet": MonaiUNetBackbone,
    "monai.DynUNet": MonaiDynUNetBackbone,
    "monai.DenseNet": MonaiDenseNetBackbone,
    "nnunet.PlainConvUNet": NnUNetBackbone,
    "nnunet.ResidualEncoderUNet": NnUNetBackbone,
    "nnunet.Primus": NnUNetPrimusBackbone,
}


def backbone_from_record(family: str, constructor: dict[str, Any]) -> BackboneAdapter:
    """The adapter a record describes (fresh weights; load the checkpoint's ``network`` state into it)."""
    if family not in FAMILIES:
        raise PluginError(f"Unknown backbone family {family!r} in the checkpoint record.",
                          f"Use a checkpoint written by monai-ssl with one of: {', '.join(FAMILIES)}.")
    return FAMILIES[family](**constructor)

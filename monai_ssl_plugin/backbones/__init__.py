"""Backbone adapters: every supported network with the same face (encode / decode / embed / key map)."""

from monai_ssl_plugin.backbones import nnunet, primus  # noqa: F401  (registers the nnU-Net presets)
from monai_ssl_plugin.backbones import densenet, resnet, segresnet, swin, unet, vit  # noqa: F401  (register the MONAI networks)
from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.backbones.densenet import MonaiDenseNetBackbone
from monai_ssl_plugin.backbones.compatibility import compatibility, compatibility_table
from monai_ssl_plugin.backbones.families import FAMILIES, backbone_from_record
from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.backbones.primus import NnUNetPrimusBackbone
from monai_ssl_plugin.backbones.registry import create_backbone, list_backbones, register_backbone
from monai_ssl_plugin.backbones.resnet import MonaiResNetBackbone, make_light_decoder
from monai_ssl_plugin.backbones.segresnet import MonaiSegResNetBackbone
from monai_ssl_plugin.backbones.swin import MonaiSwinUNETRBackbone
from monai_ssl_plugin.backbones.unet import MonaiDynUNetBackbone, MonaiUNetBackbone
from monai_ssl_plugin.backbones.vit import MonaiUNETRBackbone, MonaiViTBackbone, mae_vit_key_map

__all__ = ["BackboneAdapter", "FAMILIES", "MonaiDenseNetBackbone", "MonaiDynUNetBackbone", "MonaiResNetBackbone",
           "MonaiUNetBackbone", "MonaiSegResNetBackbone", "MonaiSwinUNETRBackbone",
           "MonaiUNETRBackbone", "MonaiViTBackbone", "NnUNetBackbone", "NnUNetPrimusBackbone", "backbone_from_record", "compatibility",
           "compatibility_table", "create_backbone", "list_backbones", "mae_vit_key_map", "make_light_decoder",
           "register_backbone"]

"""Backbone adapters: every supported network with the same face (encode / decode / embed / key map)."""

from monai_ssl_plugin.backbones import nnunet  # noqa: F401  (registers the nnU-Net presets)
from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.backbones.registry import create_backbone, list_backbones, register_backbone

__all__ = ["BackboneAdapter", "NnUNetBackbone", "create_backbone", "list_backbones", "register_backbone"]

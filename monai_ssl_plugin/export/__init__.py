"""Checkpoint formats and weight transfer: key maps, reported loading, nnU-Net / nnssl export."""

from monai_ssl_plugin.export.keymap import remap_keys, strip_wrapper_prefixes
from monai_ssl_plugin.export.loading import LoadReport, load_weights

__all__ = ["LoadReport", "load_weights", "remap_keys", "strip_wrapper_prefixes"]

"""Published SSL checkpoints as a starting point: a catalog with provenance, verified cached downloads, and
converters into the plugin's checkpoint format (``monai-ssl pretrained list|info|get NAME``)."""

from monai_ssl_plugin.pretrained.cache import ENV_HOME, cache_root
from monai_ssl_plugin.pretrained.catalog import CATALOG, PretrainedEntry, get_entry
from monai_ssl_plugin.pretrained.fetch import get, info

__all__ = ["CATALOG", "ENV_HOME", "PretrainedEntry", "cache_root", "get", "get_entry", "info"]

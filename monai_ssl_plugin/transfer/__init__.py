"""The transfer layer: everything that moves pretrained weights into a network, below both consumers.

- checkpoint formats: one reader, one type (:func:`read_weights` -> :class:`PretrainedWeights`)
  for the plugin's checkpoints and exports, SSL bundles, nnssl and nnU-Net files, bare state dicts;
- record checks (:mod:`.records`), axis order (:mod:`.axes`), normalisation compatibility
  (:mod:`.normalization`), shape adaptation and the dry run of a load (:mod:`.adaptation`,
  :mod:`.compare`);
- reported loading (:func:`load_weights` -> :class:`LoadReport`) and the one key remapper
  (:mod:`.keymap`); ``unwrap`` is :func:`monai_ssl_plugin.distributed.unwrap`, re-exported.

The nnU-Net trainers (:mod:`monai_ssl_plugin.nnunet`) and the MONAI bundles
(:mod:`monai_ssl_plugin.monai_bundles`) add their own rules on top; :mod:`monai_ssl_plugin.export`
writes files.
"""

from monai_ssl_plugin.distributed import unwrap
from monai_ssl_plugin.transfer.formats import PretrainedWeights, read_weights
from monai_ssl_plugin.transfer.keymap import remap_keys, strip_wrapper_prefixes
from monai_ssl_plugin.transfer.loading import LoadReport, load_weights
from monai_ssl_plugin.transfer.normalization import compare_normalization

__all__ = ["LoadReport", "PretrainedWeights", "compare_normalization", "load_weights", "read_weights", "remap_keys",
           "strip_wrapper_prefixes", "unwrap"]

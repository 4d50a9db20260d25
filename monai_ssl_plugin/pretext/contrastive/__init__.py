"""Contrastive pretexts (the review's first paradigm): pull two views of a volume together, push
other volumes (or other positions) away. Importing the package registers them."""

from monai_ssl_plugin.pretext.contrastive import moco, simclr, voco  # noqa: F401  (register)
from monai_ssl_plugin.pretext.contrastive.moco import MoCo
from monai_ssl_plugin.pretext.contrastive.simclr import SimCLR
from monai_ssl_plugin.pretext.contrastive.voco import VoCo

__all__ = ["MoCo", "SimCLR", "VoCo"]

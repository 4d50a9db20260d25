"""Non-contrastive joint-embedding pretexts (the review's second paradigm): match views of a
volume without negatives. Importing the package registers them."""

from monai_ssl_plugin.pretext.non_contrastive import barlow_twins, byol, dino, simsiam, vicreg  # noqa: F401
from monai_ssl_plugin.pretext.non_contrastive.barlow_twins import BarlowTwins
from monai_ssl_plugin.pretext.non_contrastive.byol import BYOL
from monai_ssl_plugin.pretext.non_contrastive.dino import DINO
from monai_ssl_plugin.pretext.non_contrastive.simsiam import SimSiam
from monai_ssl_plugin.pretext.non_contrastive.vicreg import VICReg

__all__ = ["BYOL", "BarlowTwins", "DINO", "SimSiam", "VICReg"]

"""Losses MONAI lacks (and thin DDP-aware versions of two it has), one concept a module."""

from monai_ssl_plugin.losses.barlow_twins import BarlowTwinsLoss
from monai_ssl_plugin.losses.byol import BYOLLoss, SimSiamLoss, negative_cosine_similarity
from monai_ssl_plugin.losses.dino import DINOLoss
from monai_ssl_plugin.losses.masked_reconstruction import MaskedReconstructionLoss
from monai_ssl_plugin.losses.moco import MoCoLoss, MoCoQueue, info_nce
from monai_ssl_plugin.losses.nt_xent import NTXentLoss
from monai_ssl_plugin.losses.vicreg import VICRegLoss, vicreg_terms
from monai_ssl_plugin.losses.voco import VoCoLoss, voco_logits, voco_prediction_terms, voco_regulariser

__all__ = ["BYOLLoss", "BarlowTwinsLoss", "DINOLoss", "MaskedReconstructionLoss", "MoCoLoss", "MoCoQueue",
           "NTXentLoss", "SimSiamLoss", "VICRegLoss", "VoCoLoss", "info_nce", "negative_cosine_similarity",
           "vicreg_terms", "voco_logits", "voco_prediction_terms", "voco_regulariser"]

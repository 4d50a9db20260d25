"""Losses MONAI lacks, one concept a module."""

from monai_ssl_plugin.losses.masked_reconstruction import MaskedReconstructionLoss

__all__ = ["MaskedReconstructionLoss"]

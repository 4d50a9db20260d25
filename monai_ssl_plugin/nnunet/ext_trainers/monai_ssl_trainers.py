"""The plugin's trainers, where nnU-Net's ``nnUNet_extTrainer`` lookup finds them (``-tr NAME``).

Thin on purpose: the classes live in :mod:`monai_ssl_plugin.nnunet.trainers`, so they keep one
importable module name (nnU-Net drops this module from ``sys.modules`` after the lookup).
"""

from monai_ssl_plugin.nnunet.trainers import (  # noqa: F401
    nnUNetTrainerScratch,
    nnUNetTrainerScratch_5epochs,
    nnUNetTrainerScratch_PretrainedTrainer,
    nnUNetTrainerScratch_PretrainedTrainer_short,
    nnUNetTrainerScratch_short,
    nnUNetTrainerSSL,
    nnUNetTrainerSSL_5epochs,
    nnUNetTrainerSSL_PretrainedTrainer,
    nnUNetTrainerSSL_PretrainedTrainer_short,
    nnUNetTrainerSSL_short,
    nnUNetTrainerSSLFrozenEncoder,
    nnUNetTrainerSSLFrozenEncoder_5epochs,
    nnUNetTrainerSSLFrozenEncoder_short,
    nnUNetTrainerSSLSawtooth,
    nnUNetTrainerSSLSawtooth_5epochs,
    nnUNetTrainerSSLSawtooth_short,
)

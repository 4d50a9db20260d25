"""nnU-Net side: fine-tuning trainers (found via ``nnUNet_extTrainer``), their LR schedules,
pretrained-weight loading (with reported adaptations) and plans variants (routes (a) and (b)).

The trainer classes import nnU-Net's trainer (slow), so they load on first access.
"""

from __future__ import annotations

from typing import Any

from monai_ssl_plugin.nnunet.env import env_line, ext_trainer_dir
from monai_ssl_plugin.nnunet.schedules import SawtoothLRScheduler, WarmupPolyLRScheduler, sawtooth_lr, warmup_poly_lr

_TRAINERS = ("nnUNetTrainerSSL", "nnUNetTrainerScratch", "nnUNetTrainerSSLSawtooth", "nnUNetTrainerSSLFrozenEncoder",
             "nnUNetTrainerSSL_short", "nnUNetTrainerScratch_short", "nnUNetTrainerSSLSawtooth_short",
             "nnUNetTrainerSSLFrozenEncoder_short", "nnUNetTrainerSSL_5epochs", "nnUNetTrainerScratch_5epochs",
             "nnUNetTrainerSSLSawtooth_5epochs", "nnUNetTrainerSSLFrozenEncoder_5epochs",
             "nnUNetTrainerSSL_PretrainedTrainer", "nnUNetTrainerScratch_PretrainedTrainer",
             "nnUNetTrainerSSL_PretrainedTrainer_short", "nnUNetTrainerScratch_PretrainedTrainer_short")

__all__ = ["SawtoothLRScheduler", "WarmupPolyLRScheduler", "env_line", "ext_trainer_dir", "sawtooth_lr",
           "warmup_poly_lr", *_TRAINERS]


def __getattr__(name: str) -> Any:
    if name in _TRAINERS:
        from monai_ssl_plugin.nnunet import trainers

        return getattr(trainers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

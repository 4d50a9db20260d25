"""nnU-Net side: fine-tuning trainers (found via ``nnUNet_extTrainer``), their LR schedule,
pretrained-weight loading and plans variants.

The trainer classes import nnU-Net's trainer (slow), so they load on first access.
"""

from __future__ import annotations

from typing import Any

from monai_ssl_plugin.nnunet.env import env_line, ext_trainer_dir
from monai_ssl_plugin.nnunet.schedules import WarmupPolyLRScheduler, warmup_poly_lr

_TRAINERS = ("nnUNetTrainerSSL", "nnUNetTrainerScratch", "nnUNetTrainerSSL_short", "nnUNetTrainerScratch_short",
             "nnUNetTrainerSSL_5epochs", "nnUNetTrainerScratch_5epochs")

__all__ = ["WarmupPolyLRScheduler", "env_line", "ext_trainer_dir", "warmup_poly_lr", *_TRAINERS]


def __getattr__(name: str) -> Any:
    if name in _TRAINERS:
        from monai_ssl_plugin.nnunet import trainers

        return getattr(trainers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

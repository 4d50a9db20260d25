"""Activation checkpointing of a backbone's encoder stages (a config switch of the bundles).

``activation_checkpointing(backbone, True)`` makes every module of ``backbone.encoder_stages()`` run
its forward under ``torch.utils.checkpoint`` (non-reentrant) while gradients are recorded: the
stage's inner activations are dropped after the forward and recomputed in the backward, trading
about one extra encoder forward for memory. Forward hooks (SparK's re-masking) stay outside the
checkpointed function and run once; parameters and state-dict keys are unchanged, so checkpoints
and exports are identical with and without it. Mixed precision is the trainer's ``amp`` switch.
"""

from __future__ import annotations

import logging
import types
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from monai_ssl_plugin.engine.config_values import as_bool

logger = logging.getLogger(__name__)


def _checkpointed_forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    original = type(self).forward
    if torch.is_grad_enabled():
        return checkpoint(original, self, *args, use_reentrant=False, **kwargs)
    return original(self, *args, **kwargs)


def activation_checkpointing(backbone: Any, enabled: Any = True) -> Any:
    """``backbone`` with checkpointed encoder stages when ``enabled`` (``"true"`` from the CLI works)."""
    if not as_bool(enabled):
        return backbone
    stages = list(backbone.encoder_stages())
    for stage in stages:
        if getattr(stage, "_ssl_checkpointed", False):
            continue
        # a method bound to the stage, not a closure over it: deepcopy (the EMA teachers of BYOL, MoCo,
        # DINO, VoCo are momentum copies of the backbone) rebinds it to the copy, which then runs its
        # own weights
        stage.forward = types.MethodType(_checkpointed_forward, stage)
        stage._ssl_checkpointed = True
    logger.info("Activation checkpointing on %d encoder stage(s).", len(stages))
    return backbone

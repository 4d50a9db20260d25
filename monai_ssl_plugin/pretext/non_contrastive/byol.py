"""BYOL: an online network predicts the projection an EMA target network gives the other view.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS
2020: projector 4096 -> 256, predictor 4096 -> 256, loss ``2 - 2 cos(p, sg(z'))`` symmetrised,
target momentum 0.996 -> 1 on a cosine over training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.losses import BYOLLoss
from monai_ssl_plugin.pretext.ema import CosineMomentum
from monai_ssl_plugin.pretext.heads import PredictionHead
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.views_mixin import ViewsMixin, alignment, momentum_copy


@register_pretext("byol", paradigm="non_contrastive")
class BYOL(CosineMomentum, ViewsMixin, nn.Module):
    """BYOL over any backbone adapter with ``embed``, in 2D and 3D.

    Step: two overlapping augmented crops (B, C, *view) per volume; online
    ``p = predictor(projector(backbone.embed(v)))`` (2B, P); target ``z' = target_projector(
    target_backbone.embed(v))`` (2B, P) without gradient; ``BYOLLoss(p1, z'2, p2, z'1)``
    (in [0, 8]). ``after_step(i)`` moves the target with momentum
    ``cosine_momentum(i, total_steps, base_momentum)`` (0.996 -> 1), through the one ``ema_update``.

    Args:
        backbone: adapter with ``embed``.
        projection_dim, hidden_dim: projector and predictor (256, 4096, BYOL).
        norm: head norm (``"layer"``: no negatives and no batch statistics, so batch size 1 works).
        base_momentum: target momentum at step 0 (0.996).
        total_steps: steps of the run, for the cosine; ``None`` keeps ``base_momentum`` constant.
        standardise: a :class:`~monai_ssl_plugin.pretext.views_mixin.RunningStandardiser` before the
            head (on; without it nnU-Net's InstanceNorm embeddings start nearly identical for
            every input, see there).
        view_size, min_overlap, augment: see :class:`~monai_ssl_plugin.pretext.views_mixin.ViewsMixin`.

    ``forward`` returns ``{"loss", "byol", "alignment"}`` (alignment: mean cos(p, z'), detached);
    ``last_embeddings``: the online projections (2B, P), detached. ``momentum``: the momentum of the
    last update. Trains the encoder only.
    """

    trains_decoder = False

    def __init__(self, backbone: nn.Module, projection_dim: int = 256, hidden_dim: int = 4096,
                 norm: str | None = "layer", base_momentum: float = 0.996, total_steps: int | None = None,
                 view_size: int | Sequence[int] | None = None, min_overlap: float = 0.5, augment: bool = True,
                 standardise: bool = True):
        super().__init__()
        self.backbone = backbone
        self._init_views(view_size, min_overlap, augment)
        self._init_projector(hidden_dim, projection_dim, 2, norm, standardise)
        self.predictor = PredictionHead(projection_dim, hidden_dim, norm=norm)
        self.target_backbone = momentum_copy(backbone)
        self.target_projector = momentum_copy(self.projector)
        self.criterion = BYOLLoss()
        self._init_momentum(base_momentum, total_steps)
        self._head = {"standardise": bool(standardise), "projection_dim": projection_dim, "hidden_dim": hidden_dim,
                      "norm": norm}

    def settings(self) -> dict[str, Any]:
        return {"base_momentum": self.base_momentum, "final_momentum": 1.0, "momentum_schedule": "cosine",
                "total_steps": self.total_steps, **self._head, **self.view_settings()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        v1, v2, z = self.project_views(batch["image"])
        p1, p2 = self.predictor(z).chunk(2)
        with torch.no_grad():
            t1, t2 = self.target_projector(torch.cat(self.embed_pair(self.target_backbone, v1, v2))).chunk(2)
        loss = self.criterion(p1, t2, p2, t1)
        return {"loss": loss, "byol": loss.detach(), "alignment": 0.5 * (alignment(p1, t2) + alignment(p2, t1))}

    @torch.no_grad()
    def after_step(self, iteration: int) -> None:
        """Target EMA; ``iteration`` is the trainer's (1-based) count of completed steps."""
        self._step_momentum(iteration, [(self.target_backbone, self.backbone),
                                        (self.target_projector, self.projector)])

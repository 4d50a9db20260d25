"""SimSiam: a Siamese network with a predictor and a stop-gradient, no negatives and no EMA.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021: projector 3 layers of
2048, predictor bottleneck 2048 -> 512 -> 2048, loss ``0.5 D(p1, sg(z2)) + 0.5 D(p2, sg(z1))``
with ``D = -cos``. It collapses easily with weak augmentation or little data:
attach the collapse handler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.losses import SimSiamLoss
from monai_ssl_plugin.pretext.heads import PredictionHead
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.views_mixin import ViewsMixin


@register_pretext("simsiam", paradigm="non_contrastive")
class SimSiam(ViewsMixin, nn.Module):
    """SimSiam over any backbone adapter with ``embed``, in 2D and 3D.

    Step: two overlapping augmented crops (B, C, *view); ``z = projector(backbone.embed(v))``
    (2B, P); ``p = predictor(z)`` (2B, P); ``SimSiamLoss(p1, z2, p2, z1)`` with the gradient
    stopped at z (in [-1, 1]; -1 is also what a collapsed network reaches).

    Args:
        backbone: adapter with ``embed``.
        projection_dim, hidden_dim: projector output and width (2048, 2048; 3 layers).
        predictor_dim: predictor bottleneck (512).
        norm: head norm (``"layer"``; batch size 1 works). The paper's projector ends with a
            BatchNorm, which here is the final Linear without norm.
        standardise: a :class:`~monai_ssl_plugin.pretext.views_mixin.RunningStandardiser` before the
            head (on; without it nnU-Net's InstanceNorm embeddings start nearly identical for
            every input, see there).
        view_size, min_overlap, augment: see :class:`~monai_ssl_plugin.pretext.views_mixin.ViewsMixin`.

    ``forward`` returns ``{"loss", "simsiam", "alignment"}`` (alignment = -loss, detached);
    ``last_embeddings``: the projections (2B, P), detached. Trains the encoder only.
    """

    trains_decoder = False

    def __init__(self, backbone: nn.Module, projection_dim: int = 2048, hidden_dim: int = 2048,
                 predictor_dim: int = 512, norm: str | None = "layer", view_size: int | Sequence[int] | None = None,
                 min_overlap: float = 0.5, augment: bool = True, standardise: bool = True):
        super().__init__()
        self.backbone = backbone
        self._init_views(view_size, min_overlap, augment)
        self._init_projector(hidden_dim, projection_dim, 3, norm, standardise)
        self.predictor = PredictionHead(projection_dim, predictor_dim, norm=norm)
        self.criterion = SimSiamLoss()
        self._head = {"standardise": bool(standardise), "projection_dim": projection_dim, "hidden_dim": hidden_dim,
                      "predictor_dim": predictor_dim, "norm": norm}

    def settings(self) -> dict[str, Any]:
        return {**self._head, **self.view_settings()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.project_views(batch["image"])[2]
        p1, p2 = self.predictor(z).chunk(2)
        z1, z2 = z.chunk(2)
        loss = self.criterion(p1, z2, p2, z1)  # the loss stops the gradient at z
        return {"loss": loss, "simsiam": loss.detach(), "alignment": -loss.detach()}

"""Barlow Twins: make the cross-correlation of two views' embeddings the identity matrix.

Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021: projector 3 layers of 8192, lambda = 5e-3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.losses import BarlowTwinsLoss
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.views_mixin import ViewsMixin, alignment


@register_pretext("barlow_twins", paradigm="non_contrastive")
class BarlowTwins(ViewsMixin, nn.Module):
    """Barlow Twins over any backbone adapter with ``embed``, in 2D and 3D.

    Step: two overlapping augmented crops (B, C, *view); ``z = projector(backbone.embed(v))``
    (2B, P); ``BarlowTwinsLoss(z1, z2)``: each of the P dimensions standardised over the (global)
    batch, ``sum_i (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2`` with ``C = z1^T z2 / B``.

    Args:
        backbone: adapter with ``embed``.
        projection_dim, hidden_dim, num_layers: projector (8192, 8192, 3: the paper's; cut them to
            1024-2048 for CPU runs).
        lambd: off-diagonal weight (5e-3).
        norm: head norm (``"layer"``, see ``pretext.heads``; the standardisation in the loss is over
            the batch anyway).
        standardise: a :class:`~monai_ssl_plugin.pretext.views_mixin.RunningStandardiser` before the
            head (on; without it nnU-Net's InstanceNorm embeddings start nearly identical for
            every input, see there).
        view_size, min_overlap, augment: see :class:`~monai_ssl_plugin.pretext.views_mixin.ViewsMixin`.
        gather_distributed: standardise and correlate over the batch of all DDP processes.

    Needs >= 3 volumes per global batch: the loss standardises each dimension over the batch, and
    over 2 rows every standardised entry is +-1 whatever the embeddings are (no gradient); batch
    sizes 1-2 raise a one-line error naming the fix. ``forward`` returns ``{"loss", "barlow_twins",
    "alignment"}`` (alignment: mean cos(z1, z2), detached); ``last_embeddings``: the projections
    (2B, P), detached. Trains the encoder only.
    """

    trains_decoder = False

    def __init__(self, backbone: nn.Module, projection_dim: int = 8192, hidden_dim: int = 8192, num_layers: int = 3,
                 lambd: float = 5e-3, norm: str | None = "layer", view_size: int | Sequence[int] | None = None,
                 min_overlap: float = 0.5, augment: bool = True, gather_distributed: bool = True,
                 standardise: bool = True):
        super().__init__()
        self.backbone = backbone
        self._init_views(view_size, min_overlap, augment)
        self._init_projector(hidden_dim, projection_dim, num_layers, norm, standardise)
        self.criterion = BarlowTwinsLoss(lambd, gather_distributed=gather_distributed)
        self._head = {"standardise": bool(standardise), "projection_dim": projection_dim, "hidden_dim": hidden_dim,
                      "num_layers": num_layers, "norm": norm}

    def settings(self) -> dict[str, Any]:
        return {"lambd": self.criterion.lambd, **self._head, **self.view_settings()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        self._require_batch(image, 3, "Barlow Twins standardises every dimension over the batch, and with 2 volumes "
                            "each standardised entry is +-1 whatever the network outputs, so nothing is learnt",
                            "Use batch_size >= 3 (the bundle uses 4), or several DDP processes, or byol / simsiam / "
                            "vicreg / dino at small batches.")
        z1, z2 = self.project_views(image)[2].chunk(2)
        loss = self.criterion(z1, z2)
        return {"loss": loss, "barlow_twins": loss.detach(), "alignment": alignment(z1, z2)}

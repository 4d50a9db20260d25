"""VICReg: invariance between views, variance kept above a margin, covariance decorrelated.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022: expander 3 layers of 8192, weights 25 / 25 / 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.losses import VICRegLoss, vicreg_terms
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.views_mixin import ViewsMixin


@register_pretext("vicreg", paradigm="non_contrastive")
class VICReg(ViewsMixin, nn.Module):
    """VICReg over any backbone adapter with ``embed``, in 2D and 3D.

    Step: two overlapping augmented crops (B, C, *view); ``z = expander(backbone.embed(v))``
    (2B, P); ``25 * MSE(z1, z2) + 25 * variance hinge + 1 * off-diagonal covariance``
    (:func:`~monai_ssl_plugin.losses.vicreg_terms`), variance and covariance over the global batch.

    Args:
        backbone: adapter with ``embed``.
        projection_dim, hidden_dim, num_layers: expander (8192, 8192, 3: the paper's; cut them to
            1024-2048 for CPU runs).
        sim_weight, var_weight, cov_weight: 25, 25, 1.
        norm: head norm (``"layer"``, see ``pretext.heads``).
        standardise: a :class:`~monai_ssl_plugin.pretext.views_mixin.RunningStandardiser` before the
            head (on; without it nnU-Net's InstanceNorm embeddings start nearly identical for
            every input, see there).
        view_size, min_overlap, augment: see :class:`~monai_ssl_plugin.pretext.views_mixin.ViewsMixin`.
        gather_distributed: variance / covariance over all DDP processes.

    Needs >= 2 volumes per global batch (variance and covariance are batch statistics); batch 1
    raises a one-line error naming the fix. ``forward`` returns ``{"loss", "invariance",
    "variance", "covariance"}`` (the three unweighted terms, detached); ``last_embeddings``: the
    expander outputs (2B, P), detached. Trains the encoder only.
    """

    trains_decoder = False

    def __init__(self, backbone: nn.Module, projection_dim: int = 8192, hidden_dim: int = 8192, num_layers: int = 3,
                 sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
                 norm: str | None = "layer", view_size: int | Sequence[int] | None = None, min_overlap: float = 0.5,
                 augment: bool = True, gather_distributed: bool = True, standardise: bool = True):
        super().__init__()
        self.backbone = backbone
        self._init_views(view_size, min_overlap, augment)
        self._init_projector(hidden_dim, projection_dim, num_layers, norm, standardise)
        self.criterion = VICRegLoss(sim_weight, var_weight, cov_weight, gather_distributed=gather_distributed)
        self._head = {"standardise": bool(standardise), "projection_dim": projection_dim, "hidden_dim": hidden_dim,
                      "num_layers": num_layers, "norm": norm}

    def settings(self) -> dict[str, Any]:
        c = self.criterion
        return {"sim_weight": c.sim_weight, "var_weight": c.var_weight, "cov_weight": c.cov_weight,
                "gamma": c.gamma, **self._head, **self.view_settings()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        self._require_batch(image, 2, "VICReg's variance and covariance terms are statistics over the batch",
                            "Use batch_size >= 2 (or several DDP processes), or byol / simsiam / dino at batch 1.")
        z1, z2 = self.project_views(image)[2].chunk(2)
        c = self.criterion
        inv, var, cov = vicreg_terms(z1, z2, c.gamma, c.eps, c.gather_distributed)
        loss = c.sim_weight * inv + c.var_weight * var + c.cov_weight * cov
        return {"loss": loss, "invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}

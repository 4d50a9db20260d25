"""SimCLR: contrast two overlapping crops of each volume against the other volumes of the batch.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Volumetric setting as in nnssl / OpenMind (Wald et al. 2025): two
crops of one patch overlapping >= 50 %, NT-Xent with temperature 0.5 (also Swin UNETR
pretraining, Tang et al., CVPR 2022), negatives gathered across processes under DDP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.losses import NTXentLoss
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.views_mixin import ViewsMixin, alignment


@register_pretext("simclr", paradigm="contrastive")
class SimCLR(ViewsMixin, nn.Module):
    """SimCLR over any backbone adapter with ``embed``, in 2D and 3D.

    Step: ``batch["image"]`` (B, C, *patch) -> two crops per volume overlapping >= ``min_overlap``
    (B, C, *view) each, light intensity jitter + flips -> ``backbone.embed`` (2B, E) ->
    projection head (2B, P) -> NT-Xent over the 2B projections (each view's positive is the other
    view of its volume, the other 2B - 2 are negatives).

    Args:
        backbone: adapter with ``embed`` (all registered backbones).
        temperature: NT-Xent temperature (0.5: Swin UNETR pretraining, nnssl; SimCLR used 0.1
            with batches of 4096).
        projection_dim: P, output of the projector (128, SimCLR; 128-512 in 3D work).
        hidden_dim: projector width (2048, SimCLR).
        num_layers: Linear layers of the projector (2, SimCLR).
        norm: projector norm, ``"layer"`` (works at any batch size, see ``pretext.heads``).
        standardise: a :class:`~monai_ssl_plugin.pretext.views_mixin.RunningStandardiser` before the
            head (on; without it nnU-Net's InstanceNorm embeddings start nearly identical for
            every input, see there).
        view_size, min_overlap, augment: see :class:`~monai_ssl_plugin.pretext.views_mixin.ViewsMixin`.
        gather_distributed: gather negatives from all processes under DDP.

    Needs >= 2 volumes per global batch (negatives come from the other volumes); batch 1 raises a
    one-line error naming the fix. Trains the encoder only (``trains_decoder = False``).

    ``forward`` returns ``{"loss", "nt_xent", "alignment"}``; ``alignment`` is the mean cosine
    between the two views' projections (detached, for monitoring). ``last_embeddings`` holds the
    (2B, P) projections of the step, detached, for the collapse monitor.
    """

    trains_decoder = False

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, projection_dim: int = 128,
                 hidden_dim: int = 2048, num_layers: int = 2, norm: str | None = "layer",
                 view_size: int | Sequence[int] | None = None, min_overlap: float = 0.5, augment: bool = True,
                 gather_distributed: bool = True, standardise: bool = True):
        super().__init__()
        self.backbone = backbone
        self._init_views(view_size, min_overlap, augment)
        self._init_projector(hidden_dim, projection_dim, num_layers, norm, standardise)
        self.criterion = NTXentLoss(temperature, gather_distributed)
        self._head = {"standardise": bool(standardise), "projection_dim": projection_dim, "hidden_dim": hidden_dim,
                      "num_layers": num_layers, "norm": norm}

    def settings(self) -> dict[str, Any]:
        return {"temperature": float(self.criterion.temperature), **self._head, **self.view_settings()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        self._require_batch(image, 2, "NT-Xent takes its negatives from the other volumes of the batch",
                            "Use batch_size >= 2 (or several DDP processes), or a pretext without negatives "
                            "(byol, simsiam, dino, or moco with its queue).")
        z1, z2 = self.project_views(image)[2].chunk(2)
        loss = self.criterion(z1, z2)
        return {"loss": loss, "nt_xent": loss.detach(), "alignment": alignment(z1, z2)}

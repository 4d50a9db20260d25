"""Rotation prediction: classify by how many quarter turns each input was rotated.

Gidaris et al., "Unsupervised Representation Learning by Predicting Image Rotations", ICLR 2018
(4 classes: 0/90/180/270 degrees); the rotation term of Swin UNETR pretraining, Tang et al.,
"Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image Analysis", CVPR 2022
(rotation in the plane of the last two axes). Taleb et al., "3D Self-Supervised Methods for Medical
Imaging", NeurIPS 2020 (3D rotation prediction).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.pretext.heads import ProjectionHead
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.views_mixin import RunningStandardiser
from monai_ssl_plugin.transforms.views import random_rotation90

__all__ = ["RotationPrediction", "standardise_default"]


def standardise_default(backbone: BackboneAdapter, standardise: bool | str = "auto") -> bool:
    """Whether a head on ``backbone.embed`` gets a running standardisation of its input.

    ``"auto"``: on for nnU-Net U-Nets, whose deepest stage ends in InstanceNorm + LeakyReLU, so the
    pooled features are nearly one vector for every input at initialisation (measured here: cosine
    0.9995 between different synthetic volumes for ``nnunet_plain_tiny``, against 0.79-0.91 for
    SwinUNETR and 0.81-0.87 for a ResNet); off elsewhere, where the published linear / MLP heads
    work as they are. See :class:`~monai_ssl_plugin.pretext.views_mixin.RunningStandardiser`.
    """
    if standardise == "auto":
        return str(getattr(backbone, "family", "")).startswith("nnunet.")
    if isinstance(standardise, str):
        raise ValueError(f"standardise must be true, false or 'auto', got {standardise!r}")
    return bool(standardise)


@register_pretext("rotation", paradigm="predictive")
class RotationPrediction(nn.Module):
    """Rotate every sample by k x 90 degrees in one plane (k uniform in 0..3), predict k from the embedding.

    Args:
        backbone: any adapter (uses ``embed``: the pooled deepest encoder features).
        plane: the two tensor dims of the (B, C, *spatial) batch spanning the rotation plane; they must
            have equal size. Default ``(-2, -1)``: the last two axes (Swin UNETR), i.e. the axial
            plane (y, x) for nnU-Net's (z, y, x) order.
        head_hidden: width of the 2-layer classification head (LayerNorm, works at batch size 1).
        standardise: standardise the embedding with running statistics before the head;
            ``"auto"``: for nnU-Net U-Nets only (see :func:`standardise_default`).

    Shapes: ``batch["image"]`` (B, C, *spatial) -> rotated (B, C, *spatial) -> ``embed`` (B, D) ->
    logits (B, 4). ``forward`` returns ``{"loss", "rotation", "accuracy"}``; ``last_outputs`` holds
    the logits and labels of the last step, ``last_embeddings`` the (B, D) head inputs (detached, for
    :class:`~monai_ssl_plugin.engine.handlers.CollapseHandler`).

    Only the encoder learns (``trains_decoder = False``); the head stays in the pretext.
    """

    needs = ("image",)
    trains_decoder = False
    num_classes = 4

    def __init__(self, backbone: BackboneAdapter, plane: tuple[int, int] | list[int] = (-2, -1),
                 head_hidden: int = 256, standardise: bool | str = "auto"):
        super().__init__()
        self.backbone = backbone
        self.plane = (int(plane[0]), int(plane[1]))
        self.standardise, self.head_hidden = standardise_default(backbone, standardise), int(head_hidden)
        self.standardiser = RunningStandardiser(backbone.embed_dim) if self.standardise else nn.Identity()
        self.head = ProjectionHead(backbone.embed_dim, head_hidden, self.num_classes, num_layers=2, norm="layer")
        self.last_embeddings: torch.Tensor | None = None
        self.last_outputs: dict[str, torch.Tensor] = {}

    def settings(self) -> dict[str, Any]:
        return {"classes": self.num_classes, "plane": list(self.plane), "head_hidden": self.head_hidden,
                "standardise": self.standardise}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rotated, labels = random_rotation90(batch["image"], self.plane)
        features = self.standardiser(self.backbone.embed(rotated))
        logits = self.head(features)
        self.last_embeddings = features.detach()  # what the head sees, for the collapse monitor
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(1) == labels).float().mean()
        self.last_outputs = {"logits": logits.detach(), "labels": labels}
        return {"loss": loss, "rotation": loss.detach(), "accuracy": accuracy}

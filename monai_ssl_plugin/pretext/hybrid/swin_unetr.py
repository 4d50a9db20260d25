"""Swin UNETR pretraining: rotation prediction + contrastive coding + in-painting, weights 1/1/1.

Tang et al., "Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image Analysis", CVPR
2022: per sample two sub-volumes (views), each rotated by a random multiple of 90 degrees (plane of
the last two axes) and corrupted by cut-out (up to 30 % of the voxels in blocks up to a quarter side,
noise or pasted from another sample); the Swin transformer encoder (``SwinUNETR.swinViT``) feeds
three heads: a linear rotation classifier (4 classes, cross-entropy), a linear projection to 512-d
for contrastive coding between the two views (NT-Xent, temperature 0.5), and a reconstruction head
that restores the rotated, un-cut volumes (L1); total = rotation + contrastive + reconstruction;
96^3 ROI, AdamW, CT clipped to [-1000, 1000] -> [0, 1]. The published weights cover ``swinViT`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.losses.nt_xent import NTXentLoss
from monai_ssl_plugin.pretext.generative.models_genesis import DECODER_SIDE_STEM, DenseOutput
from monai_ssl_plugin.pretext.heads import ProjectionHead
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.predictive.rotation import standardise_default
from monai_ssl_plugin.pretext.views_mixin import RunningStandardiser
from monai_ssl_plugin.transforms.swin_unetr import swin_unetr_augment

__all__ = ["SwinUNETRPretraining"]

@register_pretext("swin_unetr", paradigm="hybrid")
class SwinUNETRPretraining(nn.Module):
    """Tang et al.'s three-term pretext on two rotated, cut-out views of every sample.

    Args:
        backbone: an adapter; SwinUNETR (``monai_swinunetr``) reproduces the paper, any other adapter
            with ``encode`` works too (CNN U-Nets, ResNet, ViT/UNETR, SegResNet; 2D or 3D). The
            rotation plane's two axes must have equal size.
        weights: loss weights (rotation, contrastive, reconstruction); 1/1/1 in the paper.
        temperature: NT-Xent temperature (0.5).
        projection_dim: contrastive embedding size (512).
        head_layers: Linear layers of the rotation and contrastive heads (1 = the paper's linear heads).
        reconstruction: ``"auto"`` (default): for SwinUNETR / UNETR a pretext-owned light decoder that
            reads the transformer's features only (the ``swinViT`` hidden states), as in the paper:
            only the encoder is pretrained and nothing of the decoder enters ``backbone.network``;
            for other adapters the network's own decoder if it has one (CNN U-Nets, SegResNet),
            else a light decoder (ResNet, ViT). ``"light"`` / ``"network"`` force one (see
            :class:`~monai_ssl_plugin.pretext.generative.models_genesis.DenseOutput`).
        decoder_width: width of the light decoder.
        plane: rotation plane (tensor dims of the batch), the last two axes by default.
        max_drop, max_block: cut-out settings (30 %, a quarter side).
        standardise: standardise the pooled features with running statistics before the two heads;
            ``"auto"``: for nnU-Net U-Nets only, whose pooled features barely differ at
            initialisation (see :func:`~monai_ssl_plugin.pretext.predictive.rotation.standardise_default`);
            SwinUNETR keeps the paper's plain linear heads.

    Shapes: image (B, C, *S) -> views (2B, C, *S) -> encoder features -> pooled (2B, D) ->
    rotation logits (2B, 4), projections (2B, 512); reconstruction (2B, C, *S).
    Returns ``{"loss", "rotation", "contrastive", "reconstruction", "rotation_accuracy"}``;
    ``last_embeddings`` holds the (2B, projection_dim) contrastive projections (detached, for
    :class:`~monai_ssl_plugin.engine.handlers.CollapseHandler`).
    """

    needs = ("image",)

    def __init__(self, backbone: BackboneAdapter, weights: Sequence[float] = (1.0, 1.0, 1.0),
                 temperature: float = 0.5, projection_dim: int = 512, head_layers: int = 1,
                 reconstruction: str = "auto", decoder_width: int = 64, plane: Sequence[int] = (-2, -1),
                 max_drop: float = 0.3, max_block: float = 0.25, standardise: bool | str = "auto"):
        super().__init__()
        self.backbone = backbone
        self.weights = tuple(float(w) for w in weights)
        self.temperature = float(temperature)
        self.plane = (int(plane[0]), int(plane[1]))
        self.max_drop, self.max_block = float(max_drop), float(max_block)
        dim = backbone.embed_dim
        self.standardise = standardise_default(backbone, standardise)
        self.standardiser = RunningStandardiser(dim) if self.standardise else nn.Identity()
        self.rotation_head = ProjectionHead(dim, dim, 4, num_layers=head_layers, norm="layer")
        self.contrastive_head = ProjectionHead(dim, dim, projection_dim, num_layers=head_layers, norm="layer")
        self.projection_dim = int(projection_dim)
        self.head_layers = int(head_layers)
        self.contrastive_loss = NTXentLoss(temperature=self.temperature)
        if reconstruction == "auto":  # the paper's encoder-only head for SwinUNETR / UNETR, else DenseOutput's choice
            reconstruction = "light" if backbone.family in DECODER_SIDE_STEM else "auto"
        self.dense = DenseOutput(backbone, reconstruction, decoder_width)
        self.reconstruction = self.dense.kind
        self.last_outputs: dict[str, torch.Tensor] = {}
        self.last_embeddings: torch.Tensor | None = None

    @property
    def trains_decoder(self) -> bool:
        return self.dense.trains_decoder

    def settings(self) -> dict[str, Any]:
        return {"weights": list(self.weights), "temperature": self.temperature, "projection_dim": self.projection_dim,
                "head_layers": self.head_layers, "reconstruction": self.reconstruction, "reconstruction_loss": "l1",
                "plane": list(self.plane), "max_drop": self.max_drop, "max_block": self.max_block,
                "standardise": self.standardise}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        with torch.no_grad():
            views = swin_unetr_augment(image, plane=self.plane, max_drop=self.max_drop, max_block=self.max_block)
        x = torch.cat([views.view1, views.view2])  # (2B, C, *S): one encoder pass for both views
        target = torch.cat([views.target1, views.target2])
        labels = torch.cat([views.rotation1, views.rotation2])
        features = self.dense.encode(self.backbone, x)
        reconstruction = self.dense.decode(self.backbone, features, x.shape[2:])
        pooled = self.standardiser(features[-1].flatten(2).mean(-1))  # the mean = backbone.embed(x), every adapter
        rot_logits = self.rotation_head(pooled)
        rot_loss = F.cross_entropy(rot_logits, labels)
        z = self.contrastive_head(pooled)
        self.last_embeddings = z.detach()  # (2B, projection_dim), for the collapse monitor
        z1, z2 = z.chunk(2)
        con_loss = self.contrastive_loss(z1, z2)
        rec_loss = F.l1_loss(reconstruction, target)
        w_rot, w_con, w_rec = self.weights
        loss = w_rot * rot_loss + w_con * con_loss + w_rec * rec_loss
        accuracy = (rot_logits.detach().argmax(1) == labels).float().mean()
        self.last_outputs = {"views": x.detach(), "reconstruction": reconstruction.detach(), "rotation": labels}
        return {"loss": loss, "rotation": rot_loss.detach(), "contrastive": con_loss.detach(),
                "reconstruction": rec_loss.detach(), "rotation_accuracy": accuracy}

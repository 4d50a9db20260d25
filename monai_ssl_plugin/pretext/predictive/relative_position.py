"""Relative patch position: where does a neighbour patch sit relative to the centre patch?

Doersch et al., "Unsupervised Visual Representation Learning by Context Prediction", ICCV 2015 (a
3x3 grid of patches with gaps and jitter; a pair network sees the centre patch and one of its 8
neighbours and classifies the neighbour's position); Taleb et al., "3D Self-Supervised Methods for
Medical Imaging", NeurIPS 2020 (3D relative patch location: a 3x3x3 grid, 26 classes).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.pretext.heads import ProjectionHead
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.predictive.rotation import standardise_default
from monai_ssl_plugin.pretext.views_mixin import RunningStandardiser
from monai_ssl_plugin.transforms._random import integers
from monai_ssl_plugin.transforms.views import crop_boxes

__all__ = ["RelativePatchPosition", "neighbour_offsets"]


def neighbour_offsets(dims: int) -> torch.Tensor:
    """(3**dims - 1, dims) int64 grid offsets in {-1, 0, 1}^dims without the centre, in row-major order.

    Class ``c`` of the pretext is the neighbour at ``centre + offsets[c]`` (grid units, tensor-axis
    order): 8 classes in 2D (Doersch et al.'s numbering, top-left first), 26 in 3D.
    """
    grid = [o for o in itertools.product((-1, 0, 1), repeat=dims) if any(o)]
    return torch.tensor(grid, dtype=torch.int64)


def _per_axis(value: int | Sequence[int], dims: int) -> list[int]:
    return [int(value)] * dims if isinstance(value, int) else [int(v) for v in value]


@register_pretext("relative_position", paradigm="predictive")
class RelativePatchPosition(nn.Module):
    """Crop a 3^dims grid of patches (with gaps and jitter), predict the position of one neighbour.

    Per sample, inside ``forward`` and batched: a grid of side ``3 * patch + 2 * gap`` is placed at
    a random position; the centre patch and one random neighbour (class c) are cropped, each moved
    by an independent jitter in ``[-jitter, jitter]`` per axis (Doersch's guard against matching
    edges; the gap keeps patches from touching). Both patches go through the shared encoder
    (``embed``), their embeddings are concatenated (centre first) and a head predicts c
    (cross-entropy).

    Args:
        backbone: any adapter (``embed``); the patch must suit it (ViT / UNETR: ``img_size`` =
            patch; SwinUNETR: multiples of 32).
        patch_size: patch side (int or per axis); default: the largest that fits,
            ``(S - 2 * gap - 2 * jitter) // 3``.
        gap: voxels between neighbouring grid cells (Doersch: half a patch in 2D; default 4).
        jitter: maximal random shift of each patch per axis (Doersch: up to 7 pixels; default 2).
        head_hidden: width of the 2-layer head (LayerNorm: any batch size).
        standardise: standardise each patch embedding with running statistics before the head;
            ``"auto"``: for nnU-Net U-Nets only (see
            :func:`~monai_ssl_plugin.pretext.predictive.rotation.standardise_default`).

    Shapes: image (B, C, *S) -> patches (B, 2, C, *p) -> embed (B*2, D) -> concat (B, 2D) ->
    logits (B, 3**dims - 1). Returns ``{"loss", "position", "accuracy"}``; ``last_embeddings`` holds
    the (2B, D) per-patch head inputs (detached, for the collapse monitor).
    """

    needs = ("image",)
    trains_decoder = False

    def __init__(self, backbone: BackboneAdapter, patch_size: int | Sequence[int] | None = None,
                 gap: int | Sequence[int] = 4, jitter: int | Sequence[int] = 2, head_hidden: int = 512,
                 standardise: bool | str = "auto"):
        super().__init__()
        dims = backbone.spatial_dims
        self.backbone = backbone
        self.dims = dims
        self.patch_size = None if patch_size is None else _per_axis(patch_size, dims)
        self.gap, self.jitter = _per_axis(gap, dims), _per_axis(jitter, dims)
        self.register_buffer("offsets", neighbour_offsets(dims), persistent=False)
        self.num_classes = len(self.offsets)
        self.standardise = standardise_default(backbone, standardise)
        self.standardiser = RunningStandardiser(backbone.embed_dim) if self.standardise else nn.Identity()
        self.head = ProjectionHead(2 * backbone.embed_dim, head_hidden, self.num_classes, num_layers=2, norm="layer")
        self.last_outputs: dict[str, torch.Tensor] = {}
        self.last_embeddings: torch.Tensor | None = None

    def settings(self) -> dict[str, Any]:
        return {"classes": self.num_classes, "patch_size": self.patch_size, "gap": self.gap, "jitter": self.jitter,
                "grid": [3] * self.dims, "standardise": self.standardise}

    def _patch(self, spatial: Sequence[int]) -> list[int]:
        if self.patch_size is not None:
            patch = self.patch_size
        else:
            patch = [(s - 2 * g - 2 * j) // 3 for s, g, j in zip(spatial, self.gap, self.jitter)]
        need = [3 * p + 2 * g + 2 * j for p, g, j in zip(patch, self.gap, self.jitter)]
        if min(patch) < 1 or any(n > s for n, s in zip(need, spatial)):
            raise ValueError(f"a 3^{self.dims} grid of {patch} patches with gap {self.gap} and jitter {self.jitter} "
                             f"needs an input of at least {need}, got {list(spatial)}")
        return patch

    def sample_pairs(self, image: torch.Tensor, jitter: bool = True) -> dict[str, torch.Tensor]:
        """Patch pairs and targets: ``patches`` (B, 2, C, *p) (centre, neighbour), ``label`` (B,),
        ``starts`` (B, 2, D) crop corners in ``image``."""
        spatial = list(image.shape[2:])
        patch = self._patch(spatial)
        batch, dev, dims = image.shape[0], image.device, self.dims
        p = torch.tensor(patch, device=dev)
        step = p + torch.tensor(self.gap, device=dev)  # grid pitch
        jit = torch.tensor(self.jitter, device=dev)
        extent = 3 * p + 2 * torch.tensor(self.gap, device=dev)
        origin = integers(jit, torch.tensor(spatial, device=dev) - extent - jit, (batch, dims), None, dev)
        label = integers(0, self.num_classes - 1, (batch,), None, dev)
        cells = torch.stack([torch.ones_like(origin), 1 + self.offsets.to(dev)[label]], 1)  # (B, 2, D) grid cells
        starts = origin[:, None] + cells * step
        if jitter:
            starts = starts + integers(-jit, jit, (batch, 2, dims), None, dev)
        return {"patches": crop_boxes(image, starts, patch), "label": label, "starts": starts}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pairs = self.sample_pairs(batch["image"])
        patches = pairs["patches"]
        b = patches.shape[0]
        embeddings = self.backbone.embed(patches.reshape(b * 2, *patches.shape[2:])).reshape(b, 2, -1)
        embeddings = self.standardiser(embeddings)
        self.last_embeddings = embeddings.detach().reshape(b * 2, -1)  # per patch, for the collapse monitor
        features = embeddings.reshape(b, -1)  # centre first
        logits = self.head(features)
        loss = F.cross_entropy(logits, pairs["label"])
        accuracy = (logits.detach().argmax(1) == pairs["label"]).float().mean()
        self.last_outputs = {"logits": logits.detach(), "labels": pairs["label"]}
        return {"loss": loss, "position": loss.detach(), "accuracy": accuracy}

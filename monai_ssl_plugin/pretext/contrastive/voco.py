"""VoCo: learn where a random crop lies in the volume by contrasting it with a grid of base crops.

Wu, Zhuang & Chen, "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D
Medical Image Analysis", CVPR 2024. A 4x4 grid of base crops tiles the axial plane (full extent
along the slice axis); for each random crop the target is its overlap ratio with every base crop;
logits are ``relu(cos(crop, base))``; the loss pulls them to the targets and a regulariser pushes
the bases of a volume apart. The reference code's EMA teacher (momentum 0.9) is part of the
method: the recipes note that a port without it never converges. Heads use
``BatchNorm1d(affine=False, track_running_stats=False)`` over the crops of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.losses import VoCoLoss, voco_logits
from monai_ssl_plugin.pretext.ema import update_teacher
from monai_ssl_plugin.pretext.heads import ProjectionHead
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.views_mixin import ViewsMixin, fit_view_size, momentum_copy, standardised
from monai_ssl_plugin.transforms.views import base_crops_grid, random_crop_with_overlap_targets


@register_pretext("voco", paradigm="contrastive")
class VoCo(ViewsMixin, nn.Module):
    """VoCo over any backbone adapter with ``embed``, in 2D and 3D.

    Step, for ``batch["image"]`` (B, C, *patch):

    * base crops ``base_crops_grid`` (B, K, C, *base), K = prod(grid) = 16;
    * ``n_crops`` random crops of the base size inside the tiled region, with targets
      ``random_crop_with_overlap_targets`` (B, M, K) = overlap ratio of crop m with base k;
    * student and EMA teacher embed all B (K + M) crops in one pass each (crops are resized
      to what the backbone accepts when the base size does not fit, e.g. ViT's fixed size), the
      heads project them to (B, K + M, D);
    * ``VoCoLoss``: logits averaged over student-crop/teacher-base and teacher-crop/student-base,
      positive + negative prediction terms + the base regulariser on the student bases.

    Args:
        backbone: adapter with ``embed``.
        grid: base crops per grid axis (4 x 4, VoCo).
        axes: the spatial axes carrying the grid. Default ``(-2, -1)``: the in-plane axes of the
            plugin's nnU-Net axis order (z, y, x) in 3D — full extent along z, as VoCo's x-y grid
            in MONAI's (x, y, z) order (pass ``(0, 1)`` for MONAI-ordered tensors) — and both axes in 2D.
        n_crops: random crops per volume (4).
        momentum: teacher EMA momentum, constant (0.9, VoCo reference code).
        hidden_dim, out_dim, num_layers: head (3 layers of 2048).
        norm: head norm, ``"batch"`` = ``BatchNorm1d(affine=False, track_running_stats=False)`` as
            published; it normalises over the B (K + M) >= 20 crops, so batch size 1 works.
            ``"layer"`` is available too.
        pred_weight, reg_weight: loss weights (1, 1).
        standardise: a :class:`~monai_ssl_plugin.pretext.views_mixin.RunningStandardiser` before the
            head (off: the batch-norm head already standardises over the crops).
        augment: intensity jitter on the crops (off, as in VoCo; flips are never applied, they
            would break the position targets).

    ``forward`` returns ``{"loss", "positive", "negative", "regulariser", "position_error"}``;
    ``position_error`` is the mean |logit - target| (detached), the term the method drives down.
    ``last_embeddings``: the student projections of all crops, (B (K + M), D), detached. Trains the
    encoder only.
    """

    trains_decoder = False

    def __init__(self, backbone: nn.Module, grid: int | Sequence[int] = (4, 4), axes: Sequence[int] = (-2, -1),
                 n_crops: int = 4, momentum: float = 0.9, hidden_dim: int = 2048, out_dim: int = 2048,
                 num_layers: int = 3, norm: str | None = "batch", pred_weight: float = 1.0, reg_weight: float = 1.0,
                 augment: bool = False, standardise: bool = False):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if int(n_crops) < 1:
            raise ValueError(f"n_crops must be >= 1, got {n_crops}")
        self.backbone = backbone
        self._init_views(None, 0.0, augment)
        self.grid = int(grid) if isinstance(grid, int) else tuple(int(g) for g in grid)
        self.axes = tuple(int(a) for a in axes)
        self.n_crops = int(n_crops)
        self.momentum = float(momentum)
        head = ProjectionHead(backbone.embed_dim, hidden_dim, out_dim, num_layers, norm)
        self.head = standardised(head, backbone.embed_dim, standardise)
        self.teacher_backbone = momentum_copy(backbone)
        self.teacher_head = momentum_copy(self.head)
        self.criterion = VoCoLoss(pred_weight, reg_weight)
        self._head = {"standardise": bool(standardise), "hidden_dim": hidden_dim, "out_dim": out_dim,
                      "num_layers": num_layers, "norm": norm}

    def settings(self) -> dict[str, Any]:
        grid = self.grid if isinstance(self.grid, int) else list(self.grid)
        return {"grid": grid, "axes": list(self.axes), "n_crops": self.n_crops, "momentum": self.momentum,
                "pred_weight": self.criterion.pred_weight, "reg_weight": self.criterion.reg_weight,
                "augment": self.augment, **self._head}

    def _project(self, backbone: nn.Module, head: nn.Module, crops: torch.Tensor, size: tuple[int, ...]
                 ) -> torch.Tensor:
        if tuple(crops.shape[2:]) != size:
            mode = "trilinear" if crops.dim() == 5 else "bilinear"
            crops = F.interpolate(crops, size=size, mode=mode, align_corners=False)
        return head(backbone.embed(crops))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        self._check_image(image)
        try:
            bases = base_crops_grid(image, self.grid, self.axes)  # (B, K, C, *base)
            rand = random_crop_with_overlap_targets(image, self.n_crops, None, self.grid, self.axes)
        except ValueError as e:
            raise PluginError(f"VoCo cannot tile the patch {list(image.shape[2:])} with a {self.grid} grid "
                              f"over axes {list(self.axes)}: {e}.",
                              "Use a patch whose grid axes are at least 4x the base crop side, e.g. [32, 128, 128] "
                              "(z, y, x) for 32^3 base crops.") from None
        b, k, m = image.shape[0], bases.shape[1], rand.crops.shape[1]
        crops = torch.cat([bases, rand.crops], dim=1).flatten(0, 1)  # (B (K + M), C, *base)
        crops = self.augment_views(crops) if self.augment else crops
        size = fit_view_size(self.backbone, crops.shape[2:])
        z = self._project(self.backbone, self.head, crops, size).view(b, k + m, -1)
        with torch.no_grad():
            t = self._project(self.teacher_backbone, self.teacher_head, crops, size).view(b, k + m, -1)
        z_bases, z_crops = z[:, :k], z[:, k:]
        targets = rand.targets.to(z.dtype)
        pos, neg, reg = self.criterion.terms(z_crops, z_bases, targets, t[:, k:], t[:, :k])
        loss = self.criterion.pred_weight * (pos + neg) + self.criterion.reg_weight * reg
        self.last_embeddings = z.detach().flatten(0, 1)
        with torch.no_grad():
            logits = 0.5 * (voco_logits(z_crops, t[:, :k]) + voco_logits(t[:, k:], z_bases))
            error = (logits - targets).abs().mean()
        return {"loss": loss, "positive": pos.detach(), "negative": neg.detach(), "regulariser": reg.detach(),
                "position_error": error}

    @torch.no_grad()
    def after_step(self, iteration: int) -> None:
        """Teacher EMA with VoCo's constant momentum (0.9)."""
        update_teacher(self.momentum, [(self.teacher_backbone, self.backbone), (self.teacher_head, self.head)])

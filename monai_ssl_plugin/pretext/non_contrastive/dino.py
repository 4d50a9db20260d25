"""DINO: self-distillation from an EMA teacher that sees the global crops to a student that sees all crops.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021: 2 global
crops (40-100 % of the image) and several local crops (5-40 %), DINO head (3-layer MLP, 256-d
bottleneck, weight-normalised prototype layer, 65536 prototypes), student temperature 0.1,
teacher temperature 0.04 (a linear warm-up is available), centring with momentum 0.9, teacher EMA
0.996 -> 1 on a cosine. 3D variants (DINOv2-3D-Med, 3DINO) use the same scheme on volumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.losses import DINOLoss
from monai_ssl_plugin.pretext.collapse import teacher_entropy
from monai_ssl_plugin.pretext.ema import CosineMomentum
from monai_ssl_plugin.pretext.heads import DINOHead
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.views_mixin import ViewsMixin, momentum_copy, standardised
from monai_ssl_plugin.transforms.views import multi_crop


def _crop_major(views: torch.Tensor) -> torch.Tensor:
    """(B, N, C, *s) -> (N B, C, *s): crop 0 of every volume, then crop 1, ... (DINOLoss's order)."""
    return views.transpose(0, 1).flatten(0, 1)


@register_pretext("dino", paradigm="non_contrastive")
class DINO(CosineMomentum, ViewsMixin, nn.Module):
    """DINO over any backbone adapter with ``embed``, in 2D and 3D.

    Step, for ``batch["image"]`` (B, C, *patch):

    * ``multi_crop``: ``n_global`` global crops (B, G, C, *global_size) and ``n_local`` local crops
      (B, L, C, *local_size), random resized boxes, then light intensity jitter + flips per crop;
    * student: ``head(backbone.embed(crop))`` for all (G + L) B crops -> ((G + L) B, K);
    * teacher (EMA copies of backbone and head): the G B global crops only -> (G B, K), no gradient;
    * ``DINOLoss``: cross-entropy between the centred, sharpened teacher and the student over all
      pairs of different crops; the centre (a buffer of the loss) is updated after the loss.

    Args:
        backbone: adapter with ``embed``.
        out_dim: K prototypes (65536, DINO; thousands suffice on small 3D datasets).
        hidden_dim, bottleneck_dim, num_layers: DINO head MLP (2048, 256, 3).
        head_norm: MLP norm, None as in DINO (per-sample, so batch size 1 works).
        norm_last_layer: freeze the prototype layer's weight-norm magnitude at 1 (DINO default).
        n_global, n_local: crops (2, 8).
        global_size, local_size: crop sizes after resizing; default the patch and half of it, each
            fitted to the backbone (ViT / UNETR: both become the fixed ``img_size``).
        global_scale, local_scale: volume fractions (0.4-1, 0.05-0.4).
        student_temp: 0.1.
        teacher_temp, warmup_teacher_temp, warmup_teacher_temp_steps: the teacher temperature
            goes linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over the first
            ``warmup_teacher_temp_steps`` iterations (the paper: 0.04 -> 0.07 over 30 epochs; the
            reference default and this one: 0.04 constant; lower it, e.g. 0.02, on small datasets).
        center_momentum: 0.9.
        base_momentum: teacher EMA momentum at step 0 (0.996), rising to 1 on a cosine over
            ``total_steps`` (``None``: constant).
        standardise: a :class:`~monai_ssl_plugin.pretext.views_mixin.RunningStandardiser` before the
            head (on; without it nnU-Net's InstanceNorm embeddings start nearly identical for
            every input, see there).
        augment: light intensity jitter + flips on every crop.

    ``forward`` returns ``{"loss", "dino", "teacher_entropy", "teacher_temp"}``;
    ``last_embeddings``: the student's backbone embeddings of the global crops (G B, E), detached;
    ``last_teacher_probs``: the teacher distributions (G B, K), detached (collapse monitor: teacher
    entropy). The centre and the step counter are buffers, the teacher a sub-module: all are in
    ``state_dict``. Trains the encoder only (the student is what ``backbone`` holds and exports; the
    teacher is in the checkpoint's pretext state under ``teacher_backbone.``).
    """

    trains_decoder = False
    step: torch.Tensor

    def __init__(self, backbone: nn.Module, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, head_norm: str | None = None, norm_last_layer: bool = True, n_global: int = 2,
                 n_local: int = 8, global_size: int | Sequence[int] | None = None,
                 local_size: int | Sequence[int] | None = None, global_scale: Sequence[float] = (0.4, 1.0),
                 local_scale: Sequence[float] = (0.05, 0.4), student_temp: float = 0.1, teacher_temp: float = 0.04,
                 warmup_teacher_temp: float = 0.04, warmup_teacher_temp_steps: int = 0, center_momentum: float = 0.9,
                 base_momentum: float = 0.996, total_steps: int | None = None, augment: bool = True,
                 standardise: bool = True):
        super().__init__()
        if int(n_global) < 1 or int(n_global) + int(n_local) < 2:
            raise ValueError(f"DINO needs >= 1 global crop and >= 2 crops in all, got {n_global} + {n_local}")
        self.backbone = backbone
        self._init_views(None, 0.0, augment)
        head = DINOHead(backbone.embed_dim, out_dim, hidden_dim, bottleneck_dim, num_layers, head_norm,
                        norm_last_layer)
        self.head = standardised(head, backbone.embed_dim, standardise)
        self.teacher_backbone = momentum_copy(backbone)
        self.teacher_head = momentum_copy(self.head)
        self.criterion = DINOLoss(out_dim, int(n_global), student_temp, teacher_temp, warmup_teacher_temp,
                                  int(warmup_teacher_temp_steps), center_momentum)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.n_global, self.n_local = int(n_global), int(n_local)
        self.global_size, self.local_size = global_size, local_size
        self.global_scale = tuple(float(s) for s in global_scale)
        self.local_scale = tuple(float(s) for s in local_scale)
        self._init_momentum(base_momentum, total_steps)
        self.last_teacher_probs: torch.Tensor | None = None
        self._head = {"standardise": bool(standardise), "out_dim": out_dim, "hidden_dim": hidden_dim,
                      "bottleneck_dim": bottleneck_dim, "num_layers": num_layers, "head_norm": head_norm,
                      "norm_last_layer": norm_last_layer}

    def settings(self) -> dict[str, Any]:
        c = self.criterion

        def size(s: Any) -> Any:
            return list(s) if isinstance(s, (list, tuple)) else s

        return {"n_global": self.n_global, "n_local": self.n_local, "global_size": size(self.global_size),
                "local_size": size(self.local_size), "global_scale": list(self.global_scale),
                "local_scale": list(self.local_scale), "student_temp": c.student_temp, "teacher_temp": c.teacher_temp,
                "warmup_teacher_temp": c.warmup_teacher_temp,
                "warmup_teacher_temp_steps": c.warmup_teacher_temp_epochs, "center_momentum": c.center_momentum,
                "base_momentum": self.base_momentum, "final_momentum": 1.0, "total_steps": self.total_steps,
                "augment": self.augment, **self._head}

    def crop_sizes(self, spatial: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Global and local crop sizes for a patch of ``spatial``, fitted to the backbone."""
        g = self._crop_size(spatial, self.global_size, default_fraction=1.0)
        loc = self._crop_size(spatial, self.local_size if self.local_size is not None else [s // 2 for s in g])
        return g, loc

    def _student(self, crops: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.embed(crops))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        self._check_image(image)
        g_size, l_size = self.crop_sizes(image.shape[2:])
        views = multi_crop(image, self.n_global, g_size, self.n_local, l_size, self.global_scale, self.local_scale)
        glob = self.augment_views(_crop_major(views.global_views))  # (G B, C, *g)
        loc = self.augment_views(_crop_major(views.local_views)) if self.n_local else None
        if loc is not None and tuple(l_size) == tuple(g_size):  # one pass (e.g. ViT's fixed size)
            h = self.backbone.embed(torch.cat([glob, loc]))
            h_glob = h[: glob.shape[0]]
            student = self.head(h)
        else:
            h_glob = self.backbone.embed(glob)
            student = self.head(h_glob)
            if loc is not None:
                student = torch.cat([student, self._student(loc)])
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone.embed(glob))
        step = float(self.step)
        probs = self.criterion.teacher_probs(teacher, step)  # before the loss moves the centre
        loss = self.criterion(student, teacher, step)
        self.last_embeddings = h_glob.detach()
        self.last_teacher_probs = probs
        return {"loss": loss, "dino": loss.detach(), "teacher_entropy": teacher_entropy(probs),
                "teacher_temp": torch.tensor(self.criterion.teacher_temperature(step))}

    @torch.no_grad()
    def after_step(self, iteration: int) -> None:
        """Teacher EMA (cosine momentum) and the step count that drives the temperature warm-up."""
        self._step_momentum(iteration, [(self.teacher_backbone, self.backbone), (self.teacher_head, self.head)])
        self.step.fill_(int(iteration))

"""MoCo v2: a query encoder trained against keys from a momentum encoder and a queue of old keys.

He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020; Chen, Fan, Girshick & He, "Improved Baselines with Momentum Contrastive
Learning" (MoCo v2), arXiv 2003.04297, 2020: MLP projection head (2048 hidden, 128 out),
temperature 0.2, momentum 0.999, queue of 65536 keys. ``queue_size=0`` gives MoCo v3's in-batch
negatives (Chen, Xie & He, ICCV 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.losses import MoCoLoss
from monai_ssl_plugin.pretext.ema import update_teacher
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.views_mixin import ViewsMixin, alignment, momentum_copy


@register_pretext("moco", paradigm="contrastive")
class MoCo(ViewsMixin, nn.Module):
    """MoCo v2 over any backbone adapter with ``embed``, in 2D and 3D.

    Step: two overlapping, augmented crops (B, C, *view) per volume; queries
    ``q = projector(backbone.embed(view1))`` (B, P); keys ``k = momentum encoder(view2)`` (B, P),
    no gradient; InfoNCE of q against its key and the K queued keys (``MoCoLoss``), then the keys
    are enqueued. With ``symmetric=True`` both view orders are used (as MoCo v3), the loss averaged
    and both key sets enqueued after both terms. After the optimiser step ``after_step`` moves the
    momentum encoder (backbone + projector copies) with the one :func:`ema_update`.

    Args:
        backbone: adapter with ``embed``.
        queue_size: K queued negatives (MoCo v2: 65536). Keep it well below the number of
            training volumes x views seen per epoch, or stale keys of a volume's own earlier crops
            act as negatives. ``0``: MoCo v3, negatives from the other volumes of the batch.
        temperature: 0.2 (MoCo v2).
        momentum: key-encoder EMA momentum, constant (0.999, MoCo v2; recipes 0.99-0.999).
        projection_dim, hidden_dim, num_layers, norm: projector (MoCo v2: 2 layers, 2048, 128;
            ``"layer"`` norm so batch 1 works).
        symmetric: use both view orders.
        standardise: a :class:`~monai_ssl_plugin.pretext.views_mixin.RunningStandardiser` before the
            head (on; without it nnU-Net's InstanceNorm embeddings start nearly identical for
            every input, see there).
        view_size, min_overlap, augment: see :class:`~monai_ssl_plugin.pretext.views_mixin.ViewsMixin`.

    Works at batch size 1 with a queue (the negatives are queued keys); ``queue_size=0`` needs
    >= 2 volumes per global batch. The queue (``criterion.queue.queue``/``ptr``) and the momentum
    encoder are buffers / sub-modules, so they are in ``state_dict`` and a resumed run continues
    with them. Trains the encoder only.

    ``forward`` returns ``{"loss", "info_nce", "alignment"}`` (alignment: mean cos(q, k), detached);
    ``last_embeddings`` holds the (B, P) queries (both orders: (2B, P)), detached.
    """

    trains_decoder = False

    def __init__(self, backbone: nn.Module, queue_size: int = 65536, temperature: float = 0.2,
                 momentum: float = 0.999, projection_dim: int = 128, hidden_dim: int = 2048, num_layers: int = 2,
                 norm: str | None = "layer", symmetric: bool = False, view_size: int | Sequence[int] | None = None,
                 min_overlap: float = 0.5, augment: bool = True, standardise: bool = True):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.backbone = backbone
        self._init_views(view_size, min_overlap, augment)
        self._init_projector(hidden_dim, projection_dim, num_layers, norm, standardise)
        self.key_backbone = momentum_copy(backbone)
        self.key_projector = momentum_copy(self.projector)
        # the pretext enqueues itself, after every term of the step, so a symmetric step never
        # finds its own keys among the negatives
        self.criterion = MoCoLoss(projection_dim, queue_size, temperature, update_queue=False)
        self.momentum = float(momentum)
        self.symmetric = bool(symmetric)
        self._head = {"standardise": bool(standardise), "projection_dim": projection_dim, "hidden_dim": hidden_dim,
                      "num_layers": num_layers, "norm": norm}

    def settings(self) -> dict[str, Any]:
        return {"queue_size": self.criterion.queue.size if self.criterion.queue is not None else 0,
                "temperature": self.criterion.temperature, "momentum": self.momentum, "symmetric": self.symmetric,
                **self._head, **self.view_settings()}

    @torch.no_grad()
    def _keys(self, view: torch.Tensor) -> torch.Tensor:
        return self.key_projector(self.key_backbone.embed(view))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        if self.criterion.queue is None:
            self._require_batch(image, 2, "without a queue (queue_size=0) the negatives are the other volumes",
                                "Use batch_size >= 2, or keep a queue (queue_size > 0) for batch 1.")
        v1, v2 = self.two_views(image)
        if self.symmetric:
            h1, h2 = self.embed_pair(self.backbone, v1, v2)
            q = self.projector(torch.cat([h1, h2]))
            k = self._keys(torch.cat([v2, v1]))  # key of view 2 for query 1, and vice versa
            q1, q2 = q.chunk(2)
            k2, k1 = k.chunk(2)
            loss = 0.5 * (self.criterion(q1, k2) + self.criterion(q2, k1))
            queries, keys = q, torch.cat([k2, k1])
        else:
            queries = self.projector(self.backbone.embed(v1))
            keys = self._keys(v2)
            loss = self.criterion(queries, keys)
        if self.training and self.criterion.queue is not None:
            self.criterion.queue.enqueue(keys)
        self.last_embeddings = queries.detach()
        return {"loss": loss, "info_nce": loss.detach(), "alignment": alignment(queries, keys)}

    @torch.no_grad()
    def after_step(self, iteration: int) -> None:
        """Momentum update of the key encoder (constant momentum, as in MoCo v2)."""
        update_teacher(self.momentum, [(self.key_backbone, self.backbone), (self.key_projector, self.projector)])

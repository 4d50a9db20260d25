"""NT-Xent, the SimCLR contrastive loss (Chen et al., ICML 2020), with negatives from all processes."""

from __future__ import annotations

import torch
from monai.losses import ContrastiveLoss

from monai_ssl_plugin.distributed import gather_with_grad


class NTXentLoss(ContrastiveLoss):
    """Normalised temperature-scaled cross-entropy over two views, negatives gathered across processes.

    For the 2N embeddings of two views, anchor i with positive j(i) (its other view):
    ``l_i = -log( exp(cos(z_i, z_j(i))/t) / sum_{k != i} exp(cos(z_i, z_k)/t) )``, averaged over
    all 2N anchors. This is :class:`monai.losses.ContrastiveLoss`, reused as is; MONAI's has no
    cross-process gather, so under DDP each process would only contrast its own 1-8 volumes.
    Here both views are first gathered with :func:`gather_with_grad`, then MONAI's loss runs on
    the global batch: the value is identical on every process and, because the gather's backward
    sums over processes, DDP's averaged gradient equals the single-process gradient on the
    global batch. Cost is a (2NW)^2 similarity matrix per process, negligible at 3D batch sizes.

    Args:
        temperature: softmax temperature; 0.5 as in Swin UNETR pretraining and nnssl (SimCLR
            used 0.1 with much larger batches).
        gather_distributed: gather negatives from all processes when distributed.

    Shapes: ``input`` and ``target`` (B, F), the two views' projections, row i of each from the
    same volume. Returns a scalar.
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True) -> None:
        super().__init__(temperature=temperature)
        self.gather_distributed = gather_distributed

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.gather_distributed:
            input, target = gather_with_grad(input), gather_with_grad(target)
        return super().forward(input, target)

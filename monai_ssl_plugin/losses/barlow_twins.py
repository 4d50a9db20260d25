"""Barlow Twins (Zbontar et al., ICML 2021): MONAI's loss with an exact optimum and a DDP-correct gather."""

from __future__ import annotations

import torch
from monai.losses import BarlowTwinsLoss as _MonaiBarlowTwinsLoss

from monai_ssl_plugin.distributed import gather_with_grad


class BarlowTwinsLoss(_MonaiBarlowTwinsLoss):
    """Drive the cross-correlation of the two views' standardised embeddings to the identity.

    ``C = Z_a^T Z_b / N`` with each column standardised over the (global) batch;
    ``L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``.

    What differs from :class:`monai.losses.BarlowTwinsLoss` (whose ``lambd`` and docs this reuses):

    * Normalisation. MONAI divides by the *unbiased* std but averages the product over N, so
      ``C_ii <= (N-1)/N`` and the loss cannot reach 0 (floor ``D/N^2``: D/4 at the usual 3D batch
      of 2). Here the std is the biased one, as in the reference code's
      ``BatchNorm1d(affine=False)``, so perfectly correlated, decorrelated features give exactly 0.
    * DDP. Both views are gathered with :func:`gather_with_grad`, so the standardisation and C use
      the global batch (what SyncBN + all_reduce(C) do in the reference code) and the loss is
      identical on every process; the gather's summing backward keeps DDP's averaged gradient
      exact. (An ``all_reduce`` of C without autograd gives gradients 1/world_size too small:
      lightly issue #1977.)

    The reference code's optional loss scaling (``--scale-loss``) is left to the caller.

    Args:
        lambd: weight of the off-diagonal (redundancy) term; 5e-3 as in the paper.
        eps: added to the variance before the square root (BatchNorm's default).
        gather_distributed: gather both views from all processes when distributed.

    Shapes: ``input``, ``target`` (B, D); the global batch must hold at least 2 rows. Returns a
    scalar.
    """

    def __init__(self, lambd: float = 5e-3, eps: float = 1e-5, gather_distributed: bool = True) -> None:
        super().__init__(lambd=lambd)
        self.eps = eps
        self.gather_distributed = gather_distributed

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.ndim != 2 or input.shape != target.shape:
            raise ValueError(f"input and target must be (B, D) alike, got {tuple(input.shape)}, {tuple(target.shape)}")
        if self.gather_distributed:
            input, target = gather_with_grad(input), gather_with_grad(target)
        n = input.shape[0]
        if n < 2:
            raise ValueError(f"Barlow Twins needs at least 2 embeddings in the (global) batch, got {n}")
        c = self._standardise(input).t() @ self._standardise(target) / n
        on_diag = (1.0 - torch.diagonal(c)).pow(2).sum()
        off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on_diag + self.lambd * off_diag

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + self.eps)

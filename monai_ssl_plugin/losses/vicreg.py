"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun, ICLR 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai_ssl_plugin.distributed import gather_with_grad


def vicreg_terms(
    z_a: torch.Tensor, z_b: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4, gather_distributed: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three unweighted VICReg terms ``(invariance, variance, covariance)``.

    * invariance: ``mean((z_a - z_b)^2)`` over batch and dimensions (the reference code's
      ``F.mse_loss``; the paper writes a sum over dimensions, the weights were tuned on the mean);
    * variance: ``mean_j relu(gamma - sqrt(Var(z_.j) + eps))``, averaged over both branches;
      constant embeddings give ``gamma - sqrt(eps)`` (0.99 with the defaults);
    * covariance: ``sum_{i != j} Cov(z)_ij^2 / D``, summed over both branches.

    Variance and covariance use the global batch (gathered over processes, as in the reference
    code); the invariance term stays local. Var and Cov are unbiased (divide by N - 1).

    Shapes: ``z_a``, ``z_b`` (B, D); the global batch must hold at least 2 rows.
    """
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must both be (B, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    invariance = F.mse_loss(z_a, z_b)
    if gather_distributed:
        z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
    n, d = z_a.shape
    if n < 2:
        raise ValueError(f"VICReg variance/covariance need at least 2 embeddings in the (global) batch, got {n}")
    variance = covariance = z_a.new_zeros(())
    for z in (z_a, z_b):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + eps)
        variance = variance + F.relu(gamma - std).mean() / 2
        cov = z.t() @ z / (n - 1)
        covariance = covariance + (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d
    return invariance, variance, covariance


class VICRegLoss(_Loss):
    """``sim_weight * invariance + var_weight * variance + cov_weight * covariance`` (see :func:`vicreg_terms`).

    Args:
        sim_weight: invariance weight (25, paper).
        var_weight: variance weight (25, paper).
        cov_weight: covariance weight (1, paper).
        gamma: target std of each dimension (1, paper).
        eps: added to the variance inside the square root (1e-4, paper).
        gather_distributed: compute variance and covariance on the batch gathered from all processes.

    Shapes: ``input``, ``target`` (B, D), the two views' expander outputs. Returns a scalar.
    """

    def __init__(
        self,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.sim_weight, self.var_weight, self.cov_weight = sim_weight, var_weight, cov_weight
        self.gamma, self.eps = gamma, eps
        self.gather_distributed = gather_distributed

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        inv, var, cov = vicreg_terms(input, target, self.gamma, self.eps, self.gather_distributed)
        return self.sim_weight * inv + self.var_weight * var + self.cov_weight * cov

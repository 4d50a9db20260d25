"""MLP heads for joint-embedding SSL that work at the batch sizes of 3D training (1-8).

The 2D recipes put ``BatchNorm1d`` in their projectors; with running statistics it raises at
batch size 1 in training mode and is noisy at 2, and it couples the samples of a batch. The
default here is therefore ``LayerNorm`` (per sample). ``norm="batch"`` gives
``BatchNorm1d(affine=False, track_running_stats=False)`` as in VoCo's heads: batch statistics in
train and eval alike, nothing to go stale, but it still needs more than one row, e.g. the crops
of a volume stacked along the batch. Heads act on the last dimension, so (B, D) and (B, N, D)
token inputs both work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DINOHead", "PredictionHead", "ProjectionHead"]


class _RowBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d without affine or running stats, over all leading dims of a (..., D) input."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] < 2:
            raise ValueError(
                "norm='batch' normalises over the batch and needs at least 2 rows; use norm='layer' at batch size 1"
            )
        return super().forward(flat).reshape(x.shape)


def _norm(kind: str | None, dim: int) -> nn.Module:
    if kind in (None, "none"):
        return nn.Identity()
    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "batch":
        return _RowBatchNorm(dim)
    raise ValueError(f"norm must be 'layer', 'batch' or None, got {kind!r}")


def _activation(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be 'relu' or 'gelu', got {kind!r}")


def _mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, norm: str | None, activation: str
) -> nn.Sequential:
    """``num_layers`` Linear layers; norm + activation after every one but the last."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim), _norm(norm, hidden_dim), _activation(activation)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """MLP projector / expander: ``Linear -> norm -> act`` repeated, then ``Linear``.

    Typical settings: SimCLR 2 layers to 128-512 d (Swin UNETR: 512); BYOL 2 layers, hidden
    4096, out 256; Barlow Twins and VICReg 3 layers of 8192; VoCo 3 layers of 2048 with
    ``norm="batch"``.

    Args:
        in_dim: backbone feature dimension.
        hidden_dim: width of the hidden layers.
        out_dim: embedding dimension.
        num_layers: number of Linear layers (1 = a single linear map).
        norm: ``"layer"`` (default, works at batch size 1), ``"batch"`` (VoCo-style, >= 2 rows)
            or None.
        activation: ``"relu"`` or ``"gelu"``.

    Shapes: (..., in_dim) -> (..., out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        norm: str | None = "layer",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, hidden_dim, out_dim, num_layers, norm, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class PredictionHead(ProjectionHead):
    """BYOL / SimSiam predictor: 2-layer MLP mapping the projection back to its own dimension.

    BYOL: 256 -> 4096 -> 256; SimSiam uses a bottleneck (2048 -> 512 -> 2048). Same norm choices
    as :class:`ProjectionHead`. Shapes: (..., in_dim) -> (..., out_dim or in_dim).
    """

    def __init__(
        self,
        in_dim: int = 256,
        hidden_dim: int = 4096,
        out_dim: int | None = None,
        norm: str | None = "layer",
        activation: str = "relu",
    ) -> None:
        super().__init__(in_dim, hidden_dim, in_dim if out_dim is None else out_dim, 2, norm, activation)


class DINOHead(nn.Module):
    """DINO head (Caron et al. 2021): MLP to a bottleneck, L2-normalise, weight-normalised Linear to K.

    The last layer is ``weight_norm(Linear(bottleneck_dim, out_dim, bias=False))`` with the
    magnitude g set to 1; with ``norm_last_layer`` g stays frozen, so every output is a cosine
    between the bottleneck feature and a prototype (the reference code's default, more stable).
    The MLP has no norm by default, as in DINO, so it runs at batch size 1.

    Args:
        in_dim: backbone feature dimension.
        out_dim: K prototypes (65536 in DINO; far fewer suit small 3D datasets).
        hidden_dim: MLP width (2048).
        bottleneck_dim: dimension before the prototype layer (256).
        num_layers: MLP Linear layers before the bottleneck output (3).
        norm: MLP norm, None (DINO default), ``"layer"`` or ``"batch"``.
        norm_last_layer: freeze g = 1 in the last layer.

    Shapes: (..., in_dim) -> (..., out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm: str | None = None,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, num_layers, norm, "gelu")
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        magnitude.data.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))

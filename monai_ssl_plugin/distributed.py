"""Process-group helpers: a differentiable all-gather for the SSL losses, rank queries, and the module
inside a DDP wrapper.

Every helper degrades to the single-process answer when ``torch.distributed`` is unavailable or
not initialised, so losses call them unconditionally.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["gather_with_grad", "is_distributed", "is_main_process", "rank", "unwrap", "world_size"]


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Rank of this process in the default group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """True on rank 0, and always when not distributed."""
    return rank() == 0


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper and a ``torch.compile`` wrapper
    (``module`` itself when unwrapped): the wrappers prefix every parameter name (``module.``,
    ``_orig_mod.``), while EMA teachers, checkpoints and monitors need the network's own names."""
    if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        module = module.module
    return getattr(module, "_orig_mod", module)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over processes, then keeps this rank's rows.

    The sum is what makes DDP exact: each process's loss may depend on every shard (negatives,
    batch statistics), so the gradient of shard ``k`` is the sum over all processes' losses. A
    backward that only keeps the local slice drops the cross-process terms (lightly issue #1528);
    a plain ``dist.all_reduce``/``all_gather`` has no backward at all (lightly issue #1977: a
    1/world_size gradient error in Barlow Twins).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.batch, ctx.rank = x.shape[0], dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all processes along dim 0, keeping the autograd path to the local shard.

    Args:
        x: (B, ...) local tensor; B and the trailing shape must be equal on every process.

    Returns:
        (world_size * B, ...) tensor ordered by rank; ``x`` itself when not distributed.

    Gradient convention: the local shard receives the *sum* over processes of the gradients of
    their losses. When every process computes the same global loss (as ``NTXentLoss`` and
    ``BarlowTwinsLoss`` here do), DDP's gradient averaging then reproduces exactly the
    single-process gradient of that loss on the global batch.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)

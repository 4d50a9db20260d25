"""InfoNCE with a queue of negatives (MoCo, He et al. CVPR 2020; MoCo v2, Chen et al. 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_ssl_plugin.distributed import gather_with_grad, rank


class MoCoQueue(nn.Module):
    """FIFO dictionary of L2-normalised keys from the momentum encoder, shared by all processes.

    ``queue`` (K, D) and ``ptr`` are buffers, so the queue is saved in ``state_dict`` and a
    resumed run continues with the same negatives. Keys are gathered from all processes before
    they are enqueued, so every process holds the same queue (as in MoCo). Batches need not
    divide K: writes wrap around the end.

    Args:
        dim: key dimension D.
        size: number of keys K (MoCo v2: 65536). Keep K well below the number of training
            volumes x views per epoch, otherwise stale copies of the positive's own volume sit
            in the queue as negatives.
    """

    queue: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, dim: int, size: int = 65536) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        # random unit vectors until real keys arrive, as in MoCo
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queue.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write (B, D) keys (gathered over processes first), overwriting the oldest entries."""
        keys = F.normalize(gather_with_grad(keys.detach()), dim=1)
        if keys.shape[0] > self.size:  # only the newest K fit
            keys = keys[-self.size :]
        idx = (self.ptr + torch.arange(keys.shape[0], device=self.ptr.device)) % self.size
        self.queue[idx] = keys.to(device=self.queue.device, dtype=self.queue.dtype)
        self.ptr.copy_((self.ptr + keys.shape[0]) % self.size)


def info_nce(
    query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.2
) -> torch.Tensor:
    """InfoNCE: cross-entropy that picks the positive key among the negatives.

    ``-log( exp(q.k+/t) / (exp(q.k+/t) + sum_n exp(q.n/t)) )``, averaged over the batch, with
    q, k+ and n L2-normalised. The key gets no gradient (it comes from the momentum encoder).

    Shapes: ``query``, ``key`` (B, D); ``negatives`` (K, D). Returns a scalar.
    """
    q = F.normalize(query, dim=1)
    k = F.normalize(key.detach(), dim=1)
    n = F.normalize(negatives.detach(), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ n.t()], dim=1) / temperature
    # the positive is column 0 for every row
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MoCoLoss(_Loss):
    """MoCo loss: InfoNCE against a queue (v2) or against the other keys of the global batch (v3).

    Args:
        dim: embedding dimension D.
        queue_size: K negatives kept in a :class:`MoCoQueue` (MoCo v2: 65536). ``0`` switches to
            MoCo v3 (Chen, Xie & He, ICCV 2021): no queue, the negatives of query i are the keys
            of all other volumes gathered across processes, and the loss is scaled by 2t as in v3.
        temperature: 0.2 (MoCo v2); MoCo v3 uses 0.2 for ViT, 1.0 for ResNet.
        update_queue: enqueue ``key`` after computing the loss, in training mode only (MoCo's
            order: the current keys never serve as their own negatives).

    Shapes: ``query`` (B, D) from the online encoder, ``key`` (B, D) from the momentum encoder
    for another view of the same volumes. For the symmetric loss call it twice with the views
    swapped and sum. Returns a scalar.
    """

    def __init__(
        self, dim: int, queue_size: int = 65536, temperature: float = 0.2, update_queue: bool = True
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.update_queue = update_queue
        self.queue = MoCoQueue(dim, queue_size) if queue_size > 0 else None

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        if query.shape != key.shape or query.ndim != 2:
            raise ValueError(f"query and key must both be (B, D), got {tuple(query.shape)} and {tuple(key.shape)}")
        if self.queue is None:
            return self._in_batch(query, key)
        loss = info_nce(query, key, self.queue.queue, self.temperature)
        if self.update_queue and self.training:
            self.queue.enqueue(key)
        return loss

    def _in_batch(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        q = F.normalize(query, dim=1)
        k = F.normalize(gather_with_grad(key.detach()), dim=1)
        logits = q @ k.t() / self.temperature
        # positives sit at this process's offset in the gathered keys
        labels = torch.arange(q.shape[0], device=q.device) + rank() * q.shape[0]
        return F.cross_entropy(logits, labels) * (2 * self.temperature)

"""Multi-process (DDP) pieces the bundles' ``configs/multi_gpu_train.yaml`` wire in.

``torchrun --nproc_per_node=N -m monai.bundle run --config_file "['configs/base.yaml','configs/train.yaml','configs/multi_gpu_train.yaml']"``

- :func:`setup`: joins the process group torchrun describes (``gloo`` on CPU, ``nccl`` on GPU) and
  returns this rank's device.
- :func:`sync_batchnorm`: BatchNorm -> SyncBatchNorm (in place, same parameter objects) when the
  network has BatchNorm and more than one process runs; instance norm (nnU-Net) is left alone.
- :func:`wrap`: ``DistributedDataParallel`` around the pretext, still exposing ``after_step`` (EMA
  teachers, queues) and ``settings`` to the trainer.
- :class:`RankShardedDataset`: the rank's share of an index-pure dataset. Iteration ``t``'s global
  batch is samples ``[t*B*W, (t+1)*B*W)`` of the underlying dataset, rank ``r`` reads block ``r``;
  so N processes with per-rank batch B see exactly the batch one process with batch ``N*B`` sees,
  and ``--resume`` continues at the right sample on every rank (it is a ``ResumableDataset``).
- :func:`teardown`: the overlay's ``finalize``: every rank waits for the others, then the process
  group is destroyed, so no rank exits while another is still communicating or writing.
- :func:`rank_handlers`: drops the file-writing log handlers (TensorBoard, timing, progress) on
  ranks > 0; checkpoints are written by rank 0 only (the checkpoint handler checks the rank) but
  every rank keeps the handler so that ``--resume`` restores every rank.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from monai_ssl_plugin.distributed import is_distributed, is_main_process, rank, world_size
from monai_ssl_plugin.engine.handlers.checkpoint import ResumableDataset

logger = logging.getLogger(__name__)

__all__ = ["RankShardedDataset", "SSLDistributedDataParallel", "is_main_process", "rank", "rank_handlers", "setup",
           "sync_batchnorm", "teardown", "world_size", "wrap"]

# handler classes that write logs/files and run on rank 0 only
LOG_HANDLERS = ("TensorBoardStatsHandler", "DataWaitHandler", "ProgressHandler", "StatsHandler")


def setup(backend: str = "auto", device: str | None = None) -> torch.device:
    """Join the process group (env:// from torchrun) once; return this rank's device.

    ``backend="auto"``: ``nccl`` when CUDA is available, else ``gloo``. Without torchrun's
    environment (a single plain process) nothing is initialised and the device is returned as is.
    """
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized() and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend=backend)
        logger.info("Process group: rank %d of %d (%s).", dist.get_rank(), dist.get_world_size(), backend)
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(device or "cpu")


def teardown() -> None:
    """Leave the process group together: a barrier, then ``destroy_process_group`` (no-op without one).

    Without the barrier rank 1 reaches ``finalize`` while rank 0 still writes ``final.pt`` and
    tears down its gloo connections under a peer that is still using them; PyTorch asks every
    process to destroy its groups explicitly before exit (torch.distributed "Shutdown").
    """
    if not dist.is_initialized():
        return
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


def sync_batchnorm(module: Any, device: torch.device | str | None = None) -> Any:
    """``module`` with its BatchNorm layers synced across processes (in place; no-op without BN or DDP).

    PyTorch's SyncBatchNorm runs on GPUs only: on CPU (gloo) BatchNorm statistics stay per process
    and a warning says so (nnU-Net's networks use instance norm, which needs no syncing).
    """
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    if not has_bn or not is_distributed():
        return module
    on_gpu = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if not on_gpu:
        logger.warning("BatchNorm statistics are per process on CPU (PyTorch's SyncBatchNorm needs GPUs).")
        return module
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    logger.info("BatchNorm -> SyncBatchNorm across %d processes.", world_size())
    return converted


class SSLDistributedDataParallel(DistributedDataParallel):
    """DDP that still exposes the pretext hooks the trainer and handlers call."""

    def after_step(self, iteration: int) -> None:
        if hasattr(self.module, "after_step"):
            self.module.after_step(iteration)

    def settings(self) -> dict[str, Any]:
        return self.module.settings() if hasattr(self.module, "settings") else {}


def wrap(pretext: nn.Module, device: torch.device | str | None = None, find_unused_parameters: bool = True) -> nn.Module:
    """The pretext in :class:`SSLDistributedDataParallel` (the pretext itself when not distributed).

    ``find_unused_parameters`` defaults to True: pretexts with several heads or deep-supervision
    outputs do not use every parameter every step.
    """
    if not is_distributed():
        return pretext
    device = torch.device(device) if device is not None else torch.device("cpu")
    ids = [device.index] if device.type == "cuda" else None
    return SSLDistributedDataParallel(pretext, device_ids=ids, find_unused_parameters=find_unused_parameters)


class RankShardedDataset(ResumableDataset):
    """This rank's share of an index-pure dataset, block-contiguous per global batch (see module docstring).

    Args:
        dataset: e.g. ``RandomPatchDataset`` with ``num_samples = batch_size * world_size * iterations``.
        batch_size: the per-rank batch size of the loader.
    """

    def __init__(self, dataset: Any, batch_size: int, rank_: int | None = None, world_size_: int | None = None):
        super().__init__(dataset)
        self.batch_size = int(batch_size)
        self.rank = rank() if rank_ is None else int(rank_)
        self.world = world_size() if world_size_ is None else int(world_size_)

    def _global(self, local: int) -> int:
        b = self.batch_size
        return (local // b) * b * self.world + self.rank * b + local % b

    def __len__(self) -> int:
        per_rank = (len(self.dataset) // (self.batch_size * self.world)) * self.batch_size
        return max(0, per_rank - self.start)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.dataset[self._global(index + self.start)]


def rank_handlers(handlers: Sequence[Any]) -> list[Any]:
    """``handlers`` on rank 0; without the log-writing ones on other ranks."""
    if is_main_process():
        return list(handlers)
    kept = []
    for h in handlers:
        if type(h).__name__ not in LOG_HANDLERS:
            kept.append(h)
            continue
        writer = getattr(h, "_writer", None)  # MONAI's TensorBoard handlers open their event file at construction
        if writer is not None and hasattr(writer, "file_writer"):
            name = getattr(getattr(writer.file_writer, "event_writer", None), "_file_name", None)
            writer.close()
            if name and os.path.isfile(name):
                os.unlink(name)  # only the file header was written: no events on this rank
    return kept

"""What runs around the optimiser step under DDP, 2 processes with gloo on CPU.

A tiny pretext with the pieces of BYOL / MoCo / DINO that live outside the gradient: an EMA teacher
moved in ``after_step`` (called through :class:`SSLDistributedDataParallel`, which must hand the
unwrapped module to the one ``ema_update``), a MoCo queue that enqueues the keys of *all* ranks, and
a DINO centre averaged over *all* ranks. Three training steps with per-rank batch 2; then, on both
ranks, the teacher, the queue (and its pointer) and the centre must equal each other and the result
of one process that trains on the same global batch of 4 (float64, exact up to summation order).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from monai_ssl_plugin.engine.ddp import sync_batchnorm, wrap
from monai_ssl_plugin.losses import DINOLoss, MoCoLoss
from monai_ssl_plugin.pretext.ema import ema_update

WORLD, BATCH, STEPS, DIM, K = 2, 2, 3, 6, 8


class TeacherPretext(nn.Module):
    """student = Linear, teacher = its EMA copy; DINO loss (2 "crops") + MoCo InfoNCE against a queue."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)  # the same initial weights and queue in every process
        self.student = nn.Linear(DIM, K)
        self.teacher = nn.Linear(DIM, K)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.dino = DINOLoss(K, n_global_crops=2)
        self.moco = MoCoLoss(K, queue_size=10, update_queue=True)  # 10: the 4 keys a step wrap around

    def forward(self, batch):
        crops = batch["image"]  # (B, 2, DIM): two fixed "crops" per volume
        crop_major = crops.transpose(0, 1).flatten(0, 1)  # (2B, DIM): crop 0 of every volume, then crop 1
        s = self.student(crop_major)
        with torch.no_grad():
            t = self.teacher(crop_major)
        q, k = s[: crops.shape[0]], t[crops.shape[0]:]
        return {"loss": self.dino(s, t) + self.moco(q, k)}

    @torch.no_grad()
    def after_step(self, iteration: int) -> None:
        ema_update(self.teacher, self.student, 0.9)


def _global_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(BATCH * WORLD, 2, DIM, generator=g, dtype=torch.float64) for _ in range(STEPS)]


def _train(model: nn.Module, batches: list[torch.Tensor]) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for i, x in enumerate(batches, start=1):  # what SSLTrainer._iteration does
        loss = model({"image": x})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.after_step(i)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _worker(r: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=WORLD,
                            timeout=timedelta(seconds=120))
    try:
        inner = TeacherPretext().double()
        model = wrap(inner, "cpu")
        assert type(model).__name__ == "SSLDistributedDataParallel"
        shards = [x[r * BATCH:(r + 1) * BATCH] for x in _global_batches()]
        _train(model, shards)
        torch.save(_state(inner), Path(out_dir) / f"rank{r}.pt")
        # heads with BatchNorm (VoCo's) are converted with the backbone, in place, keeping the parameter
        # objects the optimiser holds (the conversion needs no GPU; SyncBatchNorm's forward does, so on
        # CPU the overlay leaves BatchNorm per process)
        head = nn.Sequential(nn.Linear(DIM, K), nn.BatchNorm1d(K))
        holder = nn.Module()
        holder.head = head
        params = [id(p) for p in holder.parameters()]
        assert sync_batchnorm(holder, "cpu") is holder and isinstance(holder.head[1], nn.BatchNorm1d)
        converted = sync_batchnorm(holder, "cuda")
        assert converted is holder and isinstance(holder.head[1], nn.SyncBatchNorm)
        assert [id(p) for p in holder.parameters()] == params
    finally:
        dist.destroy_process_group()


def test_ema_teacher_moco_queue_and_dino_centre_agree_across_ranks_and_with_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    torch.set_num_threads(1)
    single = TeacherPretext().double()
    start = _state(single)
    _train(single, _global_batches())
    expected = _state(single)

    assert int(expected["moco.queue.ptr"]) == (STEPS * BATCH * WORLD) % 10  # every rank's keys were enqueued
    for key in ("teacher.weight", "teacher.bias", "dino.center", "moco.queue.queue"):
        assert not torch.equal(expected[key], start[key]), f"{key} never moved: the test would prove nothing"
    for r, got in enumerate(ranks):
        assert got.keys() == expected.keys()
        assert int(got["moco.queue.ptr"]) == int(expected["moco.queue.ptr"]), r
        for key in ("teacher.weight", "teacher.bias", "student.weight", "dino.center", "moco.queue.queue"):
            torch.testing.assert_close(got[key], expected[key], rtol=1e-10, atol=1e-12,
                                       msg=lambda m, k=key, rr=r: f"rank {rr} {k}: {m}")
    for key in ("dino.center", "moco.queue.queue", "teacher.weight"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key

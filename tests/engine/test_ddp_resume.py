"""DDP resume and rank-0-only writing, 2 processes with gloo on CPU.

Each rank draws its own random noise every step from its own generator (seeded ``seed + rank`` as
``multi_gpu_train.yaml`` does), so a resume is exact only if every rank gets back *its own* RNG
state. Run A trains 6 iterations straight; run B trains 3, stops, and resumes to 6 from
``latest.pt`` (written by rank 0, holding every rank's RNG state). Every rank's loss at iterations
4-6 and the final weights must equal run A's bit for bit. Run C gives each rank its own output
folder with the bundles' file-writing handlers (after ``rank_handlers``): rank 1's stays empty.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Events
from monai.handlers import TensorBoardStatsHandler
from torch import nn

from monai_ssl_plugin.checkpoint import safe_load
from monai_ssl_plugin.data.dataset import RandomPatchDataset, make_patch_loader
from monai_ssl_plugin.data.sources import ArraySource
from monai_ssl_plugin.engine import SSLTrainer
from monai_ssl_plugin.engine.ddp import RankShardedDataset, rank_handlers, wrap
from monai_ssl_plugin.engine.handlers import DataWaitHandler, ProgressHandler, SSLCheckpointHandler

WORLD, BATCH, EPOCH, PATCH = 2, 2, 3, (8, 8, 8)


class _Network(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)


class NoisyPretext(nn.Module):
    """Denoising with fresh torch-RNG noise every step: the loss depends on this rank's generator."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Module()
        self.backbone.network = _Network()
        self.head = nn.Conv3d(2, 1, 1)

    def forward(self, batch):
        x = batch["image"]
        noisy = x + 0.3 * torch.randn_like(x)
        return {"loss": ((self.head(self.backbone.network.conv(noisy)) - x) ** 2).mean()}


def _run(out: Path, max_epochs: int, resume: bool, r: int, files: bool = False) -> tuple[list[float], dict]:
    pretext = NoisyPretext()  # the same initial weights on every rank
    torch.manual_seed(100 + r)  # then per-rank streams, as the overlay's initialize does
    model = wrap(pretext, "cpu")
    rng = np.random.default_rng(0)
    source = ArraySource([rng.standard_normal((1, 12, 12, 12)).astype(np.float32) for _ in range(4)])
    patches = RandomPatchDataset(source, PATCH, num_samples=BATCH * WORLD * EPOCH * 2, seed=1)
    loader = make_patch_loader(source, PATCH, BATCH, len(patches), dataset=RankShardedDataset(patches, BATCH))
    opt = torch.optim.SGD(pretext.parameters(), lr=0.1, momentum=0.9)
    handlers = [SSLCheckpointHandler(out, model, opt, None, lambda steps: {"steps": steps}, 1, resume=resume)]
    if files:  # the bundles' file-writing handlers, through rank_handlers as multi_gpu_train.yaml does
        handlers = rank_handlers([DataWaitHandler(out), ProgressHandler(quiet=True),
                                  TensorBoardStatsHandler(log_dir=str(out / "tensorboard"), output_transform=lambda o: o,
                                                          epoch_log=False), *handlers])
    trainer = SSLTrainer("cpu", max_epochs, loader, model, opt, epoch_length=EPOCH, train_handlers=handlers)
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.run()
    return losses, {k: v.clone() for k, v in pretext.state_dict().items()}


def _worker(r: int, init_file: str, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=WORLD,
                            timeout=timedelta(seconds=120))
    try:
        root_ = Path(root)
        straight, weights_a = _run(root_ / "a", 2, False, r)
        first, _ = _run(root_ / "b", 1, False, r)
        dist.barrier()  # rank 0 has written latest.pt before anyone resumes
        resumed, weights_b = _run(root_ / "b", 2, True, r)
        _run(root_ / f"c_rank{r}", 1, False, r, files=True)
        torch.save({"straight": straight, "first": first, "resumed": resumed, "a": weights_a, "b": weights_b},
                   root_ / f"rank{r}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_resume_matches_uninterrupted_run_and_rank1_writes_nothing(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    ckpt = safe_load(tmp_path / "b" / "checkpoints" / "latest.pt")
    per_rank = ckpt["rng_per_rank"]
    assert len(per_rank) == WORLD and not torch.equal(per_rank[0]["torch"], per_rank[1]["torch"])
    for r, res in enumerate(ranks):
        assert len(res["straight"]) == 2 * EPOCH and len(res["first"]) == EPOCH and len(res["resumed"]) == EPOCH
        assert res["first"] == res["straight"][:EPOCH], r
        assert res["resumed"] == res["straight"][EPOCH:], (r, res["resumed"], res["straight"])  # bit for bit
        assert all(torch.equal(res["a"][k], res["b"][k]) for k in res["a"]), r
    assert ranks[0]["straight"] != ranks[1]["straight"]  # the ranks really drew different noise

    rank0 = [p.relative_to(tmp_path / "c_rank0").as_posix() for p in (tmp_path / "c_rank0").rglob("*") if p.is_file()]
    assert {"checkpoints/final.pt", "checkpoints/latest.pt", "timing.csv"} <= set(rank0), rank0
    assert any(p.startswith("tensorboard/events.") for p in rank0), rank0
    rank1 = [p for p in (tmp_path / "c_rank1").rglob("*") if p.is_file()] if (tmp_path / "c_rank1").exists() else []
    assert rank1 == [], rank1

"""DDP on CPU with gloo, 2 processes: the 2-process step (DDP + NT-Xent negatives
gathered with gather_with_grad + rank-sharded patches) matches 1 process on the same global batch
in loss and gradients; and the MAE bundle runs under torchrun with configs/multi_gpu_train.yaml."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from monai_ssl_plugin.bundles import train_configs
from monai_ssl_plugin.data.dataset import RandomPatchDataset
from monai_ssl_plugin.data.sources import ArraySource
from monai_ssl_plugin.engine.ddp import RankShardedDataset, sync_batchnorm, teardown, wrap
from torchrun_launch import run_torchrun

WORLD, BATCH, PATCH = 2, 3, (8, 8, 8)  # per-rank batch 3 -> global batch 6


class TinyContrastive(nn.Module):
    """Conv + GroupNorm encoder, projection, NT-Xent between a patch and a fixed second view.

    (PyTorch's SyncBatchNorm runs on GPUs only, so the CPU test uses a per-sample norm.)"""

    def __init__(self):
        super().__init__()
        from monai_ssl_plugin.losses.nt_xent import NTXentLoss

        self.encoder = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
                                     nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 8))
        self.loss = NTXentLoss(temperature=0.5)

    def forward(self, batch):
        x = batch["image"]
        view = torch.flip(x, dims=(-1,)) * 0.9 + 0.1  # deterministic second view
        return {"loss": self.loss(self.encoder(x), self.encoder(view))}


def _patches():
    rng = np.random.default_rng(0)
    source = ArraySource([rng.standard_normal((1, 12, 12, 12)).astype(np.float32) for _ in range(4)])
    return RandomPatchDataset(source, PATCH, num_samples=BATCH * WORLD * 2, seed=1)


def _model():
    torch.manual_seed(0)
    return TinyContrastive().double()


def _step(model, batch):
    out = model({"image": batch.double()})
    out["loss"].backward()
    inner = getattr(model, "module", model)
    return float(out["loss"]), {k: p.grad.clone() for k, p in inner.named_parameters()}


def _worker(r: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=WORLD,
                            timeout=timedelta(seconds=120))
    try:
        model = wrap(sync_batchnorm(_model()), "cpu")
        assert type(model).__name__ == "SSLDistributedDataParallel"
        shard = RankShardedDataset(_patches(), BATCH)
        loader = torch.utils.data.DataLoader(shard, batch_size=BATCH, shuffle=False)
        batch = next(iter(loader))["image"]
        loss, grads = _step(model, batch)
        torch.save({"loss": loss, "grads": grads, "batch": batch}, Path(out_dir) / f"rank{r}.pt")
    finally:
        dist.destroy_process_group()


def test_sharded_dataset_covers_the_global_batch_in_order():
    base = list(range(24))
    shards = [RankShardedDataset(base, 3, rank_=r, world_size_=2) for r in range(2)]
    assert [shards[0][i] for i in range(3)] + [shards[1][i] for i in range(3)] == list(range(6))
    assert [shards[0][i] for i in range(3, 6)] == [6, 7, 8] and len(shards[0]) == 12
    shards[1].resume_at(3)  # iteration 1 with per-rank batch 3
    assert [shards[1][i] for i in range(3)] == [9, 10, 11] and len(shards[1]) == 9


def test_teardown_destroys_the_group_and_is_a_no_op_without_one(tmp_path):
    teardown()  # nothing initialised: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    teardown()
    assert not dist.is_initialized()


def test_two_process_gloo_step_matches_single_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    torch.set_num_threads(1)
    single = _model()
    global_batch = torch.stack([_patches()[i]["image"] for i in range(BATCH * WORLD)])
    torch.testing.assert_close(torch.cat([rk["batch"] for rk in ranks]), global_batch)  # same global batch
    loss, grads = _step(single, global_batch)
    for rk in ranks:
        assert abs(rk["loss"] - loss) < 1e-9, (rk["loss"], loss)  # the gathered loss is the global loss
        for key, grad in grads.items():  # DDP-averaged gradients == single-process gradients
            torch.testing.assert_close(rk["grads"][key], grad, rtol=1e-7, atol=1e-10)


@pytest.mark.e2e
def test_mae_bundle_runs_under_torchrun_with_gloo(tmp_path):
    from monai_ssl_plugin.checkpoint import safe_load
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset
    from monai_ssl_plugin.engine.run import bundle_dir

    data = make_synthetic_dataset(tmp_path / "raw", 990, "Synthetic", n_labelled=0, n_unlabelled=4,
                                  shape=(20, 20, 20), spacing=(1.0, 1.0, 1.0), seed=0)
    configs = bundle_dir("mae_ssl_pretraining") / "configs"
    out = tmp_path / "run"
    proc = run_torchrun(["-m", "monai.bundle", "run", "--config_file",
                         str(train_configs(configs.parent, multi_gpu=True)),
                         "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
                         "--dataset_dir", str(data), "--output_dir", str(out), "--backbone", "nnunet_plain_tiny",
                         "--patch_size", "[16,16,16]", "--batch_size", "2", "--train#epoch_length", "3",
                         "--train#trainer#max_epochs", "1", "--train#num_workers", "0", "--quiet", "true"],
                        cwd=tmp_path, outputs=[out], timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    log = proc.stdout + proc.stderr
    assert "rank 0 of 2 (gloo)" in log and "rank 1 of 2 (gloo)" in log
    state = safe_load(out / "checkpoints" / "final.pt")
    assert state["engine"]["iteration"] == 3
    assert len(list((out / "tensorboard").glob("events.*"))) == 1  # rank 0 only
    assert log.count("Saved ") == 1 and log.count("Data wait:") == 1

"""gather_with_grad and the losses that use it, on 2 CPU processes (gloo, file:// rendezvous)."""

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from monai.losses import ContrastiveLoss

from monai_ssl_plugin.distributed import gather_with_grad, is_main_process, rank, unwrap, world_size

WORLD = 2


def test_single_process_fallbacks():
    x = torch.randn(2, 3)
    assert gather_with_grad(x) is x
    assert (world_size(), rank(), is_main_process()) == (1, 0, True)


def _global_check(loss_fn, a_full, b_full, r, ref_fn=None):
    """Loss on the local shards equals the single-process loss on the global batch, and
    grad / world_size (what DDP's averaging yields) equals the single-process gradient."""
    n = a_full.shape[0] // WORLD
    a = a_full[r * n : (r + 1) * n].clone().requires_grad_()
    b = b_full[r * n : (r + 1) * n].clone()
    loss = loss_fn(a, b)
    loss.backward()
    a_ref = a_full.clone().requires_grad_()
    ref = (ref_fn or loss_fn)(a_ref, b_full)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(a.grad / WORLD, a_ref.grad[r * n : (r + 1) * n])


def _worker(r: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=r, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        from monai_ssl_plugin.losses.barlow_twins import BarlowTwinsLoss
        from monai_ssl_plugin.losses.dino import DINOLoss
        from monai_ssl_plugin.losses.moco import MoCoQueue
        from monai_ssl_plugin.losses.nt_xent import NTXentLoss
        from monai_ssl_plugin.losses.vicreg import VICRegLoss, vicreg_terms

        assert (world_size(), rank(), is_main_process()) == (WORLD, r, r == 0)

        # values arrive in rank order; the local shard's gradient is the sum over all losses
        x = (torch.arange(6.0).view(2, 3) + 10 * r).requires_grad_()
        gathered = gather_with_grad(x)
        torch.testing.assert_close(gathered, torch.cat([torch.arange(6.0).view(2, 3) + 10 * k for k in range(WORLD)]))
        (gathered * (r + 1)).sum().backward()  # rank k weighs every row by k + 1
        torch.testing.assert_close(x.grad, torch.full((2, 3), float(sum(k + 1 for k in range(WORLD)))))

        torch.manual_seed(0)  # same global data on every rank
        a_full, b_full = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
        _global_check(NTXentLoss(0.5), a_full, b_full, r, ContrastiveLoss(0.5))
        _global_check(BarlowTwinsLoss(), a_full, b_full, r, BarlowTwinsLoss(gather_distributed=False))

        # VICReg: variance/covariance on the global batch, invariance on the local shard; the
        # DDP-averaged gradient is that of mean-over-shards invariance + global var/cov
        n = a_full.shape[0] // WORLD
        a = a_full[r * n : (r + 1) * n].clone().requires_grad_()
        b = b_full[r * n : (r + 1) * n]
        inv, var, cov = vicreg_terms(a, b)
        _, var_ref, cov_ref = vicreg_terms(a_full, b_full, gather_distributed=False)
        torch.testing.assert_close((inv, var, cov), (F.mse_loss(a, b), var_ref, cov_ref))
        VICRegLoss()(a, b).backward()
        a_ref = a_full.clone().requires_grad_()
        VICRegLoss(gather_distributed=False)(a_ref, b_full).backward()
        torch.testing.assert_close(a.grad / WORLD, a_ref.grad[r * n : (r + 1) * n])

        # DINO centre: mean over both ranks' teacher outputs, identical everywhere
        teacher = torch.randn(4, 3) + r
        dino = DINOLoss(out_dim=3)
        dino.update_center(teacher)
        everyone = [torch.empty(4, 3) for _ in range(WORLD)]
        dist.all_gather(everyone, teacher)
        torch.testing.assert_close(dino.center, 0.1 * torch.cat(everyone).mean(0, keepdim=True))

        # MoCo: every rank enqueues the keys of all ranks in rank order
        queue = MoCoQueue(dim=3, size=8)
        keys = F.normalize(torch.randn(2, 3) + r, dim=1)
        queue.enqueue(keys)
        all_keys = [torch.empty(2, 3) for _ in range(WORLD)]
        dist.all_gather(all_keys, keys)
        torch.testing.assert_close(queue.queue[: 2 * WORLD], torch.cat(all_keys))
        assert queue.ptr.item() == 2 * WORLD
    finally:
        dist.destroy_process_group()


def test_unwrap_looks_through_data_parallel_and_compile_only():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert unwrap(net) is net
    assert unwrap(torch.nn.DataParallel(net)) is net
    assert unwrap(torch.compile(net)) is net  # compiled lazily: no compilation happens here

    class Holder(torch.nn.Module):  # a submodule that happens to be called "module" is not a wrapper
        def __init__(self):
            super().__init__()
            self.module = net

    holder = Holder()
    assert unwrap(holder) is holder


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_processes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"),), nprocs=WORLD, join=True)

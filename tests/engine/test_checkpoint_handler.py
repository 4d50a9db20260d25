import os

import pytest
import torch
from ignite.engine import Events
from monai.handlers import LrScheduleHandler
from torch.utils.data import DataLoader, TensorDataset

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.checkpoint import CHECKPOINT_KEYS, CheckpointRecord, safe_load
from monai_ssl_plugin.engine import SSLTrainer
from monai_ssl_plugin.engine.handlers import NaNGuard, SSLCheckpointHandler
from monai_ssl_plugin.engine.run import record_factory
from monai_ssl_plugin.engine.schedules import warmup_poly
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext import create_pretext

INFO = {"kind": "test", "axis_order": "nnunet", "spacing": [1.0, 1.0, 1.0], "normalization": ["ZScoreNormalization"],
        "in_channels": 1, "spatial_dims": 3}


def _setup(out, max_epochs, epoch_length=2, resume=False, save_every=2, extra_handlers=()):
    """A tiny MAE run: 4 volumes, batch 2, shuffled by the global torch RNG (so RNG restore matters)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(123)
    x = torch.rand(4, 1, 16, 16, 16, generator=gen)
    loader = DataLoader(TensorDataset(x), batch_size=2, shuffle=True, collate_fn=lambda b: {"image": torch.stack([t[0] for t in b])})
    mae = create_pretext("mae", backbone=create_backbone("nnunet_plain_tiny"), block_size=4, mask_ratio=0.5)
    opt = torch.optim.SGD(mae.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    sched = warmup_poly(opt, total_iters=max(4, max_epochs * epoch_length), warmup_iters=1)
    ckpt = SSLCheckpointHandler(out, mae, opt, sched, record_factory(mae, INFO, [16, 16, 16]), save_every, resume=resume)
    handlers = [*extra_handlers, ckpt, LrScheduleHandler(sched, epoch_level=False, print_lr=False)]  # ckpt before the LR step on purpose
    trainer = SSLTrainer("cpu", max_epochs, loader, mae, opt, epoch_length=epoch_length, train_handlers=handlers)
    return trainer, mae, ckpt


def _weights(mae):
    return {k: v.clone() for k, v in mae.backbone.network.state_dict().items()}


def test_checkpoint_format_is_weights_only_and_complete(tmp_path):
    torch.set_num_threads(1)
    trainer, mae, ckpt = _setup(tmp_path, max_epochs=1)
    trainer.run()
    assert ckpt.latest_path.is_file() and ckpt.final_path.is_file()
    state = torch.load(ckpt.final_path, weights_only=True)
    assert set(CHECKPOINT_KEYS) <= set(state)
    assert state["engine"]["iteration"] == 2 and state["engine"]["epoch"] == 1
    assert state["network"].keys() == mae.backbone.network.state_dict().keys()
    record = CheckpointRecord.from_dict(state["record"])
    assert record.steps == 2 and record.pretext == "mae" and record.patch_size == [16, 16, 16]
    assert state["scheduler"]["last_epoch"] == 2  # saved after the LR step although attached before it
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}


def test_resume_continues_the_same_run_bitwise(tmp_path):
    torch.set_num_threads(1)
    straight, mae_a, _ = _setup(tmp_path / "a", max_epochs=2)
    losses_a = []
    straight.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses_a.append(e.state.output["loss"]))
    straight.run()

    first, _, _ = _setup(tmp_path / "b", max_epochs=1)
    first.run()
    second, mae_b, _ = _setup(tmp_path / "b", max_epochs=2, resume=True)
    losses_b = []
    second.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses_b.append(e.state.output["loss"]))
    second.run()

    assert second.state.iteration == 4 and len(losses_b) == 2
    assert losses_b == losses_a[2:]  # same loss curve
    wa, wb = _weights(mae_a), _weights(mae_b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert safe_load(tmp_path / "b" / "checkpoints" / "final.pt")["record"]["steps"] == 4


def test_resume_mid_epoch_runs_only_the_rest(tmp_path):
    torch.set_num_threads(1)

    def crash(engine):
        if engine.state.iteration == 3:
            raise RuntimeError("simulated crash")

    trainer, _, ckpt = _setup(tmp_path, max_epochs=1, epoch_length=4, save_every=1)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.run()
    assert safe_load(ckpt.latest_path)["engine"]["iteration"] == 2  # the crash came before iteration 3's save
    assert not ckpt.final_path.exists()

    resumed, _, _ = _setup(tmp_path, max_epochs=1, epoch_length=4, save_every=1, resume=True)
    seen = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append((e.state.epoch, e.state.iteration)))
    resumed.run()
    assert seen == [(1, 3), (1, 4)]
    final = safe_load(ckpt.final_path)
    assert final["engine"]["iteration"] == 4 and final["scheduler"]["last_epoch"] == 4


def test_resume_without_checkpoint_starts_fresh(tmp_path, caplog):
    trainer, _, ckpt = _setup(tmp_path, max_epochs=1, resume=True)
    with caplog.at_level("INFO"):
        trainer.run()
    assert "starting a fresh run" in caplog.text
    assert safe_load(ckpt.final_path)["engine"]["iteration"] == 2


def test_resume_with_another_network_is_one_clear_error(tmp_path):
    trainer, _, ckpt = _setup(tmp_path, max_epochs=1)
    trainer.run()
    other = create_pretext("mae", backbone=create_backbone("nnunet_plain_small"), block_size=4)
    handler = SSLCheckpointHandler(tmp_path, other, torch.optim.SGD(other.parameters(), 0.1), None, lambda s: {}, 1, resume=True)
    with pytest.raises(PluginError, match="different network or pretext") as err:
        handler.load(trainer)
    assert "\n" not in str(err.value)


def test_crash_during_save_keeps_previous_latest_and_leaves_no_tmp(tmp_path, monkeypatch):
    trainer, _, ckpt = _setup(tmp_path, max_epochs=1)
    trainer.run()
    before = ckpt.latest_path.read_bytes()
    real_save = torch.save

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(trainer)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.latest_path.read_bytes() == before
    assert safe_load(ckpt.latest_path)["engine"]["iteration"] == 2
    assert sorted(os.listdir(ckpt.checkpoint_dir)) == ["final.pt", "latest.pt"]


def test_stale_tmp_from_a_killed_save_is_removed_and_never_loaded(tmp_path, caplog):
    """A SIGKILL inside atomic_save leaves `.latest.pt.<random>.tmp`: the next start removes it (with a
    warning naming it) and resumes from the intact latest.pt; without latest.pt it starts fresh."""
    trainer, _, ckpt = _setup(tmp_path, max_epochs=1)
    trainer.run()
    torn = ckpt.checkpoint_dir / ".latest.pt.k1ll3d.tmp"
    torn.write_bytes(ckpt.latest_path.read_bytes()[:100])  # what a kill mid-write leaves
    resumed, _, ckpt2 = _setup(tmp_path, max_epochs=2, resume=True)
    with caplog.at_level("INFO"):
        resumed.run()
    assert "Removing " in caplog.text and ".latest.pt.k1ll3d.tmp" in caplog.text
    assert "Resumed from" in caplog.text and f"at iteration 2" in caplog.text
    assert sorted(os.listdir(ckpt2.checkpoint_dir)) == ["final.pt", "latest.pt", "previous.pt"]
    assert safe_load(ckpt2.final_path)["engine"]["iteration"] == 4

    # only a torn temporary, no latest.pt: never mistaken for a checkpoint, the run starts fresh
    fresh_dir = tmp_path / "fresh" / "checkpoints"
    fresh_dir.mkdir(parents=True)
    (fresh_dir / ".latest.pt.x.tmp").write_bytes(ckpt.latest_path.read_bytes())  # even a complete one
    caplog.clear()
    fresh, _, ckpt3 = _setup(tmp_path / "fresh", max_epochs=1, resume=True)
    with caplog.at_level("INFO"):
        fresh.run()
    assert "starting a fresh run" in caplog.text and "Removing " in caplog.text
    assert sorted(os.listdir(fresh_dir)) == ["final.pt", "latest.pt"]  # one generation only: no previous.pt
    assert safe_load(ckpt3.final_path)["engine"]["iteration"] == 2


def test_nan_guard_names_iteration_and_term_and_keeps_last_good_checkpoint(tmp_path):
    class PoisonAt3(NaNGuard):  # turns the loss of iteration 3 into NaN before the guard looks at it
        def __call__(self, engine):
            if engine.state.iteration == 3:
                engine.state.output["reconstruction"] = float("nan")
            super().__call__(engine)

    trainer, _, ckpt = _setup(tmp_path, max_epochs=3, save_every=1, extra_handlers=[PoisonAt3()])
    with pytest.raises(PluginError) as err:
        trainer.run()
    message = str(err.value)
    assert "'reconstruction'" in message and "iteration 3" in message and "\n" not in message
    assert safe_load(ckpt.latest_path)["engine"]["iteration"] == 2
    assert not ckpt.final_path.exists()


def _patch_run(out, crash_at=None, resume=False):
    """MAE over the real patch pipeline: RandomPatchDataset (item i = f(seed, i)) behind a ResumableDataset."""
    import numpy as np

    from monai_ssl_plugin.data.dataset import RandomPatchDataset, make_patch_loader
    from monai_ssl_plugin.data.sources import ArraySource
    from monai_ssl_plugin.engine.handlers import ResumableDataset

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    source = ArraySource([rng.standard_normal((1, 24, 24, 24)).astype("float32") for _ in range(3)])
    patches = ResumableDataset(RandomPatchDataset(source, [16, 16, 16], num_samples=8, seed=5))
    loader = make_patch_loader(source, [16, 16, 16], batch_size=2, num_samples=8, dataset=patches)
    mae = create_pretext("mae", backbone=create_backbone("nnunet_plain_tiny"), block_size=4, mask_ratio=0.5)
    opt = torch.optim.SGD(mae.parameters(), lr=0.05, momentum=0.9)
    ckpt = SSLCheckpointHandler(out, mae, opt, None, lambda s: {"steps": s}, 1, resume=resume)
    trainer = SSLTrainer("cpu", 1, loader, mae, opt, epoch_length=4, train_handlers=[ckpt])
    if crash_at:
        def crash(engine):
            if engine.state.iteration == crash_at:
                raise RuntimeError("simulated crash")
        trainer.add_event_handler(Events.ITERATION_COMPLETED, crash)
    return trainer, mae


def test_mid_epoch_resume_reads_the_same_patches(tmp_path):
    torch.set_num_threads(1)
    straight, mae_a = _patch_run(tmp_path / "a")
    straight.run()
    crashed, _ = _patch_run(tmp_path / "b", crash_at=3)
    with pytest.raises(RuntimeError):
        crashed.run()
    resumed, mae_b = _patch_run(tmp_path / "b", resume=True)
    resumed.run()
    assert resumed.data_loader.dataset.start == 4  # 2 iterations x batch 2 already consumed
    wa, wb = _weights(mae_a), _weights(mae_b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

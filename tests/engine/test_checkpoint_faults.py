"""Fault injection on pretraining checkpoints: flipped bytes, truncation, crafted pickles, lost generations.

A damaged ``latest.pt`` is never resumed silently: the run stops with one line naming the newest
intact generation, and ``resume="last_good"`` takes it.
"""

from __future__ import annotations

import random

import pytest
import torch

from monai_ssl_plugin.checkpoint import CHECKSUM_KEY, load_checked, safe_load, tensor_checksum
from monai_ssl_plugin.engine.handlers.checkpoint import resume_mode
from monai_ssl_plugin.errors import PluginError
from test_checkpoint_handler import _setup

N_FLIPS = 40


@pytest.fixture
def trained(tmp_path):
    """A run of 4 iterations saved at each; final.pt removed, as after a kill before the end."""
    torch.set_num_threads(1)
    trainer, _, ckpt = _setup(tmp_path, max_epochs=2, save_every=1)
    trainer.run()
    ckpt.final_path.unlink()
    return ckpt


def _flip_in_tensor(path, state):
    """Flip one byte inside the stored bytes of the largest network tensor (not a zip header)."""
    data = bytearray(path.read_bytes())
    tensor = max(state["network"].values(), key=lambda t: t.numel())
    pos = bytes(data).find(tensor.numpy().tobytes()[:64])
    assert pos > 0
    data[pos + 10] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_loads_in_torch_but_is_refused_on_resume(trained, tmp_path):
    state = safe_load(trained.latest_path)
    assert state[CHECKSUM_KEY] == tensor_checksum(state)
    _flip_in_tensor(trained.latest_path, state)
    torch.load(trained.latest_path, weights_only=True)  # torch alone does not notice
    resumed, _, handler = _setup(tmp_path, max_epochs=3, save_every=1, resume=True)
    with pytest.raises(PluginError, match="fails its checksum") as err:
        resumed.run()
    text = str(err.value)
    assert "\n" not in text and "previous.pt beside it is intact (iteration 3)" in text and "last_good" in text


def test_last_good_takes_the_previous_generation(trained, tmp_path, caplog):
    _flip_in_tensor(trained.latest_path, safe_load(trained.latest_path))
    resumed, _, handler = _setup(tmp_path, max_epochs=3, save_every=1, resume="last_good")
    with caplog.at_level("INFO"):
        resumed.run()
    assert "Resumed from" in caplog.text and "previous.pt at iteration 3" in caplog.text
    assert load_checked(handler.final_path)["engine"]["iteration"] == 6


def test_damaged_latest_beside_a_good_final_offers_final(trained, tmp_path):
    trained.latest_path.replace(trained.final_path)
    trained.final_path.write_bytes(trained.final_path.read_bytes())
    trained.latest_path.write_bytes(trained.final_path.read_bytes()[:500])  # truncated
    trained.previous_path.unlink()
    resumed, _, _ = _setup(tmp_path, max_epochs=3, save_every=1, resume=True)
    with pytest.raises(PluginError, match="final.pt beside it is intact") as err:
        resumed.run()
    assert "\n" not in str(err.value)


def test_no_intact_generation_is_one_line(trained, tmp_path):
    for path in (trained.latest_path, trained.previous_path):
        path.write_bytes(b"garbage")
    resumed, _, _ = _setup(tmp_path, max_epochs=3, save_every=1, resume="last_good")
    with pytest.raises(PluginError, match="No intact older checkpoint") as err:
        resumed.run()
    assert "\n" not in str(err.value) and "--output_dir" in str(err.value)


def test_random_flips_are_refused_or_change_nothing(trained):
    """Flip single bytes anywhere in the file: each load either refuses or returns the same content."""
    original = trained.latest_path.read_bytes()
    reference = safe_load(trained.latest_path)[CHECKSUM_KEY]
    rng = random.Random(0)
    outcomes = {"refused": 0, "same content": 0}
    for _ in range(N_FLIPS):
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        trained.latest_path.write_bytes(bytes(data))
        try:
            state = load_checked(trained.latest_path)
        except PluginError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
            continue
        assert tensor_checksum(state) == reference
        outcomes["same content"] += 1
    assert sum(outcomes.values()) == N_FLIPS and outcomes["refused"] > 0


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pickle_as_latest_never_runs(trained, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"engine": {"iteration": 1}, "x": _Payload(marker)}, trained.latest_path)
    resumed, _, _ = _setup(tmp_path, max_epochs=3, save_every=1, resume=True)
    with pytest.raises(PluginError, match="safely"):
        resumed.run()
    assert not marker.exists()


@pytest.mark.parametrize("value, expected", [("true", True), ("False", False), (True, True), (0, False),
                                             ("last_good", "last_good")])
def test_resume_values(value, expected):
    assert resume_mode(value) == expected


def test_bad_resume_value_is_one_line():
    with pytest.raises(PluginError, match="last_good"):
        resume_mode("sometimes")


def test_full_disk_during_a_save_keeps_the_last_good_generation(tmp_path):
    """A real full disk (small tmpfs) mid-run: the save fails as one line, latest.pt stays intact."""
    import errno

    from fault_fs import fill, small_filesystem

    from monai_ssl_plugin.errors import plugin_error_in

    torch.set_num_threads(1)
    with small_filesystem(tmp_path / "fs", size_kb=16 * 1024) as fs:
        trainer, _, ckpt = _setup(fs, max_epochs=1, save_every=1)
        trainer.run()
        before = ckpt.latest_path.read_bytes()
        ckpt.previous_path.unlink()  # else rotating it frees just the room the next save needs
        fill(fs)
        trainer.state.iteration += 1
        with pytest.raises(OSError) as err:
            ckpt.save(trainer)
        assert err.value.errno == errno.ENOSPC
        assert "no space left" in str(plugin_error_in(err.value))
        assert ckpt.latest_path.read_bytes() == before
        assert load_checked(ckpt.latest_path)["engine"]["iteration"] == 2
        assert not list(ckpt.checkpoint_dir.glob(".*.tmp"))

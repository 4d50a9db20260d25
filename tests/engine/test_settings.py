"""Run settings: a table of bad overrides (one line each), the monai.bundle command line, the
one-line excepthook and the clean-up of a failed start."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from monai_ssl_plugin.engine import settings
from monai_ssl_plugin.engine.settings import bundle_run_command_line, check_overrides, clean_failed_start, start_run
from monai_ssl_plugin.errors import PluginError

BAD = [
    ("batch_size", "two", "not a whole number"), ("batch_size", 0, "below 1"), ("batch_size", 2.5, "whole number"),
    ("learning_rate", "fast", "not a number"), ("learning_rate", 0, "outside"), ("learning_rate", -1e-3, "outside"),
    ("patch_size", 32, "not a list"), ("patch_size", "[32,32]x", "not a list"), ("patch_size", [0, 32, 32], "positive"),
    ("patch_size", [32] * 4, "2 or 3"), ("mask_ratio", 1.5, "outside"), ("mask_ratio", 1.0, "outside"),
    ("mask_ratio", 0, "outside"), ("save_every_n_iters", -1, "below 0"), ("train#epoch_length", 0, "below 1"),
    ("train#trainer#max_epochs", "many", "whole number"), ("train#num_workers", -2, "below 0"),
    ("warmup_fraction", 1.0, "outside"), ("grad_clip", -1, "outside"), ("seed", -1, "below 0"),
    ("device", "gpu7", "not a device"), ("resume", "maybe", "last_good"), ("bad_data", "ignore", "skip, raise, refuse"),
    ("lr_schedule", "step", "poly"), ("amp", "sometimes", "true or false"), ("amp_dtype", "float8", "bfloat16"),
    ("quiet", "loud", "true or false"),
]
GOOD = {"batch_size": 4, "learning_rate": 1e-3, "patch_size": [32, 32, 32], "mask_ratio": 0.6, "save_every_n_iters": 0,
        "train#epoch_length": 5, "train#trainer#max_epochs": 1, "warmup_fraction": 0.0, "device": "cpu",
        "resume": "last_good", "bad_data": "raise", "lr_schedule": "cosine", "amp": "false", "seed": 3,
        "learning_rate::x": 1, "batch_size_expr": "$2 * 2", "patch_size_ref": "@other"}


@pytest.mark.parametrize("key, value, words", BAD)
def test_bad_override_is_one_line(key, value, words):
    with pytest.raises(PluginError) as err:
        check_overrides({key: value})
    text = str(err.value)
    assert "\n" not in text and words in text and "Fix:" in text


def test_good_overrides_and_expressions_pass():
    check_overrides(GOOD)
    check_overrides({"batch_size": "$int(@x) * 2", "patch_size": "@train#other"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line():
    with pytest.raises(PluginError, match="CUDA is not available.*--device cpu"):
        check_overrides({"device": "cuda"})


def test_unknown_id_is_refused():
    known = {"batch_size", "train#epoch_length"}.__contains__
    check_overrides({"batch_size": 2, "train::epoch_length": 3}, known)
    with pytest.raises(PluginError, match="no config id 'batch_sise'"):
        check_overrides({"batch_sise": 4}, known)


def test_monai_bundle_command_line_is_read_like_fire():
    run_args, overrides = bundle_run_command_line(
        ["run", "training", "--config_file", "['a.yaml','b.yaml']", "--meta_file=m.json", "--batch_size", "two",
         "--patch_size", "[32,32,32]", "--quiet", "--learning_rate", "1e-3", "--train#epoch_length", "4"])
    assert run_args == {"run_id": "training", "config_file": ["a.yaml", "b.yaml"], "meta_file": "m.json"}
    assert overrides == {"batch_size": "two", "patch_size": [32, 32, 32], "quiet": True, "learning_rate": 1e-3,
                         "train#epoch_length": 4}
    assert bundle_run_command_line(["verify_metadata", "--x", "1"]) is None


@pytest.fixture
def restore_hook():
    yield
    sys.excepthook = sys.__excepthook__
    settings._START = None


def test_failed_start_removes_only_what_it_created(tmp_path, restore_hook):
    fresh = tmp_path / "fresh"
    start_run(fresh)
    (fresh / "tensorboard").mkdir(parents=True)
    (fresh / "timing.csv").write_text("x")
    (fresh / "bad_data.tsv").write_text("x")
    assert {p.name for p in clean_failed_start()} == {"tensorboard", "timing.csv", "bad_data.tsv", "fresh"}
    assert not fresh.exists()

    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    start_run(used)
    (used / "tensorboard").mkdir()
    clean_failed_start()
    assert [p.name for p in used.iterdir()] == ["notes.txt"]


def test_a_run_that_wrote_a_checkpoint_keeps_everything(tmp_path, restore_hook):
    start_run(tmp_path / "run")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "latest.pt").write_bytes(b"x")
    (tmp_path / "run" / "timing.csv").write_text("x")
    assert clean_failed_start() == []
    assert (tmp_path / "run" / "timing.csv").is_file()


def test_excepthook_ends_with_the_plugins_line(tmp_path):
    code = ("from monai_ssl_plugin.engine.settings import start_run\n"
            "from monai_ssl_plugin.errors import PluginError\n"
            f"start_run({str(tmp_path / 'out')!r})\n"
            f"import os; os.makedirs({str(tmp_path / 'out' / 'tensorboard')!r})\n"
            "try:\n    raise PluginError('Bad thing.', 'Do this.')\n"
            "except PluginError as e:\n    raise RuntimeError('config wrapper') from e\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == ["monai-ssl: error: Bad thing. Fix: Do this."]
    assert not (tmp_path / "out").exists()


def test_a_failed_resumed_run_leaves_the_folder_as_it_was(tmp_path, restore_hook):
    """A resumed run's folder already holds tensorboard/, timing.csv and an older checkpoint: a failure
    before the next checkpoint removes the new event file and puts back the rows it rewrote."""
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "events.out.tfevents.1.old").write_bytes(b"old")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "latest.pt").write_bytes(b"x")
    (run / "timing.csv").write_text("iteration,wait_s,step_s\n1,0.1,0.2\n")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    start_run(run)
    (run / "tensorboard" / "events.out.tfevents.2.new").write_bytes(b"new")
    (run / "tensorboard" / "payoff").mkdir()
    (run / "tensorboard" / "payoff" / "events.out.tfevents.3").write_bytes(b"new")
    (run / "timing.csv").write_text("iteration,wait_s,step_s\n")
    (run / "bad_data.tsv").write_text("case\treason\n")
    cleaned = {p.relative_to(run).as_posix() for p in clean_failed_start()}
    assert cleaned == {"tensorboard/events.out.tfevents.2.new", "tensorboard/payoff", "timing.csv", "bad_data.tsv"}
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

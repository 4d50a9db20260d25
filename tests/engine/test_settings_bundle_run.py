"""`python -m monai.bundle run` on a pretraining bundle with bad overrides: each refusal is the run's
final line (the plugin's one line), and the failed start leaves no output folder behind; the same
under ``torchrun`` with the multi-GPU overlay, for a bad override and for a bad case met in the first steps.

The table runs MONAI's own ``__main__`` in this process (runpy, as ``python -m`` does) and hands the
exception to the excepthook the bundle installed; one case runs as a real subprocess.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_ssl_plugin.bundles import train_configs
from monai_ssl_plugin.engine import settings
from monai_ssl_plugin.engine.run import bundle_dir
from torchrun_launch import run_torchrun

CASES = [
    (["--batch_sise", "4"], "no config id 'batch_sise'"),
    (["--batch_size", "two"], "--batch_size 'two' is not a whole number"),
    (["--learning_rate", "fast"], "--learning_rate 'fast' is not a number"),
    (["--patch_size", "32"], "--patch_size 32 is not a list of sizes"),
    (["--mask_ratio", "1.5"], "--mask_ratio 1.5 is outside (0.0, 1.0)"),
    (["--save_every_n_iters", "-1"], "--save_every_n_iters -1 is below 0"),
    (["--resume", "maybe"], "is not true, false or last_good"),
    (["--bad_data", "ignore"], "is not one of skip, raise, refuse"),
    (["--patch_size", "[30,30,30]"], "does not fit the backbone"),
    (["--dataset_dir", "/nonexistent/data"], "does not exist"),
]
if not torch.cuda.is_available():
    CASES.append((["--device", "cuda"], "CUDA is not available"))


def _command(dataset: str, output_dir: str, extra: list[str]) -> list[str]:
    configs = bundle_dir("mae_ssl_pretraining") / "configs"
    files = [str(f) for f in (configs / "base.yaml", configs / "train.yaml") if f.is_file()]
    return ["run", "--config_file", repr(files), "--meta_file", str(configs / "metadata.json"),
            "--logging_file", str(configs / "logging.conf"), "--dataset_dir", dataset, "--output_dir", output_dir,
            "--backbone", "nnunet_plain_tiny", "--patch_size", "[16,16,16]", "--train#epoch_length", "2",
            "--train#trainer#max_epochs", "1", "--train#num_workers", "0", "--quiet", "true", *extra]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    return str(make_synthetic_dataset(tmp_path_factory.mktemp("raw"), dataset_id=993, n_labelled=2, n_unlabelled=0,
                                      shape=(20, 20, 20), seed=0))


@pytest.mark.parametrize("extra, words", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_refusal_is_the_final_line_and_nothing_is_left(dataset, tmp_path, capsys, monkeypatch, extra, words):
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["monai/bundle/__main__.py", *_command(dataset, str(out), extra)])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    with pytest.raises(Exception) as err:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    capsys.readouterr()
    sys.excepthook(err.type, err.value, err.tb)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("monai-ssl: error: ") and words in last and "Fix:" in last, last
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    settings._START = None


def test_a_real_process_ends_with_the_plugins_line(dataset, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", *_command(dataset, str(out), ["--batch_sise", "4"])],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "monai-ssl: error: The bundle has no config id 'batch_sise'. Fix: Check the spelling; nested ids use '#', "
        "e.g. train#epoch_length or train#trainer#max_epochs.")
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("extra, words", [(["--batch_sise", "4"], "no config id 'batch_sise'"),
                                          (["--mask_ratio", "1.5"], "is outside (0.0, 1.0)"),
                                          (["--patch_size", "[30,30,30]"], "does not fit the backbone")])
def test_monai_ssl_pretrain_refuses_in_one_line(dataset, tmp_path, capsys, extra, words):
    from monai_ssl_plugin.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--dataset_dir", dataset, "--output_dir", str(out), "--backbone", "nnunet_plain_tiny",
              "--train#epoch_length", "2", "--train#trainer#max_epochs", "1", "--quiet", "true", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].startswith("monai-ssl: error: ") and words in err[-1]
    assert not out.exists()


@pytest.fixture(scope="module")
def dataset_lacking_a_channel(tmp_path_factory):
    """A 2-channel nnU-Net raw dataset: three complete cases and one without its _0001 file."""
    images = tmp_path_factory.mktemp("raw") / "Dataset994_Lacks" / "imagesTr"
    images.mkdir(parents=True)
    (images.parent / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0}, "numTraining": 4,
        "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(0)
    for case, channels in (("good_0", 2), ("good_1", 2), ("good_2", 2), ("lacks", 1)):
        for c in range(channels):
            nib.save(nib.Nifti1Image(rng.random((20, 20, 20)).astype(np.float32), np.eye(4)),
                     str(images / f"{case}_{c:04d}.nii.gz"))
    return str(images.parent)


@pytest.mark.e2e
@pytest.mark.parametrize("extra, words", [
    (["--batch_sise", "4"], "The bundle has no config id 'batch_sise'."),
    (["--bad_data", "raise", "--save_every_n_iters", "0"], "Bad case lacks: missing channel file(s) lacks_0001.nii.gz"),
], ids=["misspelt id", "bad case in the first steps"])
def test_torchrun_start_check_is_one_line_per_rank(dataset_lacking_a_channel, tmp_path, extra, words):
    """The multi-GPU overlay starts with the same check: a rank that fails ends with the plugin's line
    (torchrun stops the other rank and adds its own failure summary after it) and the failed start
    leaves no output folder."""
    out = tmp_path / "run"
    command = _command(dataset_lacking_a_channel, str(out), extra)
    command[command.index("--config_file") + 1] = str(train_configs("mae_ssl_pretraining", multi_gpu=True))
    proc = run_torchrun(["-m", "monai.bundle", *command], cwd=tmp_path, outputs=[out], timeout=600)
    log = proc.stdout + proc.stderr
    lines = [line.split("]: ", 1)[-1] for line in log.splitlines() if "monai-ssl: error: " in line]
    assert proc.returncode != 0 and 1 <= len(lines) <= 2, log[-4000:]
    assert all(line.startswith(f"monai-ssl: error: {words}") and "Fix:" in line for line in lines), lines
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))

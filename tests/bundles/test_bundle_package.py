"""The bundles as package data (``monai_ssl_plugin.bundles``): listing, config lists, copies.

The wheel test builds the wheel of this checkout, installs it (not editable) into a fresh virtual
environment that reuses this environment's heavy dependencies through a ``.pth`` line, and runs the
installed ``monai-ssl`` from an empty working directory: what a user who ``pip install``s gets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from monai_ssl_plugin.bundles import (BUNDLES_DIR, bundle_dir, copy_bundle, list_bundles, train_configs)
from monai_ssl_plugin.cli import main
from monai_ssl_plugin.errors import PluginError

REPO = Path(__file__).resolve().parents[2]
TINY_RUN = ["--backbone", "nnunet_plain_tiny", "--patch_size", "[32,32,32]", "--batch_size", "2",
            "--train#epoch_length", "2", "--train#trainer#max_epochs", "1", "--train#num_workers", "0",
            "--device", "cpu", "--quiet", "true"]


def test_list_names_every_bundle_and_nothing_else():
    names = list_bundles()
    assert {"mae_ssl_pretraining", "classification_finetune", "swin_unetr_ssl_pretraining"} <= set(names)
    assert "_shared" not in names and names == sorted(names)
    assert all((BUNDLES_DIR / n / "configs" / "metadata.json").is_file() for n in names)


def test_bundle_dir_by_name_by_path_and_unknown(tmp_path):
    by_name = bundle_dir("mae_ssl_pretraining")
    assert by_name == BUNDLES_DIR / "mae_ssl_pretraining" and bundle_dir(by_name) == by_name
    with pytest.raises(PluginError, match="mae_ssl_pretraining") as err:
        bundle_dir("no_such_bundle")
    assert "\n" not in str(err.value)


def test_train_configs_merge_order():
    mae = bundle_dir("mae_ssl_pretraining") / "configs"
    assert train_configs("mae_ssl_pretraining") == [str(mae / "base.yaml"), str(mae / "train.yaml")]
    assert train_configs("mae_ssl_pretraining", multi_gpu=True)[-1] == str(mae / "multi_gpu_train.yaml")
    seg = bundle_dir("segmentation_finetune") / "configs"
    assert train_configs("segmentation_finetune") == [str(seg / "train.yaml")]  # a fine-tuning bundle is one file
    with pytest.raises(PluginError, match="multi_gpu_train.yaml"):
        train_configs("segmentation_finetune", multi_gpu=True)


def test_copy_is_self_contained_and_never_overwrites(tmp_path, capsys):
    main(["copy-bundle", "mae_ssl_pretraining", str(tmp_path)])
    copy = tmp_path / "mae_ssl_pretraining"
    assert f"copied mae_ssl_pretraining to {copy}" in capsys.readouterr().out
    files = [p for p in copy.rglob("*")]
    assert not [p for p in files if p.is_symlink()], "a copy holds plain files"
    assert (copy / "models").is_dir()
    for name in ("base.yaml", "multi_gpu_train.yaml"):
        assert (copy / "configs" / name).read_bytes() == (BUNDLES_DIR / "_shared" / name).read_bytes()
    assert train_configs(copy) == [str(copy / "configs" / "base.yaml"), str(copy / "configs" / "train.yaml")]
    (copy / "configs" / "train.yaml").write_text("edited")
    with pytest.raises(PluginError, match="already exists"):
        copy_bundle("mae_ssl_pretraining", tmp_path)
    assert (copy / "configs" / "train.yaml").read_text() == "edited"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mae_ssl_pretraining"]  # no staging folder left


def _clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH (a checkout on it would shadow the installed package)."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}


def _build_wheel(out: Path, work: Path) -> Path:
    """The wheel of this checkout, built from a copy of it (the build leaves build/ and *.egg-info behind)."""
    src = work / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs", "demo_output"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=600, env=_clean_env())
    return next(out.glob("monai_ssl_plugin-*.whl"))


def _fresh_venv(root: Path, wheel: Path) -> Path:
    """A new virtual environment with ``wheel`` installed (not editable), then given this environment's
    packages through a .pth line: added after the install, so pip cannot see (or touch) the editable copy."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600, env=_clean_env())
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_outer_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_wheel_installs_and_runs_a_bundle_from_an_empty_folder(tmp_path, synthetic_raw_dataset):
    python = _fresh_venv(tmp_path / "venv", _build_wheel(tmp_path / "wheels", tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _clean_env()

    def run(*args: str) -> str:
        proc = subprocess.run(args, cwd=empty, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return proc.stdout

    where = run(str(python), "-c", "import monai_ssl_plugin; print(monai_ssl_plugin.__file__)")
    assert where.startswith(str(tmp_path / "venv")), where  # the installed copy, not this checkout
    monai_ssl = str(tmp_path / "venv" / "bin" / "monai-ssl")
    assert "mae_ssl_pretraining" in run(monai_ssl, "list")
    run(monai_ssl, "pretrain", "--bundle", "mae_ssl_pretraining", "--dataset_dir", str(synthetic_raw_dataset),
        "--output_dir", "run", *TINY_RUN)
    state = torch.load(empty / "run" / "checkpoints" / "final.pt", weights_only=True)
    assert state["engine"]["iteration"] == 2 and state["record"]["pretext"] == "mae"

    # the documented MONAI route: a copy of the bundle, run by MONAI with its config list
    run(monai_ssl, "copy-bundle", "mae_ssl_pretraining", ".")
    configs = "mae_ssl_pretraining/configs"
    run(str(python), "-m", "monai.bundle", "run", "--config_file",
        f"['{configs}/base.yaml','{configs}/train.yaml']", "--meta_file", f"{configs}/metadata.json",
        "--logging_file", f"{configs}/logging.conf", "--dataset_dir", str(synthetic_raw_dataset),
        "--output_dir", "run2", *TINY_RUN)
    assert (empty / "run2" / "checkpoints" / "final.pt").is_file()
    assert sorted(p.name for p in empty.iterdir()) == ["mae_ssl_pretraining", "run", "run2"]

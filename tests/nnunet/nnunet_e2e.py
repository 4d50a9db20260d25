"""End-to-end helpers for the nnU-Net tests: the session's nnU-Net folders and commands, pretraining, Dice.

Imported by ``conftest.py`` (fixtures) and the ``*_e2e.py`` modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SSL_ENV = ("nnUNet_SSL_pretrained", "nnUNet_SSL_lr", "nnUNet_SSL_scratch_lr", "nnUNet_SSL_warmup_epochs",
           "nnUNet_SSL_epochs", "nnUNet_SSL_allow_normalization_mismatch", "nnUNet_SSL_decoder_epochs",
           "nnUNet_SSL_iterations", "nnUNet_SSL_load", "nnUNet_SSL_adapt", "nnUNet_SSL_min_loaded_fraction",
           "nnUNet_SSL_seed")
CONFIGURATION = "3d_fullres"
TINY_PLANS = "nnUNetPlans_nnunet_plain_tiny"  # write_plans_variant(backbone="nnunet_plain_tiny")
SHORT = "nnUNetTrainerSSL_short"


@dataclass
class E2E:
    """nnU-Net folders for the session's end-to-end runs; commands go through ``run_nnunet`` (logged)."""

    root: Path
    vars: dict[str, str]
    log: Path
    times: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment of an nnU-Net subprocess (PATH keeps the venv's nnUNetv2_* scripts)."""
        return {**{k: v for k, v in os.environ.items() if k not in SSL_ENV}, **self.vars}

    @property
    def raw(self) -> Path:
        return Path(self.vars["nnUNet_raw"])

    @property
    def preprocessed(self) -> Path:
        return Path(self.vars["nnUNet_preprocessed"])

    @property
    def results(self) -> Path:
        return Path(self.vars["nnUNet_results"])

    @contextmanager
    def active(self) -> Iterator["E2E"]:
        """The nnU-Net variables set in this process, for in-process steps (plans, pretraining, export)."""
        with pytest.MonkeyPatch.context() as mp:
            for k, v in self.vars.items():
                mp.setenv(k, v)
            for k in SSL_ENV:
                mp.delenv(k, raising=False)
            yield self

    def run(self, *args: object, plan: bool = False, **extra_env: str) -> str:
        from monai_ssl_plugin.workflows.nnunet_commands import run_nnunet

        env = self.env
        if plan:  # planning sets torch threads to nnUNet_n_proc_DA, which must not be 0 there
            env.pop("nnUNet_n_proc_DA", None)
        t = time.time()
        out = run_nnunet([str(a) for a in args], {**env, **extra_env}, self.log)
        self.times[f"{args[0]} {' '.join(map(str, args[1:4]))}"] = round(time.time() - t, 1)
        return out

    def run_unchecked(self, *args: object, **extra_env: str) -> tuple[int, str]:
        """Run a command expected to fail: (exit code, full output), also appended to the log."""
        exe = Path(sys.executable).parent / str(args[0])
        proc = subprocess.run([str(exe), *map(str, args[1:])], env={**self.env, **extra_env}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        with open(self.log, "a") as f:
            f.write(f"$ {' '.join(map(str, args))}\n{proc.stdout}\n")
        return proc.returncode, proc.stdout

    def timed(self, name: str, t0: float) -> None:
        self.times[name] = round(time.time() - t0, 1)


def e2e_vars(root: Path) -> dict[str, str]:
    from monai_ssl_plugin.workflows.nnunet_commands import nnunet_environment

    env = nnunet_environment(root, base={})
    return {**env, "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "nnUNet_compile": "false"}


def pretrain_mae(e2e: E2E, raw_dataset: Path, plans_file: Path, output_dir: Path, patch_size: list[int],
                 iterations: int = 4) -> Path:
    """Route (a)'s pretraining, the command docs/nnunet.md gives: ``python -m monai.bundle run`` of the
    mae_ssl_pretraining bundle on the raw dataset (imagesTr + imagesUnlabelled), each case preprocessed on
    the fly by nnU-Net's preprocessor with the target's own plans; plus a tiny budget for tests."""
    from monai_ssl_plugin.bundles import bundle_dir, train_configs

    configs = bundle_dir("mae_ssl_pretraining") / "configs"
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", train_configs(configs.parent),
            "--meta_file", configs / "metadata.json", "--dataset_dir", raw_dataset, "--output_dir", output_dir,
            "--plans", plans_file, "--patch_size", "[" + ",".join(map(str, patch_size)) + "]",
            # test budget (not in the documented command)
            "--batch_size", 2, "--train#trainer#max_epochs", 1, "--train#epoch_length", iterations,
            "--train#num_workers", 0, "--device", "cpu", "--quiet", "True"]
    t = time.time()
    proc = subprocess.run([str(a) for a in args], env=e2e.env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, cwd=output_dir.parent)
    with open(e2e.log, "a") as f:
        f.write(f"$ {' '.join(map(str, args))}\n{proc.stdout}\n")
    assert proc.returncode == 0, proc.stdout[-4000:]
    e2e.timed(f"pretrain {raw_dataset.name}", t)
    return output_dir / "checkpoints" / "final.pt"


def dice_per_label(prediction: np.ndarray, reference: np.ndarray, labels: list[int]) -> dict[int, float]:
    """Dice per foreground label (1.0 when both are empty)."""
    out = {}
    for label in labels:
        p, r = prediction == label, reference == label
        denom = p.sum() + r.sum()
        out[label] = 1.0 if denom == 0 else float(2 * np.logical_and(p, r).sum() / denom)
    return out


def assert_valid_predictions(raw: Path, predictions: Path) -> None:
    """Every test case has a prediction on the reference's grid with a finite Dice in [0, 1]."""
    import nibabel as nib

    labels = [v for k, v in json.loads((raw / "dataset.json").read_text())["labels"].items() if v != 0]
    refs = sorted((raw / "labelsTs").glob("*.nii.gz"))
    assert refs
    for ref in refs:
        prediction = np.asarray(nib.load(predictions / ref.name).dataobj)
        reference = np.asarray(nib.load(ref).dataobj)
        assert prediction.shape == reference.shape
        dice = float(np.mean(list(dice_per_label(prediction, reference, labels).values())))
        assert np.isfinite(dice) and 0.0 <= dice <= 1.0

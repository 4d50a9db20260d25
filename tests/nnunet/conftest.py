"""Fixtures for the nnU-Net tests: nnU-Net's folders in a tmp directory, set in this process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# one copy of the checkpoint / plans helpers, shared with tests/export
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "export"))
from nnunet_helpers import plans_copy, tiny_plans, write_checkpoint, write_preprocessed_dataset  # noqa: E402,F401

SSL_ENV = ("nnUNet_SSL_pretrained", "nnUNet_SSL_lr", "nnUNet_SSL_scratch_lr", "nnUNet_SSL_warmup_epochs",
           "nnUNet_SSL_epochs", "nnUNet_SSL_allow_normalization_mismatch")


def _nnunet_env(root: Path) -> dict[str, str]:
    from monai_ssl_plugin.nnunet import ext_trainer_dir

    env = {"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_results": str(root / "results")}
    for v in env.values():
        Path(v).mkdir(parents=True, exist_ok=True)
    # single-process data loading and export: small, deterministic, fast to start on 2 cores
    env.update({"nnUNet_extTrainer": ext_trainer_dir(), "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1",
                "nnUNet_compile": "false"})
    return env


@pytest.fixture
def nnunet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """nnU-Net's folders under ``tmp_path``, set in this process (function scope)."""
    env = _nnunet_env(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in SSL_ENV:
        monkeypatch.delenv(k, raising=False)
    return env


@pytest.fixture(scope="module")
def module_nnunet_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Like ``nnunet_env`` but shared by a module's tests (for the expensive end-to-end pipeline)."""
    env = _nnunet_env(tmp_path_factory.mktemp("nnunet"))
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for k in SSL_ENV:
            mp.delenv(k, raising=False)
        yield env


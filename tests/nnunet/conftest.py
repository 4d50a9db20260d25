"""Fixtures for the nnU-Net tests.

- ``nnunet_env``: nnU-Net's folders in a tmp directory, set in this process (unit tests).
- ``e2e`` (session): folders for the end-to-end runs with the real ``nnUNetv2_*`` commands;
  ``route_a`` (session): the shared route-(a) pipeline (plan, pretrain with the target's plans,
  export, fine-tune folds 0 and 1), whose checkpoint route (b) reuses on a new dataset.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

# one copy of the checkpoint / plans helpers, shared with tests/export
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "export"))
from nnunet_helpers import plans_copy, tiny_plans, write_checkpoint, write_preprocessed_dataset  # noqa: E402,F401

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nnunet_e2e import CONFIGURATION, SHORT, SSL_ENV, TINY_PLANS, E2E, e2e_vars, pretrain_mae  # noqa: E402


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


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    root = tmp_path_factory.mktemp("nnunet_e2e")
    session = E2E(root, e2e_vars(root), root / "nnunet_commands.log")
    yield session
    if session.times:
        print("\n[e2e] step timings (s):", json.dumps(session.times, indent=1))


@pytest.fixture(scope="session")
def route_a(e2e: E2E) -> SimpleNamespace:
    """Route (a) on Dataset951_RouteA (MRI, 6 labelled + 3 unlabelled + 1 test, 32^3): plan, tiny plans variant,
    MAE pretraining with those plans on all images, export, fine-tune folds 0 and 1 (in parallel).

    Route (b)'s target, Dataset952_RouteB (2 channels, another shape and spacing), is written and planned
    in the same nnUNetv2_plan_and_preprocess call (one start-up instead of two)."""
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset
    from monai_ssl_plugin.export.nnunet import export_nnunet
    from monai_ssl_plugin.nnunet.plans import write_plans_variant

    raw = make_synthetic_dataset(e2e.raw, 951, "RouteA", n_labelled=6, n_unlabelled=3, shape=(32, 32, 32), n_test=1)
    make_synthetic_dataset(e2e.raw, 952, "RouteB", n_labelled=5, n_unlabelled=0, n_channels=2, shape=(40, 36, 28),
                           spacing=(1.5, 1.5, 2.5), n_test=1, seed=3)
    e2e.run("nnUNetv2_plan_and_preprocess", "-d", 951, 952, "-c", CONFIGURATION, "-np", 1, "-npfp", 1, plan=True)
    with e2e.active():
        plans_file = write_plans_variant(951, backbone="nnunet_plain_tiny", configuration=CONFIGURATION,
                                         patch_size=[32, 32, 32], log=None)
    checkpoint = pretrain_mae(e2e, raw, plans_file, e2e.root / "pretraining_a", [32, 32, 32])
    with e2e.active():
        exported = export_nnunet(checkpoint, dataset=951, configuration=CONFIGURATION, plans_identifier=TINY_PLANS)
    with ThreadPoolExecutor(2) as pool:  # two folds at once: much of each run is start-up
        outputs = list(pool.map(lambda fold: e2e.run("nnUNetv2_train", 951, CONFIGURATION, fold, "-tr", SHORT, "-p",
                                                     TINY_PLANS, "-device", "cpu"), (0, 1)))
    preprocessed = e2e.preprocessed / raw.name
    return SimpleNamespace(raw=raw, preprocessed=preprocessed, plans_file=plans_file, checkpoint=checkpoint,
                           exported=exported, train_outputs=outputs,
                           model=e2e.results / raw.name / f"{SHORT}__{TINY_PLANS}__{CONFIGURATION}")

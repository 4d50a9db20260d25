"""Seeded fine-tuning (``nnUNet_SSL_seed``) through the real ``nnUNetv2_train``: same seed, same weights.

The twins of a paired comparison must differ only in their initialisation, so a seed has to fix the
random network init, the patch sampling and the augmentation. Runs on route (a)'s dataset with the
from-scratch short trainer (no pretrained file), single-process data loading (``nnUNet_n_proc_DA=0``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nnunet_e2e import CONFIGURATION, TINY_PLANS

pytestmark = pytest.mark.e2e
TRAINER = "nnUNetTrainerScratch_short"


def _train(e2e, results: Path, seed: str | None) -> dict[str, torch.Tensor]:
    env = {"nnUNet_results": str(results)} | ({"nnUNet_SSL_seed": seed} if seed is not None else {})
    out = e2e.run("nnUNetv2_train", 951, CONFIGURATION, 0, "-tr", TRAINER, "-p", TINY_PLANS, "-device", "cpu", **env)
    if seed is not None:
        assert f"[monai-ssl] seed {seed}" in out
    model = results / "Dataset951_RouteA" / f"{TRAINER}__{TINY_PLANS}__{CONFIGURATION}" / "fold_0"
    return torch.load(model / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]


def test_same_seed_same_weights_other_seed_other_weights(route_a, e2e, tmp_path: Path):
    first, again, other = (_train(e2e, tmp_path / name, seed) for name, seed in
                           (("a", "7"), ("b", "7"), ("c", "8")))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)  # bitwise: init, patches and augmentation
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_bad_seed_is_one_line_before_training(route_a, e2e, tmp_path: Path):
    code, out = e2e.run_unchecked("nnUNetv2_train", 951, CONFIGURATION, 0, "-tr", TRAINER, "-p", TINY_PLANS,
                                  "-device", "cpu", nnUNet_results=str(tmp_path), nnUNet_SSL_seed="lucky")
    assert code != 0 and "nnUNet_SSL_seed='lucky' is not a number" in out
    assert not any(tmp_path.rglob("checkpoint_*.pth"))

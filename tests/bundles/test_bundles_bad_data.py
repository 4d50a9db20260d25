"""The ``bad_data`` policy in every pretraining bundle: bad volumes are skipped with a reason, or refused.

One dataset, every ``bundles/*_ssl_pretraining``: an nnU-Net raw dataset (read with nnU-Net's
NibabelIO, which keeps NaN voxels; SimpleITK, the NIfTI default, turns them into 0) holding 3 good
volumes, a truncated (corrupt) file, a volume with NaN voxels, a constant volume and a volume smaller
than the patch. Under ``bad_data: skip`` each bundle trains a few steps with a tiny network and ends
with one line counting the 3 skipped cases (each with its reason) and the padded one; under
``bad_data: refuse`` the run stops before the first step with one ``PluginError`` naming the 3 bad
cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_ssl_plugin.data.dataset import RandomPatchDataset
from monai_ssl_plugin.data.sources import ArraySource
from monai_ssl_plugin.bundles import bundle_dir, list_bundles, train_configs
from monai_ssl_plugin.engine.run import pretrain
from monai_ssl_plugin.errors import PluginError
from tiny_bundle_overrides import EXTRA

pytestmark = pytest.mark.e2e

BUNDLES = [name for name in list_bundles() if name.endswith("_ssl_pretraining")]
PATCH = [32, 32, 32]
ITERATIONS = 4
# sorted case ids: a bad case that is drawn is replaced by the next cases in order, so drawing
# "bad_a_corrupt" meets all three bad ones; the seed below makes sure it (and the small case) is drawn
CASES = ["bad_a_corrupt", "bad_b_nan", "bad_c_constant", "good_0", "good_1", "good_2", "small"]
REASONS = {"bad_a_corrupt": "unreadable", "bad_b_nan": "NaN", "bad_c_constant": "constant"}


def _method(bundle: str) -> str:
    return bundle.removesuffix("_ssl_pretraining")


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory) -> Path:
    import nibabel as nib

    root = tmp_path_factory.mktemp("raw") / "Dataset995_BadData"
    images = root / "imagesUnlabelled"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for case in CASES:
        shape = (12, 12, 12) if case == "small" else (64, 64, 64)
        vol = rng.normal(size=shape).astype(np.float32)
        if case == "bad_b_nan":
            vol[5:9, 5:9, 5:9] = np.nan
        if case == "bad_c_constant":
            vol[:] = 3.0
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(images / f"{case}_0000.nii.gz"))
    corrupt = images / "bad_a_corrupt_0000.nii.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:3000])  # truncated mid-data
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0}, "numTraining": 0, "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "NibabelIO"}))
    return root


def _seed_meeting(cases: list[int], batch: int) -> int:
    """A seed whose run draws every case in ``cases`` (found with the bundles' own patch sampler)."""
    source = ArraySource([np.ones((1, 4, 4, 4), np.float32)] * len(CASES))
    for seed in range(200):
        drawn = RandomPatchDataset(source, [4, 4, 4], num_samples=batch * ITERATIONS, seed=seed)
        if set(cases) <= {drawn.sample(i)[0] for i in range(batch * ITERATIONS)}:
            return seed
    raise AssertionError("no seed draws every case")


def _overrides(bundle: str) -> dict:
    extra = EXTRA[_method(bundle)]
    batch = int(extra.get("batch_size", 2))
    seed = _seed_meeting([CASES.index("bad_a_corrupt"), CASES.index("small")], batch)
    return {"patch_size": PATCH, "batch_size": 2, "train#epoch_length": ITERATIONS, "train#trainer#max_epochs": 1,
            "train#num_workers": 0, "quiet": True, "seed": seed, **extra}


def test_every_pretraining_bundle_defines_the_policy():
    from monai.bundle import ConfigParser

    assert set(BUNDLES) == {f"{m}_ssl_pretraining" for m in EXTRA}, "add the new bundle to EXTRA"
    for bundle in BUNDLES:
        cfg = ConfigParser.load_config_files(train_configs(bundle))  # base.yaml + train.yaml, merged
        assert cfg["bad_data"] == "skip", bundle
        guard = cfg["train"]["patches"]["source"]
        assert guard["_target_"] == "monai_ssl_plugin.data.guard.GuardedSource" and guard["policy"] == "@bad_data"
        assert "@train#patches#source" in cfg["train"]["handlers"], f"{bundle}: the end-of-run count is not logged"


def test_every_pretraining_bundle_has_the_memory_switches():
    """Mixed precision and activation checkpointing are config switches of every bundle, kept by the overlay."""
    import yaml
    from monai.bundle import ConfigParser

    for bundle in BUNDLES:
        configs = bundle_dir(bundle) / "configs"
        cfg = ConfigParser.load_config_files(train_configs(bundle))
        assert cfg["amp"] is False and cfg["amp_dtype"] == "bfloat16", bundle
        assert cfg["activation_checkpointing"] is False, bundle
        assert "activation_checkpointing(@network_def, @activation_checkpointing)" in cfg["network"], bundle
        assert cfg["train"]["trainer"]["amp"] == "$ssl_run.as_bool(@amp)", bundle
        overlay = yaml.safe_load((configs / "multi_gpu_train.yaml").read_text())
        assert "activation_checkpointing(@network_def, @activation_checkpointing)" in overlay["network"], bundle


@pytest.mark.parametrize("bundle", BUNDLES)
def test_skip_trains_and_counts_bad_cases(bundle, bad_dataset, tmp_path, capfd):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    final = pretrain(bundle, bad_dataset, out, **_overrides(bundle))
    assert safe_iteration(final) == ITERATIONS
    logged = dict(line.split("\t", 1) for line in (out / "bad_data.tsv").read_text().splitlines())
    skipped = {c: r for c, r in logged.items() if not r.startswith("padded")}
    assert set(skipped) == set(REASONS), logged
    for case, word in REASONS.items():
        assert word in skipped[case], (case, skipped[case])
    assert logged["small"].startswith("padded")
    captured = capfd.readouterr()
    text = captured.err + captured.out
    summary = [line for line in text.splitlines() if "bad data: " in line]
    assert summary, text[-3000:]
    assert "bad data: 3 case(s) skipped of 7" in summary[-1] and "1 padded" in summary[-1], summary[-1]
    assert "policy skip" in summary[-1]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_refuse_fails_up_front_with_one_error(bundle, bad_dataset, tmp_path):
    torch.set_num_threads(1)
    with pytest.raises(PluginError) as e:
        pretrain(bundle, bad_dataset, tmp_path / "run", bad_data="refuse", **_overrides(bundle))
    text = str(e.value)
    assert "3 of 7 case(s) are unusable" in text and all(c in text for c in REASONS), text
    assert "\n" not in text and "bad_data: skip" in text
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before the first step


def safe_iteration(path: Path) -> int:
    from monai_ssl_plugin.checkpoint import safe_load

    return int(safe_load(path)["engine"]["iteration"])

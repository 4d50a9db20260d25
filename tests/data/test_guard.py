"""Bad-data policy: every bad kind is skipped (logged, counted) or refused in one line; check-data reports it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from monai_ssl_plugin.data.dataset import RandomPatchDataset
from monai_ssl_plugin.data.guard import GuardedSource, check_data, check_source, volume_problem
from monai_ssl_plugin.data.sources import NiftiFolderSource, UnlabelledSource, _info
from monai_ssl_plugin.errors import PluginError

PATCH = [8, 8, 8]


def _good(seed=0, shape=(1, 12, 12, 12)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _nan():
    v = _good(1)
    v[0, 3, 3, 3] = np.nan
    v[0, 4, 4, 4] = np.inf
    return v


BAD = {  # kind -> (volume or exception, expected words in the reason)
    "unreadable": (OSError("truncated gzip data"), "unreadable"),
    "nan_inf": (_nan(), "NaN or infinite"),
    "empty": (np.zeros((1, 0, 12, 12), np.float32), "empty"),
    "constant": (np.full((1, 12, 12, 12), 3.0, np.float32), "constant"),
    "wrong_ndim": (np.zeros((1, 12, 12), np.float32) + _good(2)[0, 0], "wrong dimensionality"),
    "flat_2d_in_3d": (_good(3, (1, 1, 12, 12)), "wrong dimensionality"),
}


class ListSource(UnlabelledSource):
    """Returns the given arrays as they are (or raises the given exception), no normalisation."""

    def __init__(self, items):
        self.items = items
        self.case_ids = [f"case_{i}" for i in range(len(items))]
        self.info = _info("arrays", spacing=None, normalization=["none"], in_channels=1, spatial_dims=3,
                          n_cases=len(items), description="test list")

    def load(self, i):
        item = self.items[i]
        if isinstance(item, Exception):
            raise item
        return np.array(item, dtype=np.float32)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_bad_kind_is_skipped_and_counted(kind, caplog, tmp_path):
    bad, words = BAD[kind]
    source = GuardedSource(ListSource([bad, _good(5)]), policy="skip", patch_size=PATCH, log_file=tmp_path / "bad.tsv")
    patches = RandomPatchDataset(source, PATCH, num_samples=6, seed=0, cache_size=0)
    with caplog.at_level(logging.WARNING, logger="monai_ssl_plugin.data.guard"):
        batch = torch.stack([patches[i]["image"] for i in range(6)])
    assert batch.shape == (6, 1, 8, 8, 8) and torch.isfinite(batch).all() and float(batch.std()) > 0.5
    assert list(source.skipped()) == ["case_0"] and words in source.skipped()["case_0"]
    warnings = [r.getMessage() for r in caplog.records if "Skipping case case_0" in r.getMessage()]
    assert len(warnings) == 1 and words in warnings[0]  # logged once, with its reason
    assert source.summary().startswith("bad data: 1 case(s) skipped of 2")
    assert (tmp_path / "bad.tsv").read_text().startswith("case_0\t")


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_bad_kind_is_refused_under_raise(kind):
    bad, words = BAD[kind]
    source = GuardedSource(ListSource([bad, _good(5)]), policy="raise", patch_size=PATCH)
    with pytest.raises(PluginError) as err:
        source.load(0)
    assert "case_0" in str(err.value) and words in str(err.value) and "\n" not in str(err.value)
    assert source.load(1).shape == (1, 12, 12, 12)


def test_small_volumes_are_padded_not_skipped(caplog):
    small = _good(4, (1, 5, 12, 12))
    source = GuardedSource(ListSource([small]), policy="raise", patch_size=PATCH)
    patches = RandomPatchDataset(source, PATCH, num_samples=2, seed=0)
    with caplog.at_level(logging.INFO, logger="monai_ssl_plugin.data.guard"):
        assert patches[0]["image"].shape == (1, 8, 8, 8)
    assert set(source.padded) == {"case_0"} and "zero-padded" in caplog.text and source.skipped() == {}


def test_all_bad_and_bad_policy_are_one_line_errors():
    source = GuardedSource(ListSource([BAD["constant"][0], BAD["nan_inf"][0]]), policy="skip", patch_size=PATCH)
    with pytest.raises(PluginError, match="Every case"):
        source.load(0)
    with pytest.raises(PluginError, match="not a policy"):
        GuardedSource(ListSource([_good()]), policy="ignore")


def test_volume_problem_and_check_source_report_every_kind():
    assert volume_problem(_good(), 3, PATCH) is None
    # unreadable files: the sources raise PluginError, which check_source lists (see the NIfTI test below)
    items = [v for k, (v, _) in BAD.items() if k != "unreadable"] + [_good(9)]
    problems = check_source(ListSource(items), patch_size=PATCH)
    assert len(problems) == len(BAD) - 1
    words = [w for k, (_, w) in BAD.items() if k != "unreadable"]
    assert all(any(w in p for p in problems) for w in words), problems


def test_nifti_folder_truncated_file_skip_and_check_data(tmp_path):
    import nibabel as nib

    for i in range(2):
        nib.save(nib.Nifti1Image(_good(i)[0], np.eye(4)), str(tmp_path / f"case_{i}.nii.gz"))
    nib.save(nib.Nifti1Image(np.full((12, 12, 12), 2.0, np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    # opening reads (and checks) up to 64 headers, so a damaged file among them is refused up front;
    # a file damaged after that (or beyond the first 64) is met at load time, where the guard skips it
    source = GuardedSource(NiftiFolderSource(tmp_path), policy="skip", patch_size=PATCH)
    data = (tmp_path / "case_1.nii.gz").read_bytes()
    (tmp_path / "case_1.nii.gz").write_bytes(data[: len(data) // 2])  # truncated
    for i in range(3):
        assert source.load(i).shape == (1, 12, 12, 12)
    skipped = source.skipped()
    assert set(skipped) == {"case_1", "flat"} and "unreadable" in skipped["case_1"]
    problems = check_data(tmp_path)  # the damaged file does not hide the other bad case: both, like the run
    assert len(problems) == 2 and "case_1" in problems[0] and "truncated" in problems[0]
    assert problems[1] == f"flat: {skipped['flat']}"


def test_mae_bundle_skips_bad_cases_and_counts_them(tmp_path, capfd):
    """The MAE bundle's `bad_data` switch: skip -> the run completes and logs the count; raise -> one line."""
    import nibabel as nib

    from monai_ssl_plugin.engine.run import pretrain

    torch.set_num_threads(1)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        nib.save(nib.Nifti1Image(_good(i, (1, 20, 20, 20))[0], np.eye(4)), str(data / f"good_{i}.nii.gz"))
    # (NaN voxels in a NIfTI file do not survive nnU-Net's SimpleITK reader; the unit tests above cover them)
    nib.save(nib.Nifti1Image(_good(7, (20, 20, 1)), np.eye(4)), str(data / "bad_flat.nii.gz"))  # a 2D slice
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), str(data / "bad_const.nii.gz"))
    fast = {"backbone": "nnunet_plain_tiny", "patch_size": [16, 16, 16], "batch_size": 2, "train#epoch_length": 8,
            "train#trainer#max_epochs": 1, "train#num_workers": 0, "quiet": True}
    final = pretrain("mae_ssl_pretraining", data, tmp_path / "run", **fast)  # the bundle's logging.conf logs to stderr
    assert final.is_file()
    lines = (tmp_path / "run" / "bad_data.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == ["bad_const", "bad_flat"]
    captured = capfd.readouterr()
    assert "bad data: 2 case(s) skipped of 4" in captured.err + captured.out
    with pytest.raises(PluginError, match="Bad case bad_"):
        pretrain("mae_ssl_pretraining", data, tmp_path / "run_raise", bad_data="raise", **fast)

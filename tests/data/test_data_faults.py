"""Fault injection on data: a folder with one file of every defect class among good ones.

``check-data`` and the run's guard must name the same cases for the same reasons, a bad file
never takes the good ones down (the 4D file sorts first on purpose), NaN/Inf voxels are never
turned into zeros, and every message names the right file.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from monai_ssl_plugin.data.guard import GuardedSource, check_data
from monai_ssl_plugin.data.sources import open_source
from monai_ssl_plugin.errors import PluginError

PATCH = [8, 8, 8]
GOOD = ["good_0", "good_1", "good_int"]
# case -> the words its problem must contain, in check-data and in the run's skip log alike
BAD = {
    "a_fourd": "wrong channel count",
    "nan": "NaN or infinite",
    "inf": "NaN or infinite",
    "slice": "wrong dimensionality",
    "twod": "wrong dimensionality",
    "constant": "constant",
    "truncated": "truncated",
}


def _save(folder, name, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(folder / f"{name}.nii.gz"))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    vol = lambda: rng.random((12, 12, 12)).astype(np.float32)  # noqa: E731
    for name in ("good_0", "good_1"):
        _save(tmp_path, name, vol())
    _save(tmp_path, "good_int", (rng.random((12, 12, 12)) * 1000).astype(np.int16))
    _save(tmp_path, "a_fourd", rng.random((12, 12, 12, 3)).astype(np.float32))
    nan, inf = vol(), vol()
    nan[1, 2, 3] = np.nan
    inf[4, 5, 6], inf[0, 0, 0] = np.inf, -np.inf
    _save(tmp_path, "nan", nan)
    _save(tmp_path, "inf", inf)
    _save(tmp_path, "slice", rng.random((12, 12, 1)).astype(np.float32))
    _save(tmp_path, "twod", rng.random((12, 12)).astype(np.float32))
    _save(tmp_path, "constant", np.full((12, 12, 12), 3.0, np.float32))
    _save(tmp_path, "truncated", vol())
    data = (tmp_path / "truncated.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    return tmp_path


def _case_of(line: str) -> str:
    head = line.split(": ")[0]
    return head.rsplit("/", 1)[-1].replace(".nii.gz", "")


def test_check_data_names_every_bad_case_and_no_good_one(folder):
    problems = check_data(folder)
    found = {_case_of(p): p for p in problems}
    assert set(found) == set(BAD), problems
    for case, words in BAD.items():
        assert words in found[case], found[case]
    assert found["inf"].endswith("(2 voxel(s))") and found["nan"].endswith("(1 voxel(s))")


def test_run_skips_the_same_cases_and_keeps_every_good_one(folder):
    source = open_source(folder)
    assert source.info["in_channels"] == 1  # the majority, not the 4D file that sorts first
    guard = GuardedSource(source, policy="skip", patch_size=PATCH)
    seen = set()
    for i in range(len(source)):
        vol = guard.load(i)
        assert np.isfinite(vol).all() and vol.shape[0] == 1 and min(vol.shape[1:]) == 12
        seen.add(next(c for c in GOOD if np.array_equal(vol, source.load(source.case_ids.index(c)))))
    assert seen == set(GOOD)
    skipped = guard.skipped()
    assert set(skipped) == set(BAD)
    for case, words in BAD.items():
        assert words in skipped[case], skipped[case]
    assert "7 case(s) skipped of 10" in guard.summary()


@pytest.mark.parametrize("case", sorted(BAD))
def test_raise_names_the_bad_file(folder, case):
    source = open_source(folder)
    guard = GuardedSource(source, policy="raise", patch_size=PATCH)
    with pytest.raises(PluginError) as err:
        guard.load(source.case_ids.index(case))
    text = str(err.value)
    assert "\n" not in text and f"Bad case {case}:" in text and BAD[case] in text
    assert not any(good in text for good in GOOD)


def test_refuse_lists_every_bad_case_up_front(folder):
    with pytest.raises(PluginError, match="7 of 10 case") as err:
        GuardedSource(open_source(folder), policy="refuse", patch_size=PATCH)
    assert "\n" not in str(err.value)


def test_nan_is_never_zeroed_silently(folder):
    """SimpleITK reads NaN as 0: the source refuses the case rather than return those zeros."""
    source = open_source(folder)
    with pytest.raises(PluginError, match="NaN or infinite values"):
        source.load(source.case_ids.index("nan"))


@pytest.fixture
def raw_dataset(tmp_path):
    """An nnU-Net raw dataset with 2 channels: 3 complete cases, one lacking _0001, one with an extra _0002."""
    images = tmp_path / "Dataset501_Faults" / "imagesTr"
    images.mkdir(parents=True)
    (images.parent / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0}, "numTraining": 5,
        "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(1)
    for case, channels in (("good_0", 2), ("good_1", 2), ("good_2", 2), ("lacks", 1), ("extra", 3)):
        for c in range(channels):
            _save(images, f"{case}_{c:04d}", rng.random((12, 12, 12)).astype(np.float32))
    return images.parent


RAW_BAD = {"lacks": "missing channel file(s) lacks_0001.nii.gz", "extra": "extra_0002.nii.gz beyond"}


def test_a_case_missing_a_channel_file_never_takes_the_dataset_down(raw_dataset):
    problems = check_data(raw_dataset)
    assert sorted(p.split(": ")[0] for p in problems) == sorted(RAW_BAD), problems
    for line in problems:
        assert RAW_BAD[line.split(": ")[0]] in line
    source = open_source(raw_dataset)
    assert source.info["in_channels"] == 2 and len(source) == 5
    guard = GuardedSource(source, policy="skip", patch_size=PATCH)
    assert all(guard.load(i).shape == (2, 12, 12, 12) for i in range(len(source)))
    assert {c: r for c, r in guard.skipped().items()} == {c: next(p.split(": ", 1)[1] for p in problems
                                                                   if p.startswith(c)) for c in RAW_BAD}
    for case, words in RAW_BAD.items():
        with pytest.raises(PluginError) as err:
            GuardedSource(source, policy="raise", patch_size=PATCH).load(source.case_ids.index(case))
        assert f"Bad case {case}:" in str(err.value) and words in str(err.value) and "good_" not in str(err.value)
    with pytest.raises(PluginError, match="2 of 5 case"):
        GuardedSource(source, policy="refuse", patch_size=PATCH)

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_ssl_plugin.data.nnunet_raw import nifti_affine, save_nifti
from monai_ssl_plugin.data.guard import check_data, check_source
from monai_ssl_plugin.data.sources import (ArraySource, NiftiFolderSource, NnUNetRawSource,
                                           open_source)
from monai_ssl_plugin.errors import PluginError

INFO_KEYS = {"kind", "axis_order", "spacing", "normalization", "in_channels", "spatial_dims", "n_cases",
             "description"}


def _write(path: Path, array: np.ndarray, spacing=(1.0, 2.0, 3.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_nifti(array, nifti_affine(spacing), path)


def _zscore(a: np.ndarray) -> np.ndarray:
    return (a - a.mean()) / a.std()


def test_nifti_folder_axis_order_matches_nibabel_transposed(tmp_path: Path):
    rng = np.random.default_rng(0)
    vols = [rng.normal(5, 2, (7, 6, 5)).astype(np.float32) for _ in range(2)]
    _write(tmp_path / "b.nii.gz", vols[1])
    _write(tmp_path / "a.nii", vols[0])
    src = open_source(tmp_path)
    assert isinstance(src, NiftiFolderSource) and src.case_ids == ["a", "b"] and len(src) == 2
    assert INFO_KEYS <= set(src.info)
    assert src.info["kind"] == "nifti_folder" and src.info["axis_order"] == "nnunet"
    assert src.info["spacing"] == [3.0, 2.0, 1.0]  # (z, y, x)
    assert src.info["normalization"] == ["ZScoreNormalization"] and src.info["in_channels"] == 1
    for i, name in enumerate(["a.nii", "b.nii.gz"]):
        nib_xyz = nib.load(tmp_path / name).get_fdata()
        out = src.load(i)
        assert out.shape == (1, 5, 6, 7) and out.dtype == np.float32
        np.testing.assert_allclose(out[0], _zscore(nib_xyz.transpose(2, 1, 0)), atol=1e-5)


def test_nifti_folder_groups_channel_suffixes(tmp_path: Path):
    rng = np.random.default_rng(1)
    for case in ("p1", "p2"):
        for ch in range(2):
            _write(tmp_path / f"{case}_{ch:04d}.nii.gz", rng.normal(size=(4, 5, 6)).astype(np.float32) + 10 * ch)
    src = open_source(tmp_path)
    assert src.case_ids == ["p1", "p2"] and src.info["in_channels"] == 2
    vol = src.load(1)
    assert vol.shape == (2, 6, 5, 4)
    np.testing.assert_allclose(vol.mean(axis=(1, 2, 3)), 0, atol=1e-5)  # each channel normalised on its own
    (tmp_path / "p2_0001.nii.gz").unlink()
    src = open_source(tmp_path)  # one incomplete case does not refuse the folder
    assert src.case_ids == ["p1", "p2"] and src.info["in_channels"] == 2 and src.load(0).shape == (2, 6, 5, 4)
    with pytest.raises(PluginError, match="p2_0001.nii.gz"):
        src.load(1)


def test_raw_dataset_cases_and_test_split(synthetic_raw_dataset: Path):
    src = open_source(synthetic_raw_dataset)
    assert isinstance(src, NnUNetRawSource) and src.info["kind"] == "nnunet_raw"
    assert len(src) == 7 and src.info["case_counts"] == {"imagesTr": 4, "imagesUnlabelled": 3}
    assert "case_000" in src.case_ids and "unlabelled_002" in src.case_ids
    assert src.info["spacing"] == [2.0, 2.0, 2.0] and src.info["dataset_name"] == "Dataset990_Synthetic"
    i = src.case_ids.index("unlabelled_001")
    raw = nib.load(synthetic_raw_dataset / "imagesUnlabelled/unlabelled_001_0000.nii.gz").get_fdata()
    np.testing.assert_allclose(src.load(i)[0], _zscore(raw.transpose(2, 1, 0)), atol=1e-5)
    json.dumps(src.info)  # plain types: it goes into checkpoints
    with_test = open_source(synthetic_raw_dataset, include_test=True)
    assert len(with_test) == 9 and "test_001" in with_test.case_ids


def test_array_source_and_check_source():
    vols = [np.random.default_rng(i).normal(3, 2, (2, 8, 8, 8)) for i in range(3)]
    src = ArraySource(vols, spacing=[1, 1, 1])
    assert src.info["kind"] == "arrays" and src.info["in_channels"] == 2 and len(src) == 3
    np.testing.assert_allclose(src.load(0).std(axis=(1, 2, 3)), 1, atol=1e-5)
    assert check_source(src) == []
    assert check_source(ArraySource([np.ones((1, 4, 4, 4))], normalize=False)) == ["case_000: a channel is constant (no signal)"]
    with pytest.raises(PluginError, match="differ"):
        ArraySource([np.zeros((1, 4, 4, 4)), np.zeros((2, 4, 4, 4))])


# -- errors: each one PluginError, one line ----------------------------------------------------
def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Fix:" in msg
    return msg


def test_missing_path_and_empty_folder(tmp_path: Path):
    with pytest.raises(PluginError, match="does not exist") as e:
        open_source(tmp_path / "nope")
    _one_line(e)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(PluginError, match="No images found") as e:
        open_source(tmp_path)
    _one_line(e)


def test_corrupt_and_truncated_nifti_are_named(tmp_path: Path):
    good = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    _write(tmp_path / "ok.nii.gz", good)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti at all")
    # opening leaves a damaged header out of the spacing (the bad_data policy decides at load time);
    # loading the case names the file
    src = open_source(tmp_path)
    with pytest.raises(PluginError, match="broken.nii.gz") as e:
        src.load(src.case_ids.index("broken"))
    assert "check-data" in _one_line(e)
    # truncated gzip: SimpleITK would silently zero-fill it; we refuse
    (tmp_path / "broken.nii.gz").write_bytes((tmp_path / "ok.nii.gz").read_bytes()[:2000])
    with pytest.raises(PluginError, match="broken.nii.gz: truncated"):
        open_source(tmp_path).load(0)
    assert open_source(tmp_path).load(1).shape == (1, 16, 16, 16)
    # a folder whose every header is damaged is refused when it is opened
    (tmp_path / "ok.nii.gz").rename(tmp_path / "ok.bak")
    with pytest.raises(PluginError, match="broken.nii.gz: truncated"):
        open_source(tmp_path)
    (tmp_path / "ok.bak").rename(tmp_path / "ok.nii.gz")
    problems = check_data(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(str(tmp_path / "broken.nii.gz"))
    (tmp_path / "broken.nii.gz").unlink()
    assert check_data(tmp_path) == []


def test_corrupt_file_found_at_load_time(tmp_path: Path, synthetic_raw_dataset: Path):
    raw = tmp_path / synthetic_raw_dataset.name
    shutil.copytree(synthetic_raw_dataset, raw)
    src = open_source(raw)  # headers of all cases are read here
    victim = raw / "imagesUnlabelled/unlabelled_000_0000.nii.gz"
    victim.write_bytes(victim.read_bytes()[:1500])  # damaged after opening
    with pytest.raises(PluginError, match="unlabelled_000_0000.nii.gz") as e:
        src.load(src.case_ids.index("unlabelled_000"))
    _one_line(e)
    assert [p.split(":")[0] for p in check_data(raw)] == [str(victim)]


def test_plans_without_configuration_and_preprocessed_without_data(tmp_nnunet_env, synthetic_raw_dataset: Path):
    pre = tmp_nnunet_env.preprocessed / "Dataset990_Synthetic"
    pre.mkdir()
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {}, "_kw_requires_import": []}
    plans = {"dataset_name": "Dataset990_Synthetic", "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
             "transpose_backward": [0, 1, 2], "original_median_spacing_after_transp": [2.0, 2.0, 2.0],
             "configurations": {"2d": {"data_identifier": "nnUNetPlans_2d", "spacing": [2.0, 2.0],
                                       "patch_size": [24, 24], "normalization_schemes": ["ZScoreNormalization"],
                                       "architecture": arch}}}
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    with pytest.raises(PluginError, match=r"no configuration '3d_fullres'.*\['2d'\]") as e:
        open_source(pre)
    _one_line(e)
    with pytest.raises(PluginError, match=r"no configuration '3d_fullres'.*\['2d'\]"):
        open_source(synthetic_raw_dataset, plans=pre / "nnUNetPlans.json")
    with pytest.raises(PluginError, match=r"nnUNetv2_plan_and_preprocess -d 990 -c 2d") as e:
        open_source(pre, configuration="2d")
    _one_line(e)
    # by id, resolved in $nnUNet_preprocessed
    with pytest.raises(PluginError, match=r"-d 990 -c 2d"):
        open_source(990, configuration="2d")
    with pytest.raises(PluginError, match="not found in"):
        open_source("Dataset123_Missing")
    with pytest.raises(PluginError, match="No plans nnUNetResEncUNetMPlans.json"):
        open_source(pre, plans_identifier="nnUNetResEncUNetMPlans")

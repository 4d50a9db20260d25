import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_ssl_plugin.data.nnunet_raw import RawDatasetWriter, dataset_folder_name, write_raw_dataset
from monai_ssl_plugin.errors import PluginError

LABELS = {"background": 0, "a": 1}


def _case(seed: int, shape=(6, 5, 4), channels=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(channels, *shape)).astype(np.float32), rng.integers(0, 2, shape).astype(np.uint8)


def test_folder_name_and_bad_names():
    assert dataset_folder_name(7, "Brain") == "Dataset007_Brain"
    with pytest.raises(PluginError, match="out of range"):
        dataset_folder_name(1000, "X")
    with pytest.raises(PluginError, match="characters"):
        dataset_folder_name(5, "a b")


def test_layout_and_dataset_json(tmp_path: Path):
    img, lab = _case(0, channels=2)
    out = write_raw_dataset(tmp_path, 12, "Toy", ["T1", "T2"], LABELS, [("c0", img, lab)],
                            unlabelled=[("u0", img)], test=[("t0", img, None)], spacing=(1.0, 2.0, 3.0))
    assert out == tmp_path / "Dataset012_Toy"
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["dataset.json", "imagesTr/c0_0000.nii.gz", "imagesTr/c0_0001.nii.gz",
                     "imagesTs/t0_0000.nii.gz", "imagesTs/t0_0001.nii.gz", "imagesUnlabelled/u0_0000.nii.gz",
                     "imagesUnlabelled/u0_0001.nii.gz", "labelsTr/c0.nii.gz"]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1", "1": "T2"}
    assert meta["labels"] == LABELS and meta["numTraining"] == 1 and meta["file_ending"] == ".nii.gz"
    nii = nib.load(out / "imagesTr/c0_0001.nii.gz")
    assert nii.header.get_zooms() == (1.0, 2.0, 3.0)
    np.testing.assert_allclose(nii.get_fdata(), img[1], rtol=1e-6)
    assert nib.load(out / "labelsTr/c0.nii.gz").get_data_dtype() == np.uint8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_crash_leaves_nothing(tmp_path: Path):
    img, lab = _case(0)
    with pytest.raises(RuntimeError, match="boom"):
        with RawDatasetWriter(tmp_path, 3, "Crash", ["CT"], LABELS) as w:
            w.add_case("train", "c0", img, lab)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_different_dataset(tmp_path: Path):
    img, lab = _case(0)
    first = write_raw_dataset(tmp_path, 4, "Same", ["CT"], LABELS, [("c0", img, lab)])
    stamp = (first / "dataset.json").stat().st_mtime_ns
    # identical content: accepted, existing files kept
    write_raw_dataset(tmp_path, 4, "Same", ["CT"], LABELS, [("c0", img, lab)])
    assert (first / "dataset.json").stat().st_mtime_ns == stamp
    img2, lab2 = _case(1)
    with pytest.raises(PluginError, match="already holds a different dataset"):
        write_raw_dataset(tmp_path, 4, "Same", ["CT"], LABELS, [("c0", img2, lab2)])
    np.testing.assert_allclose(nib.load(first / "imagesTr/c0_0000.nii.gz").get_fdata(), img[0], rtol=1e-6)
    write_raw_dataset(tmp_path, 4, "Same", ["CT"], LABELS, [("c0", img2, lab2)], overwrite=True)
    np.testing.assert_allclose(nib.load(first / "imagesTr/c0_0000.nii.gz").get_fdata(), img2[0], rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset004_Same"]


def test_bad_input_is_one_plugin_error(tmp_path: Path):
    img, lab = _case(0)
    write_raw_dataset(tmp_path, 5, "First", ["CT"], LABELS, [("c0", img, lab)])
    with pytest.raises(PluginError, match="already used by Dataset005_First"):
        RawDatasetWriter(tmp_path, 5, "Second", ["CT"], LABELS)
    with pytest.raises(PluginError, match="background"):
        RawDatasetWriter(tmp_path, 6, "X", ["CT"], {"a": 1})
    with RawDatasetWriter(tmp_path, 6, "X", ["CT"], LABELS) as w:
        with pytest.raises(PluginError, match="not in labels"):
            w.add_case("train", "c0", img, lab + 3)
        with pytest.raises(PluginError, match="has no label"):
            w.add_case("train", "c0", img)
        with pytest.raises(PluginError, match="C=1"):
            w.add_case("unlabelled", "u0", np.zeros((2, 4, 4, 4)))
        with pytest.raises(PluginError, match="No cases"):
            w.commit()
    assert not (tmp_path / "Dataset006_X").exists()

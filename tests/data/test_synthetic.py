import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_ssl_plugin.data.synthetic import make_synthetic_dataset, make_synthetic_volumes
from monai_ssl_plugin.errors import PluginError


def test_volumes_are_deterministic_with_two_organs():
    images, labels = make_synthetic_volumes(3, (20, 20, 20), seed=4, with_labels=True)
    assert images.shape == (3, 1, 20, 20, 20) and images.dtype == np.float32
    assert labels.shape == (3, 20, 20, 20) and labels.dtype == np.uint8
    assert all(set(np.unique(lab)) == {0, 1, 2} for lab in labels)
    np.testing.assert_array_equal(images, make_synthetic_volumes(3, (20, 20, 20), seed=4))
    assert not np.array_equal(images, make_synthetic_volumes(3, (20, 20, 20), seed=5))
    assert not np.array_equal(images[0], images[1])
    # organs are brighter or darker than the body they sit in
    body = images[0, 0][(labels[0] == 0) & (images[0, 0] > 50)].mean()
    assert abs(images[0, 0][labels[0] == 1].mean() - body) > 20


def test_ct_is_in_hounsfield_units_and_multichannel_mri_differs():
    ct, lab = make_synthetic_volumes(1, (24, 24, 24), modality="CT", with_labels=True)
    assert ct.min() <= -990 and ct[0, 0][lab[0] == 2].mean() > 500  # air and bone
    mri = make_synthetic_volumes(1, (16, 16, 16), n_channels=3)
    assert mri.shape == (1, 3, 16, 16, 16) and not np.allclose(mri[0, 0], mri[0, 1])
    assert make_synthetic_volumes(2, (16, 12)).shape == (2, 1, 16, 12)  # 2D works too
    with pytest.raises(PluginError, match="modality"):
        make_synthetic_volumes(1, modality="PET")


def test_dataset_layout_ct_two_channels(tmp_path: Path):
    out = make_synthetic_dataset(tmp_path, dataset_id=993, name="Ct2", n_labelled=2, n_unlabelled=1, n_test=1,
                                 shape=(12, 10, 8), spacing=(1.0, 1.0, 2.5), n_channels=2, modality="CT")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT", "1": "CT"} and meta["numTraining"] == 2
    assert meta["labels"] == {"background": 0, "organ": 1, "bone": 2}
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "case_000_0000.nii.gz", "case_000_0001.nii.gz", "case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert len(list((out / "imagesUnlabelled").iterdir())) == 2 and len(list((out / "labelsTs").iterdir())) == 1
    img = nib.load(out / "imagesTr/case_000_0000.nii.gz")
    assert img.shape == (12, 10, 8) and img.get_data_dtype() == np.int16
    assert img.header.get_zooms() == (1.0, 1.0, 2.5)
    # same call again: a no-op; other parameters on the same folder: refused
    assert make_synthetic_dataset(tmp_path, dataset_id=993, name="Ct2", n_labelled=2, n_unlabelled=1, n_test=1,
                                  shape=(12, 10, 8), spacing=(1.0, 1.0, 2.5), n_channels=2, modality="CT") == out
    with pytest.raises(PluginError, match="different dataset"):
        make_synthetic_dataset(tmp_path, dataset_id=993, name="Ct2", n_labelled=1, n_unlabelled=0,
                               shape=(12, 10, 8), modality="CT")

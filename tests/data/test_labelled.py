"""Labelled cases read as pretraining reads images: the three layouts, aligned labels, one-line errors."""

import shutil

import numpy as np
import pytest

from monai_ssl_plugin.data.labelled import labelled_case_ids, labelled_folders, read_labelled
from monai_ssl_plugin.errors import PluginError


def test_raw_dataset_its_labels_folder_and_a_plain_pair_give_the_same_cases(synthetic_raw_dataset, tmp_path):
    ids = labelled_case_ids(synthetic_raw_dataset)
    assert ids == [f"case_{i:03d}" for i in range(4)]  # the labelled ones; unlabelled and test images are not
    assert labelled_case_ids(synthetic_raw_dataset / "labelsTr") == ids
    labels = tmp_path / "my_labels"
    shutil.copytree(synthetic_raw_dataset / "labelsTr", labels)
    (labels / "case_003.nii.gz").unlink()
    assert labelled_case_ids(labels, synthetic_raw_dataset / "imagesTr") == ids[:3]
    case, image, label = next(read_labelled(synthetic_raw_dataset, case_ids=["case_002"]))
    assert case == "case_002" and image.dtype == np.float32 and image.shape[1:] == label.shape
    assert abs(float(image.mean())) < 1e-3 and label.max() >= 1  # z-scored like pretraining, and labelled


def test_errors_name_the_problem(synthetic_raw_dataset, tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        labelled_folders(tmp_path / "nowhere")
    (tmp_path / "labels").mkdir()
    with pytest.raises(PluginError, match="No images folder"):
        labelled_folders(tmp_path / "labels")
    with pytest.raises(PluginError, match="Case case_999 has no image"):
        list(read_labelled(synthetic_raw_dataset, case_ids=["case_999"]))

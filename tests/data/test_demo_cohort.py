import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_ssl_plugin.data.demo_cohort import make_demo_dataset
from monai_ssl_plugin.data.sources import open_source


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    threads = torch.get_num_threads()
    out = make_demo_dataset(tmp_path_factory.mktemp("demo_raw"), n_labelled=2, n_unlabelled=2, n_test=1,
                            spacing=4.0, seed=3, atrophy_fraction=0.5, lesion_fraction=1.0)
    assert torch.get_num_threads() == threads  # the generator runs single-threaded and restores this
    return out


def test_layout_shape_and_labels(tiny_cohort: Path):
    meta = json.loads((tiny_cohort / "dataset.json").read_text())
    assert tiny_cohort.name == "Dataset501_MNIBrainTissue"
    assert meta["channel_names"] == {"0": "T1"} and meta["numTraining"] == 2
    assert meta["labels"] == {"background": 0, "grey_matter": 1, "white_matter": 2, "lesion": 3}
    img = nib.load(tiny_cohort / "imagesTr/brain_000_0000.nii.gz")
    assert img.shape == (40, 48, 48) and img.header.get_zooms() == (4.0, 4.0, 4.0)
    lab = np.asarray(nib.load(tiny_cohort / "labelsTr/brain_000.nii.gz").dataobj)
    assert {0, 1, 2} <= set(np.unique(lab).tolist())
    for cls in (1, 2):
        assert (lab == cls).mean() > 0.05  # grey and white matter are substantial
    data = img.get_fdata()
    assert data[lab > 0].mean() > 3 * data[lab == 0].mean()  # the brain in the image is where the labels are
    assert len(list((tiny_cohort / "imagesUnlabelled").iterdir())) == 2
    assert len(list((tiny_cohort / "imagesTs").iterdir())) == 1


def test_subjects_differ_and_attributes_recorded(tiny_cohort: Path):
    labs = [np.asarray(nib.load(tiny_cohort / f"labelsTr/brain_{i:03d}.nii.gz").dataobj) for i in range(2)]
    assert (labs[0] != labs[1]).mean() > 0.02  # different deformations
    attrs = json.loads((tiny_cohort / "attributes.json").read_text())
    assert set(attrs) == {"brain_000", "brain_001", "brain_u000", "brain_u001", "brain_t000"}
    a = attrs["brain_000"]
    assert {"atrophy", "brain_volume_ml", "gm_volume_ml", "n_lesions", "split"} <= set(a)
    assert a["split"] == "train" and 500 < a["brain_volume_ml"] < 3000
    assert all(v["n_lesions"] >= 1 for v in attrs.values())  # lesion_fraction=1


def test_readable_as_source(tiny_cohort: Path):
    src = open_source(tiny_cohort)
    assert len(src) == 4 and src.info["spacing"] == [4.0, 4.0, 4.0]
    vol = src.load(0)
    assert vol.shape == (1, 48, 48, 40)  # nnU-Net's (z, y, x)
    assert abs(float(vol.mean())) < 1e-3 and abs(float(vol.std()) - 1) < 1e-3


def test_scanner_heterogeneity_changes_contrast_and_is_recorded(tmp_path: Path):
    out = make_demo_dataset(tmp_path, n_labelled=6, n_unlabelled=0, n_test=0, spacing=4.0, seed=1,
                            contrasts=("T1", "T2", "FLAIR"), thick_slice_fraction=0.5)
    meta = json.loads((out / "dataset.json").read_text())
    attrs = json.loads((out / "attributes.json").read_text())
    assert meta["channel_names"] == {"0": "MRI"}
    assert {a["contrast"] for a in attrs.values()} <= {"T1", "T2", "FLAIR"} and len(
        {a["contrast"] for a in attrs.values()}) > 1
    for case, a in attrs.items():
        img = nib.load(out / f"imagesTr/{case}_0000.nii.gz").get_fdata()
        lab = np.asarray(nib.load(out / f"labelsTr/{case}.nii.gz").dataobj)
        gm, wm = img[lab == 1].mean(), img[lab == 2].mean()
        # tissue order follows the contrast: white brighter than grey in T1, darker in T2 and FLAIR
        assert (wm > gm) == (a["contrast"] == "T1"), (case, a["contrast"], gm, wm)
    assert any(a["thick_slice_axis"] is not None for a in attrs.values())


def test_t1_only_cohort_is_unchanged_by_the_scanner_option(tmp_path: Path):
    a = make_demo_dataset(tmp_path / "a", n_labelled=1, n_unlabelled=0, n_test=0, spacing=4.0, seed=2)
    b = make_demo_dataset(tmp_path / "b", n_labelled=1, n_unlabelled=0, n_test=0, spacing=4.0, seed=2,
                          contrasts=("T1",), thick_slice_fraction=0.0)
    img = [np.asarray(nib.load(d / "imagesTr/brain_000_0000.nii.gz").dataobj) for d in (a, b)]
    assert np.array_equal(img[0], img[1])


def test_unknown_contrast_is_one_line(tmp_path: Path):
    from monai_ssl_plugin.errors import PluginError

    with pytest.raises(PluginError, match="Unknown contrast"):
        make_demo_dataset(tmp_path, contrasts=("PD",))

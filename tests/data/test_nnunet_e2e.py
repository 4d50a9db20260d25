"""The real nnU-Net pipeline on our synthetic data: planning accepts it, our sources read its output."""

import json
import pickle

import numpy as np
import pytest

from monai_ssl_plugin.data.dataset import RandomPatchDataset
from monai_ssl_plugin.data.sources import NnUNetPreprocessedSource, open_source

pytestmark = pytest.mark.e2e


def test_nnunet_plans_ct_normalisation_for_synthetic_ct(preprocessed_nnunet_env):
    pre = preprocessed_nnunet_env.preprocessed / "Dataset991_SyntheticCT"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    conf = plans["configurations"]["3d_fullres"]
    assert conf["normalization_schemes"] == ["CTNormalization"]
    assert conf["spacing"] == [3.0, 1.5, 1.5]  # nnU-Net's (z, y, x)
    assert sorted(p.name for p in (pre / "nnUNetPlans_3d_fullres").glob("*.pkl")) == [
        f"case_{i:03d}.pkl" for i in range(5)]  # imagesUnlabelled is ignored by nnU-Net


def test_preprocessed_source_by_path_id_and_data_folder(preprocessed_nnunet_env, monkeypatch):
    env = preprocessed_nnunet_env.apply(monkeypatch)
    folder = env.preprocessed / "Dataset991_SyntheticCT"
    src = open_source(folder)
    assert isinstance(src, NnUNetPreprocessedSource)
    info = src.info
    assert info["kind"] == "nnunet_preprocessed" and info["axis_order"] == "nnunet"
    assert info["normalization"] == ["CTNormalization"] and info["spacing"] == [3.0, 1.5, 1.5]
    assert info["configuration"] == "3d_fullres" and info["dataset_name"] == "Dataset991_SyntheticCT"
    assert info["plans_file"] == str(folder / "nnUNetPlans.json") and info["in_channels"] == 1
    assert src.case_ids == [f"case_{i:03d}" for i in range(5)]
    json.dumps(info)
    vol = src.load(0)
    assert vol.dtype == np.float32 and vol.shape == (1, 24, 32, 32)
    assert open_source(991).case_ids == src.case_ids
    assert open_source("Dataset991_SyntheticCT").info["plans_file"] == info["plans_file"]
    assert open_source(folder / "nnUNetPlans_3d_fullres").info["configuration"] == "3d_fullres"
    patches = RandomPatchDataset(src, (16, 16, 16), num_samples=4)
    assert patches[3]["image"].shape == (1, 16, 16, 16)


def test_raw_with_plans_equals_nnunet_preprocessing(preprocessed_nnunet_env):
    env = preprocessed_nnunet_env
    pre = open_source(env.preprocessed / "Dataset991_SyntheticCT")
    raw = open_source(env.raw / "Dataset991_SyntheticCT", plans=env.preprocessed / "Dataset991_SyntheticCT")
    assert raw.info["kind"] == "nnunet_raw" and raw.info["normalization"] == ["CTNormalization"]
    assert raw.info["spacing"] == pre.info["spacing"] and raw.info["configuration"] == "3d_fullres"
    assert len(raw) == 7  # 5 labelled + 2 unlabelled, all through nnU-Net's preprocessor
    for case in ("case_000", "case_003"):
        np.testing.assert_allclose(raw.load(raw.case_ids.index(case)), pre.load(pre.case_ids.index(case)),
                                   atol=1e-5)
    assert raw.load(raw.case_ids.index("unlabelled_001")).shape == (1, 24, 32, 32)
    for src in (raw, pre):  # DataLoader workers started with "spawn" receive the source pickled
        clone = pickle.loads(pickle.dumps(src))
        np.testing.assert_array_equal(clone.load(1), src.load(1))

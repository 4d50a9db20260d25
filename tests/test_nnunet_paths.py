"""nnU-Net's folder conventions: dataset ids and names, the preprocessed folder, where exports go."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet_paths import (dataset_id, dataset_prefix, preprocessed_dataset_dir, pretrained_file_path,
                                           results_folder)


def test_dataset_ids_and_names():
    assert dataset_id("Dataset501_MNIBrainTissue") == 501 and dataset_id("Dataset007_X") == 7
    assert dataset_id("Task501_Old") is None and dataset_id("Dataset5_X") is None
    assert dataset_prefix(7) == dataset_prefix("7") == "Dataset007_" and dataset_prefix("Dataset007_X") == "Dataset007_X"


def test_folders_follow_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    with pytest.raises(PluginError, match="nnUNet_preprocessed is not set"):
        pretrained_file_path("Dataset501_X")
    pre, raw = tmp_path / "pre", tmp_path / "raw"
    (pre / "Dataset501_X").mkdir(parents=True)
    (raw / "Dataset502_Y").mkdir(parents=True)
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    assert preprocessed_dataset_dir(501) == preprocessed_dataset_dir("Dataset501_X") == pre / "Dataset501_X"
    with pytest.raises(PluginError, match=r"in nnUNet_raw .* but not preprocessed.*-d 502 "):
        preprocessed_dataset_dir("502")
    assert pretrained_file_path("Dataset501_X", "3d_lowres", "P") == pre / "Dataset501_X/ssl_pretrained/P__3d_lowres.pth"
    assert results_folder("Dataset501_X", "T", "P", "3d_fullres") == tmp_path / "res/Dataset501_X/T__P__3d_fullres"
    other = {"nnUNet_results": str(tmp_path / "other")}  # a subprocess's environment, not this process's
    assert results_folder("Dataset501_X", "T", "P", "2d", other) == tmp_path / "other/Dataset501_X/T__P__2d"
    with pytest.raises(PluginError, match="nnUNet_results is not set"):
        results_folder("Dataset501_X", "T", "P", "2d", {})


def test_environment_sets_the_three_folders_and_restores_them(tmp_path, monkeypatch):
    from monai_ssl_plugin.nnunet_paths import PATH_VARS, RESULTS, dataset_folder, environment

    monkeypatch.setenv(RESULTS, "/before")
    monkeypatch.delenv("nnUNet_raw", raising=False)
    env = {var: str(tmp_path / var) for var in PATH_VARS}
    with environment(env):
        assert {var: os.environ[var] for var in PATH_VARS} == env
        assert dataset_folder(RESULTS, "Dataset501_X") == tmp_path / RESULTS / "Dataset501_X"
    assert os.environ[RESULTS] == "/before" and "nnUNet_raw" not in os.environ
    assert dataset_folder("nnUNet_raw", "Dataset501_X", env) == tmp_path / "nnUNet_raw" / "Dataset501_X"
    with pytest.raises(PluginError, match="nnUNet_raw is not set"):
        dataset_folder("nnUNet_raw", "Dataset501_X")

"""Reading unlabelled volumes the way a target MONAI bundle reads its training data (``read_like``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monai_bundles"))
from zoo_shaped import write_zoo_bundle  # noqa: E402

from monai_ssl_plugin.checkpoint import safe_load  # noqa: E402
from monai_ssl_plugin.data.consumer import ConsumerReadSource, call_kwargs, open_data  # noqa: E402
from monai_ssl_plugin.errors import PluginError  # noqa: E402
from monai_ssl_plugin.monai_bundles import write_overlay  # noqa: E402
from monai_ssl_plugin.monai_bundles.demo_data import make_lesion_dataset  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_lesion_dataset(tmp_path_factory.mktemp("lesions"), n_cases=3, n_val=1, size=32)


def test_reads_like_the_bundle_and_records_it(tmp_path, data):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, ScaleIntensityRanged, Spacingd

    bundle = write_zoo_bundle(tmp_path / "spleen", "unet", str(data))
    src = open_data(data / "imagesTr", read_like=bundle)
    assert isinstance(src, ConsumerReadSource) and len(src) == 3
    info = src.info
    assert info["axis_order"] == "monai" and info["spacing"] == [1.5, 1.5, 2.0]
    assert info["normalization"] == ["ScaleIntensityRanged"] and info["in_channels"] == 1
    assert info["consumer_network"]["class"] == "UNet" and info["consumer_network"]["kwargs"]["channels"] == [8, 16, 32, 64]
    # the random flip, the resize and the label's transforms are left out; the rest is the bundle's own reading
    assert info["transforms"] == ["LoadImaged", "EnsureChannelFirstd", "Orientationd", "Spacingd", "ScaleIntensityRanged",
                                  "EnsureTyped"]
    same = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image"), Orientationd("image", "RAS"),
                    Spacingd("image", [1.5, 1.5, 2.0]),
                    ScaleIntensityRanged("image", -57, 164, 0.0, 1.0, clip=True)])
    want = same({"image": str(src.files[1])})["image"]
    got = src.load(1)
    assert got.shape == (1, 32, 32, 24) and np.allclose(got, np.asarray(want), atol=1e-6)


def test_retinanet_backbone_expression_and_refusals(tmp_path, data):
    assert call_kwargs("$monai.networks.nets.resnet.resnet50(spatial_dims=3,n_input_channels=1,conv1_t_stride=[2,2,1])") \
        == {"class": "resnet50", "kwargs": {"spatial_dims": 3, "n_input_channels": 1, "conv1_t_stride": [2, 2, 1]}}
    assert call_kwargs("$make(@backbone)") is None
    bundle = write_zoo_bundle(tmp_path / "det", "retinanet", str(data))
    info = ConsumerReadSource(data / "imagesTr", bundle).info
    assert info["consumer_network"]["class"] == "ResNet" and info["normalization"] == ["ScaleIntensityRanged"]
    with pytest.raises(PluginError, match="No .nii"):
        ConsumerReadSource(tmp_path, bundle)
    with pytest.raises(PluginError, match="--read_like and --plans"):
        open_data(data / "imagesTr", plans=str(tmp_path / "p.json"), read_like=bundle)


def test_pretraining_read_like_then_overlay_matches_by_construction(tmp_path, data):
    from monai_ssl_plugin.engine.run import pretrain

    bundle = write_zoo_bundle(tmp_path / "spleen", "unet", str(data))
    ckpt = pretrain("models_genesis_ssl_pretraining", data / "imagesTr", tmp_path / "run", read_like=str(bundle),
                    **{"train#trainer#max_epochs": 1, "train#epoch_length": 1, "batch_size": 1, "quiet": True,
                       "patch_size": [32, 32, 16], "train#num_workers": 0, "device": "cpu"})
    record = safe_load(ckpt)["record"]
    assert record["backbone_family"] == "monai.UNet" and record["axis_order"] == "monai"
    assert record["normalization"] == ["ScaleIntensityRanged"] and record["spacing"] == [1.5, 1.5, 2.0]
    lines: list[str] = []
    write_overlay(ckpt, bundle, log=lines.append)
    assert not [m for m in lines if "WARNING" in m or "transposed" in m], lines
    assert any("100.0%" in m for m in lines), lines
    assert torch.load(ckpt, weights_only=True)["network"]  # a plain state dict, read with weights_only

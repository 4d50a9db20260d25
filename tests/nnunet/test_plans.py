"""Route (b): plans variants written from a checkpoint (monai-ssl or nnssl) for a new dataset, and twin fairness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet import nnUNetTrainerScratch_short, nnUNetTrainerSSL_short
from monai_ssl_plugin.nnunet.plans import (assert_twin_plans, plans_differences, plans_fingerprint, twin_plans_path,
                                           write_plans_variant)

from nnunet_helpers import plans_copy, tiny_plans, write_checkpoint, write_nnssl_checkpoint, write_preprocessed_dataset


@pytest.fixture
def ct_target(nnunet_env) -> Path:
    """Dataset905_CTTarget: its own (bigger, 4-stage) architecture, CT normalisation, anisotropic spacing."""
    plans = tiny_plans(dataset_name="Dataset905_CTTarget", features=(16, 32, 64, 128), normalization="CTNormalization",
                       patch_size=(32, 32, 32))
    conf = plans["configurations"]["3d_fullres"]
    conf["spacing"], conf["median_image_size_in_voxels"] = [2.0, 1.0, 1.0], [40, 24, 20]
    plans["original_median_spacing_after_transp"], plans["original_median_shape_after_transp"] = [2.0, 1.0, 1.0], \
        [40, 24, 20]
    return write_preprocessed_dataset(Path(nnunet_env["nnUNet_preprocessed"]), plans)


def test_checkpoint_variant_keeps_the_target_and_writes_a_fair_twin(tmp_path: Path, ct_target: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    pretrained = NnUNetBackbone.from_plans(tiny_plans())
    ckpt = write_checkpoint(tmp_path / "final.pt", pretrained, normalization="CTNormalization",
                            patch_size=(32, 32, 32), spacing=[1.0, 1.0, 1.0])
    lines: list[str] = []
    path = write_plans_variant(905, checkpoint=ckpt, log=lines.append)
    assert path == ct_target / "nnUNetPlans_ssl.json"
    variant, source = json.loads(path.read_text()), json.loads((ct_target / "nnUNetPlans.json").read_text())
    conf, src = variant["configurations"]["3d_fullres"], source["configurations"]["3d_fullres"]
    record = torch.load(ckpt, weights_only=True)["record"]["backbone_kwargs"]
    assert conf["architecture"]["arch_kwargs"] == record["arch_kwargs"]  # the pretrained architecture
    for key in ("spacing", "normalization_schemes", "data_identifier", "batch_size"):
        assert conf[key] == src[key], key  # the target's, so nothing is preprocessed again
    assert conf["patch_size"] == [32, 24, 20]  # pretraining patch, capped at the median image (stride 4)
    assert variant["monai_ssl_plugin"]["architecture_from"] == str(ckpt)

    twin = twin_plans_path(path)
    assert twin.name == "nnUNetPlans_ssl_scratch.json"
    assert_twin_plans(path, twin)
    assert plans_fingerprint(path) == plans_fingerprint(twin) != plans_fingerprint(ct_target / "nnUNetPlans.json")
    assert any("from-scratch twin: -p nnUNetPlans_ssl_scratch" in line for line in lines)
    unfair = json.loads(twin.read_text())
    unfair["configurations"]["3d_fullres"]["batch_size"] = 4
    assert plans_differences(path, unfair) == ["configurations.3d_fullres.batch_size: 2 vs 4"]
    with pytest.raises(PluginError, match="differ beyond their name: configurations.3d_fullres.batch_size"):
        assert_twin_plans(path, unfair)

    # the trainers build exactly that network and load every pretrained tensor; the twin loads nothing
    dataset_json = json.loads((ct_target / "dataset.json").read_text())
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(ckpt))
    trainer = nnUNetTrainerSSL_short(plans_copy(variant), "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    assert trainer.pretrained_report.loaded_fraction == 1.0
    scratch = nnUNetTrainerScratch_short(plans_copy(json.loads(twin.read_text())), "3d_fullres", 0, dataset_json,
                                         torch.device("cpu"))
    scratch.initialize()
    assert [p.shape for p in scratch.network.parameters()] == [p.shape for p in trainer.network.parameters()]


def test_spacing_and_normalisation_from_the_checkpoint_need_one_preprocessing(tmp_path: Path, ct_target: Path):
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(tiny_plans()), spacing=[1.0, 1.0, 1.0])
    lines: list[str] = []
    path = write_plans_variant("Dataset905_CTTarget", checkpoint=ckpt, spacing="checkpoint",
                               normalization="checkpoint", plans_identifier="nnUNetPlans_ssl1mm", log=lines.append)
    conf = json.loads(path.read_text())["configurations"]["3d_fullres"]
    assert conf["spacing"] == [1.0, 1.0, 1.0] and conf["normalization_schemes"] == ["ZScoreNormalization"]
    assert conf["data_identifier"] == "nnUNetPlans_ssl1mm_3d_fullres"
    assert conf["median_image_size_in_voxels"] == [80, 24, 20]  # 40 voxels of 2 mm = 80 of 1 mm
    assert any("nnUNetv2_preprocess -d 905 -plans_name nnUNetPlans_ssl1mm -c 3d_fullres" in line for line in lines)
    explicit = write_plans_variant(905, checkpoint=ckpt, spacing=[3.0, 1.0, 1.0], plans_identifier="p3",
                                   scratch_twin=False, log=None)
    assert json.loads(explicit.read_text())["configurations"]["3d_fullres"]["spacing"] == [3.0, 1.0, 1.0]
    assert not twin_plans_path(explicit).exists()
    with pytest.raises(PluginError, match="Unknown spacing option 'native'"):
        write_plans_variant(905, checkpoint=ckpt, spacing="native", log=None)


def test_nnssl_resencl_checkpoint_gives_nnunets_resenc_plans_and_warns_on_ct(tmp_path: Path, ct_target: Path):
    state = {"encoder.stem.convs.0.conv.weight": torch.zeros(32, 1, 3, 3, 3)}  # the plan is what matters here
    path, _ = write_nnssl_checkpoint(tmp_path / "checkpoint_final.pth", "ResEncL", state=state)
    lines: list[str] = []
    variant = json.loads(write_plans_variant(905, checkpoint=path, log=lines.append).read_text())
    arch = variant["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"].endswith("unet.ResidualEncoderUNet")
    assert arch["arch_kwargs"]["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert arch["arch_kwargs"]["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6]
    # nnssl pretrained at 160^3; capped at the target's median image (40, 24, 20) with stride 32 it would be
    # (64, 32, 32), a 1-voxel bottleneck on two axes: raised to 2x the stride
    assert variant["configurations"]["3d_fullres"]["patch_size"] == [64, 64, 64]
    assert variant["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"]
    assert variant["monai_ssl_plugin"]["pretrained_from"] == "nnssl_adaptation_plan"
    assert any("nnssl z-scores everything" in line for line in lines)


def test_monai_ordered_checkpoint_gets_the_axis_reversed_architecture(tmp_path: Path, ct_target: Path):
    plans = tiny_plans()
    kw = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    kw["kernel_sizes"], kw["strides"] = [[3, 3, 1], [3, 3, 3], [3, 3, 3]], [[1, 1, 1], [2, 2, 1], [2, 2, 2]]
    ckpt = write_checkpoint(tmp_path / "monai.pt", NnUNetBackbone.from_plans(plans), axis_order="monai",
                            normalization="CTNormalization")
    variant = json.loads(write_plans_variant(905, checkpoint=ckpt, log=None).read_text())
    arch = variant["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert arch["kernel_sizes"] == [[1, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert arch["strides"] == [[1, 1, 1], [1, 2, 2], [2, 2, 2]]


def test_channel_counts_that_cannot_be_adapted_are_refused(tmp_path: Path, ct_target: Path):
    two = write_checkpoint(tmp_path / "two.pt", NnUNetBackbone.from_plans(tiny_plans(), in_channels=2))
    data = torch.load(two, weights_only=True)
    data["record"]["normalization"] = ["CTNormalization"] * 2
    torch.save(data, two)
    with pytest.raises(PluginError, match=r"pretrained on 2 input channel\(s\); dataset Dataset905_CTTarget has 1"):
        write_plans_variant(905, checkpoint=two, log=None)
    with pytest.raises(PluginError, match="exactly one of --backbone NAME or --checkpoint FILE"):
        write_plans_variant(905, log=None)


def test_patch_sizes_keep_a_bottleneck_of_two_voxels_per_downsampled_axis():
    from monai_ssl_plugin.nnunet.plans import MIN_BOTTLENECK, bottleneck_problem, valid_patch_size

    assert MIN_BOTTLENECK == 2  # pretraining's rule (engine.network.check_patch_size): >= 2x the total stride
    assert valid_patch_size([32, 32, 32], [32, 32, 32]) == [64, 64, 64]  # 1x the stride would leave 1 voxel
    assert valid_patch_size([20, 5, 7], [4, 1, 2]) == [20, 5, 6]  # multiples; an undivided axis keeps its size
    kwargs = {"strides": [[1, 1, 1]] + [[2, 2, 2]] * 5}
    assert bottleneck_problem([64, 64, 64], kwargs) is None
    assert "bottleneck holds [1, 1, 1] voxels" in bottleneck_problem([32, 32, 32], kwargs)
    assert "multiple of the stride" in bottleneck_problem([64, 64, 48], kwargs)


def test_a_deep_checkpoint_on_small_images_gets_a_patch_that_trains(tmp_path: Path, ct_target: Path):
    """Six stages (total stride 32) on images of median [40, 24, 20]: capping at the image would leave a 1-voxel
    bottleneck (the first step's instance norm fails); the patch is raised to 2x the stride and the padding noted."""
    from nnunet_helpers import DNA, tiny_resenc_kwargs

    deep = NnUNetBackbone(DNA + "ResidualEncoderUNet", tiny_resenc_kwargs(features=(4, 4, 8, 8, 8, 8)),
                          ["conv_op", "norm_op", "dropout_op", "nonlin"], in_channels=1)
    ckpt = write_checkpoint(tmp_path / "deep.pt", deep, normalization="CTNormalization", patch_size=(64, 64, 64))
    lines: list[str] = []
    conf = json.loads(write_plans_variant(905, checkpoint=ckpt, log=lines.append).read_text())["configurations"][
        "3d_fullres"]
    assert conf["patch_size"] == [64, 64, 64]
    assert any("larger than the median image [40, 24, 20]" in line and "padded" in line for line in lines)
    with torch.device("meta"):  # the bottleneck of that patch: 2 voxels per axis
        net = NnUNetBackbone.from_plans(json.loads((ct_target / "nnUNetPlans_ssl.json").read_text()))
    assert net.divisor() == [32, 32, 32]

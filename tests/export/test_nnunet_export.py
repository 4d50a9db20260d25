"""Export to nnU-Net: the file passes nnU-Net's own loader, carries the nnssl plan, fails cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.nnssl import ADAPTATION_PLAN_KEYS
from monai_ssl_plugin.export.nnunet import (ADAPTATION_PLAN_FILE, describe_shape, export_nnunet, first_mismatch,
                                            pretrained_file_path)

from nnunet_helpers import tiny_plans, write_checkpoint, write_preprocessed_dataset


@pytest.fixture
def preprocessed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "preprocessed"
    root.mkdir()
    monkeypatch.setenv("nnUNet_preprocessed", str(root))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    return root


def _plans_network(plans: dict, in_channels: int, num_classes: int) -> torch.nn.Module:
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  in_channels, num_classes, allow_init=True, deep_supervision=True)


def test_export_passes_nnunet_loader_for_target_with_other_classes(tmp_path: Path):
    plans = tiny_plans()
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(plans))
    out = export_nnunet(ckpt)
    assert out == tmp_path / "final_nnunet.pth"

    payload = torch.load(out, map_location="cpu", weights_only=True)  # safe loading works
    assert set(payload) == {"network_weights", "nnssl_adaptation_plan", "ssl_record"}
    pretrained = torch.load(ckpt, weights_only=True)["network"]
    assert payload["network_weights"].keys() == pretrained.keys()

    target = _plans_network(plans, in_channels=1, num_classes=3)  # MAE head has 1 output, target 3 classes
    asserted = [k for k in target.state_dict() if ".seg_layers." not in k]
    assert set(asserted) <= set(payload["network_weights"])  # every key nnU-Net asserts on
    load_pretrained_weights(target, str(out))  # nnU-Net's own loader: asserts key + shape, raises otherwise
    for k in asserted:
        assert torch.equal(target.state_dict()[k], pretrained[k]), k
    assert target.state_dict()["decoder.seg_layers.0.weight"].shape[0] == 3

    plan = payload["nnssl_adaptation_plan"]
    assert tuple(plan) == ADAPTATION_PLAN_KEYS
    assert plan["architecture_plans"]["arch_class_name"] == "PlainConvUNet"
    assert set(plan["architecture_plans"]) == {"arch_class_name", "arch_kwargs", "arch_kwargs_requiring_import"}
    assert plan["key_to_encoder"] == "encoder.stages" and plan["key_to_lpe"] is None
    assert plan["pretrain_num_input_channels"] == 1 and plan["recommended_downstream_patchsize"] == [16, 16, 16]
    assert plan["pretrain_plan"]["configurations"]["3d_fullres"]["normalization_schemes"] == ["ZScoreNormalization"]
    assert json.loads((tmp_path / ADAPTATION_PLAN_FILE).read_text()) == plan
    assert payload["ssl_record"]["pretrained_parts"] == ["stem", "encoder", "decoder"]


def test_export_to_dataset_goes_to_conventional_place(tmp_path: Path, preprocessed: Path):
    plans = tiny_plans()
    write_preprocessed_dataset(preprocessed, plans)
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(plans))
    out = export_nnunet(ckpt, dataset=901)
    assert out == preprocessed / "Dataset901_Tiny" / "ssl_pretrained" / "nnUNetPlans__3d_fullres.pth"
    assert out == pretrained_file_path("Dataset901_Tiny")
    assert (out.parent / ADAPTATION_PLAN_FILE).is_file()
    assert export_nnunet(ckpt, dataset="Dataset901_Tiny") == out  # by name too
    assert sorted(p.name for p in out.parent.iterdir()) == [ADAPTATION_PLAN_FILE, out.name]  # no temp files left


@pytest.mark.parametrize("variant, expected", [
    (dict(features=(8, 32, 32)), r"first mismatching layer encoder\.stages\.1\.0\.convs\.0\.conv\.weight "
                                 r"\(encoder stage 1\): checkpoint 16 out / 8 in channels, kernel 3x3x3 vs network "
                                 r"32 out / 8 in channels.*features_per_stage at stage 1: 16 vs 32"),
    (dict(kernel=(1, 3, 3)), r"first mismatching layer encoder\.stages\.0\.0\.convs\.0\.conv\.weight \(encoder stage "
                             r"0\): checkpoint 8 out / 1 in channels, kernel 3x3x3 vs network 8 out / 1 in channels, "
                             r"kernel 1x3x3"),
    (dict(features=(8, 16, 32, 64)), r"first mismatching layer encoder\.stages\.3\.0\.convs\.0\.conv\.weight "
                                     r"\(encoder stage 3\) is in the network but not in the checkpoint"
                                     r".*n_stages 3 vs 4"),
])
def test_export_into_dataset_with_other_plans_names_first_mismatching_layer(tmp_path: Path, preprocessed: Path,
                                                                          variant: dict, expected: str):
    write_preprocessed_dataset(preprocessed, tiny_plans(**variant))
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(tiny_plans()))
    with pytest.raises(PluginError, match=expected) as err:
        export_nnunet(ckpt, dataset=901)
    assert "\n" not in str(err.value) and "Fix:" in str(err.value)
    assert not (preprocessed / "Dataset901_Tiny" / "ssl_pretrained").exists()


def test_missing_and_corrupt_checkpoints_fail_in_one_line_without_output(tmp_path: Path):
    out = tmp_path / "out.pth"
    with pytest.raises(PluginError, match="does not exist") as err:
        export_nnunet(tmp_path / "nope.pt", out)
    assert "\n" not in str(err.value)

    good = write_checkpoint(tmp_path / "good.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # torn write
    with pytest.raises(PluginError, match="Cannot load") as err:
        export_nnunet(corrupt, out)
    assert "\n" not in str(err.value)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(PluginError, match="holds no network weights"):
        export_nnunet(foreign, out)
    assert not out.exists() and not (tmp_path / ADAPTATION_PLAN_FILE).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_refuses_monai_axis_order_and_inconsistent_record(tmp_path: Path):
    with pytest.raises(PluginError, match="monai-ordered"):
        export_nnunet(write_checkpoint(tmp_path / "m.pt", axis_order="monai"), tmp_path / "m.pth")
    ckpt = write_checkpoint(tmp_path / "c.pt")
    data = torch.load(ckpt, weights_only=True)
    data["record"]["backbone_kwargs"]["arch_kwargs"]["features_per_stage"] = [8, 16, 64]  # the record lies
    torch.save(data, ckpt)
    with pytest.raises(PluginError, match="do not match the architecture its record describes"):
        export_nnunet(ckpt, tmp_path / "c.pth")
    assert not (tmp_path / "m.pth").exists() and not (tmp_path / "c.pth").exists()


def test_first_mismatch_helpers():
    a = {"encoder.stages.0.w": torch.zeros(2, 1, 3, 3, 3), "decoder.seg_layers.0.weight": torch.zeros(1, 2, 1, 1, 1)}
    b = {"encoder.stages.0.w": torch.zeros(2, 1, 3, 3, 3), "decoder.seg_layers.0.weight": torch.zeros(5, 2, 1, 1, 1)}
    assert first_mismatch(a, b) is None  # seg layers never count
    assert "segmentation layer 0" in first_mismatch(a, b, exclude=None)
    assert describe_shape("decoder.transpconvs.0.weight", (32, 16, 2, 2, 2)) == "32 in / 16 out channels, kernel 2x2x2"

"""Export to nnU-Net: the file passes nnU-Net's own loader, carries the nnssl plan, reads nnssl files, fails cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.nnunet import ADAPTATION_PLAN_FILE, export_nnunet
from monai_ssl_plugin.nnunet_paths import pretrained_file_path
from monai_ssl_plugin.transfer.compare import describe_shape, first_mismatch
from monai_ssl_plugin.transfer.formats import read_weights
from monai_ssl_plugin.transfer.nnssl import ADAPTATION_PLAN_KEYS

from nnunet_helpers import (DNA, tiny_plans, tiny_resenc_kwargs, write_checkpoint, write_nnssl_checkpoint,
                            write_preprocessed_dataset)


REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


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
    assert "\n" not in str(err.value)
    assert f"Fix: Run `monai-ssl nnunet-plans Dataset901_Tiny --checkpoint {ckpt}`" in str(err.value)
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


def test_monai_axis_order_is_transposed_and_inconsistent_record_refused(tmp_path: Path):
    monai = export_nnunet(write_checkpoint(tmp_path / "m.pt", axis_order="monai", spacing=[1.0, 1.0, 3.0]),
                          tmp_path / "m.pth")
    payload = torch.load(monai, weights_only=True)
    record = payload["ssl_record"]
    assert record["axis_order"] == "nnunet" and record["data"]["axis_order_converted_from"] == "monai"
    assert record["spacing"] == [3.0, 1.0, 1.0]
    original = torch.load(tmp_path / "m.pt", weights_only=True)["network"]
    key = "encoder.stages.1.0.convs.0.conv.weight"
    assert torch.equal(payload["network_weights"][key], original[key].permute(0, 1, 4, 3, 2))

    ckpt = write_checkpoint(tmp_path / "c.pt")
    data = torch.load(ckpt, weights_only=True)
    data["record"]["backbone_kwargs"]["arch_kwargs"]["features_per_stage"] = [8, 16, 64]  # the record lies
    torch.save(data, ckpt)
    with pytest.raises(PluginError, match="do not match the architecture its record describes"):
        export_nnunet(ckpt, tmp_path / "c.pth")
    assert not (tmp_path / "c.pth").exists()


def test_export_to_a_dataset_with_more_channels_repeats_a_plainconvunet_stem_in_the_file(tmp_path: Path,
                                                                                          preprocessed: Path):
    """nnU-Net's nnssl loader cannot repeat a PlainConvUNet stem (it sits inside the encoder), so the file holds it
    repeated; the trainer's shape check then has nothing left to adapt. ResidualEncoderUNet files keep their shape."""
    write_preprocessed_dataset(preprocessed, tiny_plans(), n_channels=2)
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(tiny_plans()))
    with pytest.warns(UserWarning, match=r"2 input channels, pretrained 1: the export repeats the stem's input "
                                         r"weights \(4 tensors"):
        out = export_nnunet(ckpt, dataset=901)
    payload = torch.load(out, weights_only=True)
    pretrained = torch.load(ckpt, weights_only=True)["network"]
    for key in ("encoder.stages.0.0.convs.0.conv.weight", "decoder.encoder.stages.0.0.convs.0.all_modules.0.weight"):
        w = payload["network_weights"][key]
        assert w.shape[1] == 2 and torch.equal(w, pretrained[key].repeat(1, 2, 1, 1, 1) / 2), key
    assert payload["nnssl_adaptation_plan"]["pretrain_num_input_channels"] == 2
    record = payload["ssl_record"]
    assert record["in_channels"] == 2 and record["data"]["in_channels_adapted_from"] == 1
    assert record["normalization"] == ["ZScoreNormalization"] * 2
    assert read_weights(out, require_record=True).record.in_channels == 2  # consistent: the trainers read it as is
    with pytest.raises(PluginError, match=r"input channels 1 vs 2 \(adaptation 'channels' not allowed\).*"
                                          r"nnUNet_SSL_adapt=channels"):
        export_nnunet(ckpt, tmp_path / "x.pth", dataset=901, allowed_adaptations="none")
    resenc = NnUNetBackbone(DNA + "ResidualEncoderUNet", tiny_resenc_kwargs(), REQ_IMPORT, in_channels=1)
    kept = export_nnunet(write_checkpoint(tmp_path / "r.pt", resenc), tmp_path / "r.pth", target_channels=2)
    assert torch.load(kept, weights_only=True)["network_weights"]["encoder.stem.convs.0.conv.weight"].shape[1] == 1


@pytest.mark.parametrize("prefix, encoder_only", [("encoder", False), ("online_encoder", True)])
def test_nnssl_checkpoint_is_read_through_its_adaptation_plan(tmp_path: Path, prefix: str, encoder_only: bool):
    path, canonical = write_nnssl_checkpoint(tmp_path / "checkpoint_final.pth", "ResidualEncoderUNet",
                                             tiny_resenc_kwargs(), prefix=prefix, encoder_only=encoder_only)
    weights = read_weights(path, require_record=True)
    rec = weights.record
    assert weights.from_nnssl and rec.data["derived_from"] == "nnssl_adaptation_plan"
    assert rec.backbone_family == "nnunet.ResidualEncoderUNet" and rec.axis_order == "nnunet"
    assert rec.normalization == ["ZScoreNormalization"] and rec.spacing == [1.0, 1.0, 1.0]
    assert rec.pretrained_parts == ["stem", "encoder"] and rec.patch_size == [160, 160, 160]
    assert rec.key_prefixes["stem"] == "encoder.stem" and rec.key_prefixes["encoder"] == "encoder.stages"
    assert rec.key_prefixes["in_proj"] == ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"]
    key = "encoder.stem.convs.0.conv.weight"
    assert torch.equal(weights.state[key], canonical[key])  # online_encoder.* renamed through the key remapper

    out = export_nnunet(path, tmp_path / "exported.pth")
    payload = torch.load(out, weights_only=True)
    assert payload["ssl_record"]["data"]["derived_from"] == "nnssl_adaptation_plan"
    plan = payload["nnssl_adaptation_plan"]
    assert plan["architecture_plans"]["arch_class_name"] == "ResidualEncoderUNet"
    assert plan["pretrain_plan"]["dataset_name"] == "Dataset745_OpenMind"  # nnssl's own plan is kept
    assert plan["key_to_encoder"] == "encoder.stages"


def test_nnssl_presets_map_to_resenc_l_and_primus_m_and_unknown_ones_are_refused(tmp_path: Path):
    state = {"encoder.stem.convs.0.conv.weight": torch.zeros(32, 1, 3, 3, 3)}
    path, _ = write_nnssl_checkpoint(tmp_path / "PrimusM.pth", "PrimusM", state=state)
    rec = read_weights(path, require_record=True).record  # nnssl's PrimusM: Primus-M at its pretraining patch
    assert rec.backbone_family == "nnunet.Primus" and rec.pretrained_parts == ["stem", "encoder"]
    kw = rec.backbone_kwargs["arch_kwargs"]
    assert (kw["embed_dim"], kw["eva_depth"], kw["eva_numheads"], kw["input_shape"]) == (864, 16, 12, [160, 160, 160])
    path, _ = write_nnssl_checkpoint(tmp_path / "MedNeXt.pth", "MedNeXt", state=state)
    with pytest.raises(PluginError, match="nnssl architecture 'MedNeXt' is not one the plugin can fine-tune"):
        read_weights(path, require_record=True)
    for name in ("ResEncL", "NoSkipResEncL"):  # nnssl's presets: the plugin's nnunet_resenc_l (stem + encoder)
        path, _ = write_nnssl_checkpoint(tmp_path / f"{name}.pth", name, state=state)
        rec = read_weights(path, require_record=True).record
        assert rec.backbone_kwargs["arch_kwargs"]["features_per_stage"] == [32, 64, 128, 256, 320, 320]
        assert rec.backbone_kwargs["arch_kwargs"]["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6]
        assert rec.pretrained_parts == ["stem", "encoder"] and rec.data["nnssl_arch_class_name"] == name


def test_first_mismatch_helpers():
    a = {"encoder.stages.0.w": torch.zeros(2, 1, 3, 3, 3), "decoder.seg_layers.0.weight": torch.zeros(1, 2, 1, 1, 1)}
    b = {"encoder.stages.0.w": torch.zeros(2, 1, 3, 3, 3), "decoder.seg_layers.0.weight": torch.zeros(5, 2, 1, 1, 1)}
    assert first_mismatch(a, b) is None  # seg layers never count
    assert "segmentation layer 0" in first_mismatch(a, b, exclude=None)
    assert describe_shape("decoder.transpconvs.0.weight", (32, 16, 2, 2, 2)) == "32 in / 16 out channels, kernel 2x2x2"


def test_export_is_read_by_nnssl_style_adaptation_from_its_plan_alone(tmp_path: Path):
    """What nnssl-aware loaders (nnssl, nnU-Net master) do with the file: build the network from
    ``architecture_plans``, take the encoder by ``key_to_encoder``, repeat ``keys_to_in_proj`` over the
    downstream channels, and load strictly into that submodule."""
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(tiny_plans()))
    payload = torch.load(export_nnunet(ckpt), weights_only=True)
    plan, weights = payload["nnssl_adaptation_plan"], payload["network_weights"]
    arch = plan["architecture_plans"]
    downstream_channels = 2
    with pytest.warns(UserWarning, match="not found"):  # nnssl's short class name: nnU-Net's builder finds it
        network = get_network_from_plans(arch["arch_class_name"], arch["arch_kwargs"],
                                         arch["arch_kwargs_requiring_import"], downstream_channels, 3,
                                         allow_init=True, deep_supervision=True)
    prefix = plan["key_to_encoder"]
    encoder = {k: v for k, v in weights.items() if k.startswith(prefix + ".")}
    repeated = encoder[plan["keys_to_in_proj"][0] + ".weight"].repeat(1, downstream_channels, 1, 1, 1)
    for key in plan["keys_to_in_proj"]:
        encoder[key + ".weight"] = repeated / downstream_channels
    network.get_submodule(prefix).load_state_dict({k[len(prefix) + 1:]: v for k, v in encoder.items()})  # strict
    assert plan["pretrain_num_input_channels"] == 1 and plan["key_to_lpe"] is None
    assert torch.equal(network.state_dict()["encoder.stages.2.0.convs.0.conv.weight"],
                       weights["encoder.stages.2.0.convs.0.conv.weight"])


def test_normalisation_is_compared_per_channel_as_the_stem_is_tiled():
    from monai_ssl_plugin.transfer.normalization import compare_normalization, normalization_matches

    ct, z = "CTNormalization", "ZScoreNormalization"
    same = compare_normalization([ct, z], [ct, z], 2)
    assert same.matches and same.repeat == 1 and same.expected == [ct, z]
    # 2 pretrained channels tiled over 4 (input channel j reads pretrained channel j mod 2)
    tiled = compare_normalization([ct, z], [ct, z, ct, z], 2)
    assert tiled.matches and tiled.repeat == 2 and tiled.expected == [ct, z, ct, z]
    wrong = compare_normalization([ct, z], [ct, ct, z, z], 2)
    assert not wrong.matches and wrong.differences == [
        "channel 1: CTNormalization in the plans, ZScoreNormalization pretrained (pretrained channel 1 repeated)",
        "channel 2: ZScoreNormalization in the plans, CTNormalization pretrained (pretrained channel 0 repeated)"]
    # a one-scheme record of a 2-channel pretraining applies to both channels; no repeat claimed
    broadcast = compare_normalization([z], [z, z], 2)
    assert broadcast.matches and broadcast.repeat == 1
    assert compare_normalization([z], [z, ct], 2).differences == [
        "channel 1: CTNormalization in the plans, ZScoreNormalization pretrained"]
    # counts that cannot be paired (fewer, not a multiple, inconsistent record): no claim either way
    for pretrained, plans, channels in (([z, z], [z], 2), ([z, z], [z, z, z], 2), ([z, ct, z], [z, ct], 2)):
        check = compare_normalization(pretrained, plans, channels)
        assert check.expected is None and not check.matches
    assert normalization_matches([z], [z, z, z]) == (True, 3)  # channel count from the record when not given


def test_adaptation_hint_follows_the_first_problem_only(tmp_path: Path, preprocessed: Path):
    """A wider first stage and an extra stage: allowing 'stages' would not fix the width, so it is not offered."""
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(tiny_plans()))
    write_preprocessed_dataset(preprocessed, tiny_plans(features=(16, 16, 32, 64)))
    with pytest.raises(PluginError, match=r"encoder stage 0\): checkpoint 8 out.*vs network 16 out") as err:
        export_nnunet(ckpt, dataset=901)
    assert "nnUNet_SSL_adapt" not in str(err.value)
    write_preprocessed_dataset(preprocessed, tiny_plans(features=(8, 16, 32, 8)))  # only a small extra stage differs
    with pytest.raises(PluginError, match=r"encoder stage 3\) is in the network but not in the checkpoint.*"
                                          r"load the stages both networks have: nnUNet_SSL_adapt=channels,stages"):
        export_nnunet(ckpt, dataset=901)
    # the extra stage holds most of the encoder: the common stages would be under half of it, which the trainer
    # refuses by default, so the hint is not given
    write_preprocessed_dataset(preprocessed, tiny_plans(features=(8, 16, 32, 64)))
    with pytest.raises(PluginError, match=r"encoder stage 3\) is in the network but not in the checkpoint") as err:
        export_nnunet(ckpt, dataset=901)
    assert "nnUNet_SSL_adapt" not in str(err.value)


def test_export_does_not_offer_the_stage_adaptation_between_unrelated_classes(tmp_path: Path, preprocessed: Path):
    write_preprocessed_dataset(preprocessed, tiny_plans())
    resenc = NnUNetBackbone(DNA + "ResidualEncoderUNet", tiny_resenc_kwargs(features=(8, 16, 32, 64)), REQ_IMPORT,
                            in_channels=1)
    ckpt = write_checkpoint(tmp_path / "r.pt", resenc)
    with pytest.raises(PluginError, match="network class ResidualEncoderUNet vs PlainConvUNet") as err:
        export_nnunet(ckpt, tmp_path / "a.pth", dataset=901)
    assert "nnUNet_SSL_adapt" not in str(err.value)
    with pytest.raises(PluginError, match=r"has no counterpart in the checkpoint: under 50% of it would load"):
        export_nnunet(ckpt, tmp_path / "b.pth", dataset=901, allowed_adaptations="channels,stages")
    assert not (tmp_path / "a.pth").exists() and not (tmp_path / "b.pth").exists()


def test_primus_export_carries_the_kwargs_masters_primusx_trainer_reads(tmp_path: Path, preprocessed: Path):
    """A Primus record (here a converted-style file: network + record, no nnssl plan of its own) exports an nnssl
    plan in nnssl's names, every key nnU-Net master's PretrainedTrainer_Primusx builds Primus from, and the
    pretraining patch as the recommended one (the patch its position embedding covers); it reads back the same."""
    from monai_ssl_plugin.checkpoint import atomic_save
    from monai_ssl_plugin.nnunet.plans import write_plans_variant

    from nnunet_helpers import write_nnssl_primus, write_preprocessed_dataset

    source, _ = write_nnssl_primus(tmp_path / "checkpoint_final.pth")
    weights = read_weights(source, require_record=True)
    converted = atomic_save({"network": weights.state, "record": weights.record.to_dict()}, tmp_path / "converted.pt")
    write_preprocessed_dataset(preprocessed, tiny_plans())
    plans_file = write_plans_variant(901, checkpoint=converted, log=None)
    out = export_nnunet(converted, dataset=901, plans_identifier=plans_file.stem)
    plan = torch.load(out, weights_only=True)["nnssl_adaptation_plan"]
    assert plan["architecture_plans"] == {"arch_class_name": "Primus", "arch_kwargs_requiring_import": [], "arch_kwargs": {
        "embed_dim": 48, "patch_embed_size": [8, 8, 8], "encoder_eva_depth": 2, "encoder_eva_numheads": 2,
        "init_values": 0.1, "scale_attn_inner": True}}
    assert plan["recommended_downstream_patchsize"] == [32, 32, 32]
    assert (plan["key_to_stem"], plan["key_to_encoder"], plan["key_to_lpe"]) == ("down_projection", "eva",
                                                                                  "eva.pos_embed")
    from monai_ssl_plugin.transfer.nnssl import record_from_adaptation_plan

    for again in (read_weights(out, require_record=True).record, record_from_adaptation_plan(plan)):
        assert again.backbone_kwargs["arch_kwargs"] == weights.record.backbone_kwargs["arch_kwargs"]

"""Each catalog converter on a file with the published layout: tensor by tensor, record, and the consumer
that must accept the converted file (nnU-Net trainer for nnssl ResEnc-L, MONAI load_pretrained for Swin)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretrained import get
from monai_ssl_plugin.pretrained.cache import ENV_HOME, read_provenance

from published_layouts import bundle_network_def, write_model_swinvit, write_openmind, write_voco_head


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv(ENV_HOME, str(home))
    return home


def converted(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def assert_same_tensors(state: dict, expected: dict) -> None:
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("method", ["MAE", "VoCo"])
def test_openmind_resencl_converts_tensor_by_tensor(tmp_path: Path, method: str):
    path, expected = write_openmind(tmp_path / "checkpoint_final.pth", method)
    out = converted(get(f"openmind-resencl-{method.lower()}", file=str(path), log=None))
    assert_same_tensors(out["network"], expected)  # pretext heads (VoCo projector) dropped, nothing renamed
    record = out["record"]
    assert record["backbone_family"] == "nnunet.ResidualEncoderUNet" and record["axis_order"] == "nnunet"
    assert record["pretext"] == f"nnssl/{method}" and record["pretrained_parts"] == ["stem", "encoder"]
    assert record["normalization"] == ["ZScoreNormalization"] and record["spacing"] == [1.0, 1.0, 1.0]
    assert record["data"]["pretrained_catalog"]["licence"].startswith("CC-BY-4.0")
    prov = read_provenance(f"openmind-resencl-{method.lower()}")
    assert prov["dropped_tensors"] == (6 if method == "VoCo" else 0)


def nnunet_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net's folders under ``tmp_path`` and in-process settings (no workers, no compile) for trainer tests."""
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, str(tmp_path / k))
        os.makedirs(tmp_path / k, exist_ok=True)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("nnUNet_compile", "false")


def test_openmind_converted_file_initialises_the_nnunet_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from nnunet_helpers import plans_copy, tiny_plans, tiny_resenc_kwargs, write_preprocessed_dataset

    from monai_ssl_plugin.nnunet import nnUNetTrainerSSL_short

    nnunet_folders(tmp_path, monkeypatch)
    plans = tiny_plans()
    conf = plans["configurations"]["3d_fullres"]["architecture"]
    conf["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    conf["arch_kwargs"] = tiny_resenc_kwargs()
    folder = write_preprocessed_dataset(tmp_path / "nnUNet_preprocessed", plans)
    path, expected = write_openmind(tmp_path / "checkpoint_final.pth", "VoCo", tiny_resenc_kwargs())
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(get("openmind-resencl-voco", file=str(path), log=None)))
    trainer = nnUNetTrainerSSL_short(plans_copy(plans), "3d_fullres", 0, json.loads((folder / "dataset.json").read_text()),
                                     torch.device("cpu"))
    trainer.initialize()
    state = trainer.network.state_dict()
    for key in ("encoder.stem.convs.0.conv.weight", "encoder.stages.2.blocks.0.conv1.conv.weight"):
        assert torch.equal(state[key], expected[key]), key
    assert trainer.pretrained_report.loaded_fraction == 1.0
    # the documented route to plans with the checkpoint's architecture reads the converted file too
    from monai_ssl_plugin.nnunet.plans import write_plans_variant

    written = json.loads(write_plans_variant(plans["dataset_name"], checkpoint=os.environ["nnUNet_SSL_pretrained"]
                                             ).read_text())
    arch = written["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"].endswith("ResidualEncoderUNet")
    assert arch["arch_kwargs"]["features_per_stage"] == tiny_resenc_kwargs()["features_per_stage"]
    # and exports for nnU-Net master: the converted file keeps only the record, from which the plan is built
    from monai_ssl_plugin.export.nnunet import export_nnunet

    plan = torch.load(export_nnunet(os.environ["nnUNet_SSL_pretrained"], dataset=plans["dataset_name"]),
                      weights_only=True)["nnssl_adaptation_plan"]
    assert plan["architecture_plans"]["arch_class_name"] == "ResidualEncoderUNet"


def test_openmind_converted_file_loads_the_whole_encoder_into_resencl_built_as_a_bundle_network(tmp_path: Path):
    from monai.bundle import ConfigParser

    from monai_ssl_plugin.monai_bundles import load_pretrained

    path, expected = write_openmind(tmp_path / "checkpoint_final.pth", "MAE")  # ResEnc-L's 1-3-4-6-6-6 structure
    out_path = get("openmind-resencl-mae", file=str(path), log=None)
    arch = converted(out_path)["record"]["backbone_kwargs"]["arch_kwargs"]
    parser = ConfigParser({"network_def": bundle_network_def(arch, num_classes=3)})
    network = parser.get_parsed_content("network_def", instantiate=True)  # as `monai.bundle run` builds it
    before = {k: v.clone() for k, v in network.state_dict().items()}
    report = load_pretrained(network, out_path, axis_order="nnunet", log=None)
    encoder = {k: v for k, v in expected.items() if k.startswith("encoder.")}
    assert report.loaded_fraction == 1.0 and not report.missing and not report.skipped_shape
    assert len(report.loaded) + len(report.aliases) == len(encoder)  # every encoder tensor, aliases counted once
    for key, value in network.state_dict().items():
        if key in encoder:
            assert torch.equal(value, encoder[key]), key
        elif key.startswith("decoder.") and not key.startswith("decoder.encoder."):
            assert torch.equal(value, before[key]), key  # the decoder stays new (another task's head)
    raw = parser.get_parsed_content("network_def", instantiate=True, lazy=False)  # a second, fresh network
    assert raw is not network  # into which nnssl's own file, not converted, loads the same way
    assert load_pretrained(raw, path, axis_order="nnunet", log=None).loaded_fraction == 1.0
    assert all(torch.equal(raw.state_dict()[k], v) for k, v in encoder.items())


def test_model_swinvit_converts_and_loads_into_monai_swinunetr(tmp_path: Path):
    from monai.networks.nets import SwinUNETR

    from monai_ssl_plugin.monai_bundles import load_pretrained

    path, expected = write_model_swinvit(tmp_path / "model_swinvit.pt")
    reference = SwinUNETR(in_channels=1, out_channels=3, feature_size=12)
    reference.load_from(torch.load(path, weights_only=True))  # MONAI's own reader of model_swinvit.pt takes the fixture
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in expected.items())
    out_path = get("monai-swinunetr-ssl", file=str(path), log=None)
    out = converted(out_path)
    assert_same_tensors(out["network"], expected)  # module.* -> swinViT.*, mlp.fc1/fc2 -> mlp.linear1/linear2
    assert out["record"]["backbone_family"] == "monai.SwinUNETR" and out["record"]["axis_order"] == "monai"
    assert out["record"]["backbone_kwargs"]["feature_size"] == 12
    target = SwinUNETR(in_channels=1, out_channels=3, feature_size=12)
    load_pretrained(target, out_path, log=None)
    for key, value in expected.items():
        assert torch.equal(target.state_dict()[key], value), key


def test_voco_head_converts_drops_heads_and_loads_into_swinunetr_v2(tmp_path: Path):
    from monai.networks.nets import SwinUNETR

    from monai_ssl_plugin.monai_bundles import load_pretrained

    path, expected = write_voco_head(tmp_path / "VoCo_B_SSL_head.pt")
    out_path = get("voco-b-ssl", file=str(path), log=None)
    out = converted(out_path)
    assert_same_tensors(out["network"], expected)
    assert out["record"]["backbone_kwargs"]["use_v2"] is True
    assert read_provenance("voco-b-ssl")["dropped_tensors"] == 12  # student + teacher heads
    target = SwinUNETR(in_channels=1, out_channels=3, feature_size=12, use_v2=True)
    load_pretrained(target, out_path, log=None)
    swin = {k: v for k, v in expected.items() if k.startswith("swinViT.")}
    for key, value in swin.items():
        assert torch.equal(target.state_dict()[key], value), key


def test_a_file_with_another_layout_is_refused_in_one_line(tmp_path: Path, cache_home: Path):
    path, _ = write_voco_head(tmp_path / "VoCo_B_SSL_head.pt")
    with pytest.raises(PluginError) as err:  # a VoCo file offered as Tang et al.'s: v2 blocks are unexpected
        get("monai-swinunetr-ssl", file=str(path), log=None)
    assert "does not have the published layout" in str(err.value) and "\n" not in str(err.value)
    assert not (cache_home / "monai-swinunetr-ssl" / "converted.pt").exists()


def test_openmind_primus_converts_down_projection_and_eva_tensor_by_tensor(tmp_path: Path):
    from published_layouts import write_primus

    path, _ = write_primus(tmp_path / "checkpoint_final.pth")
    published = torch.load(path, weights_only=True)["network_weights"]
    out = converted(get("openmind-primusm-simmim", file=str(path), log=None))
    expected = {k: v for k, v in published.items() if k.startswith(("down_projection.", "eva."))}
    assert_same_tensors(out["network"], expected)  # nnssl's names are Primus's: nothing renamed
    record = out["record"]
    assert record["backbone_family"] == "nnunet.Primus" and record["axis_order"] == "nnunet"
    assert record["backbone_kwargs"]["arch_kwargs"]["input_shape"] == [160, 160, 160]
    assert record["key_prefixes"]["lpe"] == "eva.pos_embed" and record["pretrained_parts"] == ["stem", "encoder"]
    assert record["pretext"] == "nnssl/SimMIM" and record["normalization"] == ["ZScoreNormalization"]
    dropped = [k for k in published if k not in expected]  # SimMIM's mask token and decoder
    assert "mask_token" in dropped and all(k == "mask_token" or k.startswith("up_projection.") for k in dropped)
    assert read_provenance("openmind-primusm-simmim")["dropped_tensors"] == len(dropped)


def test_primus_file_whose_plan_names_another_architecture_is_refused(tmp_path: Path):
    from published_layouts import write_primus

    path, _ = write_primus(tmp_path / "checkpoint_final.pth")
    obj = torch.load(path, weights_only=True)
    obj["nnssl_adaptation_plan"]["architecture_plans"]["arch_class_name"] = "PrimusL"
    torch.save(obj, tmp_path / "other.pth")
    with pytest.raises(PluginError, match="its adaptation plan names 'PrimusL', the catalog 'PrimusM'"):
        get("openmind-primusm-simmim", file=str(tmp_path / "other.pth"), log=None)


def test_openmind_primus_converted_file_gives_plans_and_initialises_the_nnunet_trainer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from nnunet_helpers import plans_copy, tiny_plans, write_preprocessed_dataset
    from published_layouts import write_primus

    from monai_ssl_plugin.nnunet import nnUNetTrainerSSL_short
    from monai_ssl_plugin.nnunet.plans import write_plans_variant

    nnunet_folders(tmp_path, monkeypatch)
    plans = tiny_plans()
    folder = write_preprocessed_dataset(tmp_path / "nnUNet_preprocessed", plans)
    path, _ = write_primus(tmp_path / "checkpoint_final.pth")
    checkpoint = get("openmind-primusm-simmim", file=str(path), log=None)
    variant = json.loads(write_plans_variant(plans["dataset_name"], checkpoint=checkpoint, log=None).read_text())
    conf = variant["configurations"]["3d_fullres"]
    assert conf["architecture"]["network_class_name"].endswith("primus.Primus") and conf["patch_size"] == [160] * 3
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(checkpoint))
    trainer = nnUNetTrainerSSL_short(plans_copy(variant), "3d_fullres", 0,
                                     json.loads((folder / "dataset.json").read_text()), torch.device("cpu"))
    trainer.initialize()
    state, expected = trainer.network.state_dict(), converted(checkpoint)["network"]
    assert sorted(trainer.pretrained_report.loaded) == sorted(expected)
    assert all(torch.equal(state[k], v) for k, v in expected.items())

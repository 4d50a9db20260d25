"""nnssl's Primus checkpoints through the plugin: plans variant (patch = the pretraining patch) and the trainer's
load of ``down_projection`` + ``eva``, in-process on a fake preprocessed dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet import nnUNetTrainerSSL_short
from monai_ssl_plugin.nnunet.plans import write_plans_variant

from nnunet_helpers import plans_copy, tiny_plans, write_nnssl_primus, write_preprocessed_dataset

PRIMUS = "dynamic_network_architectures.architectures.primus.Primus"


@pytest.fixture
def target(nnunet_env) -> Path:
    """Dataset906_PrimusTarget: a 2-channel MRI target with its own U-Net plans and a 24^3 median image."""
    plans = tiny_plans(dataset_name="Dataset906_PrimusTarget", patch_size=(24, 24, 24))
    conf = plans["configurations"]["3d_fullres"]
    conf["normalization_schemes"], conf["use_mask_for_norm"] = ["ZScoreNormalization"] * 2, [False] * 2
    return write_preprocessed_dataset(Path(nnunet_env["nnUNet_preprocessed"]), plans, n_channels=2)


def test_primus_checkpoint_gives_primus_plans_at_its_pretraining_patch(tmp_path: Path, target: Path):
    path, _ = write_nnssl_primus(tmp_path / "checkpoint_final.pth")
    lines: list[str] = []
    variant = json.loads(write_plans_variant(906, checkpoint=path, log=lines.append).read_text())
    conf = variant["configurations"]["3d_fullres"]
    assert conf["architecture"] == {"network_class_name": PRIMUS, "_kw_requires_import": [], "arch_kwargs": {
        "embed_dim": 48, "patch_embed_size": [8, 8, 8], "eva_depth": 2, "eva_numheads": 2, "input_shape": [32, 32, 32],
        "init_values": 0.1, "scale_attn_inner": True}}
    assert conf["patch_size"] == [32, 32, 32]  # the pretraining patch, though the median image is 24^3
    assert any("larger than the median image [24, 24, 24]: smaller images are padded" in line for line in lines)
    assert variant["monai_ssl_plugin"]["pretrained_family"] == "nnunet.Primus"
    with pytest.raises(PluginError, match=r"pretrained at patch \[32, 32, 32\].*patch \[48, 48, 48\] would need it "
                                          r"resampled.*Drop --patch_size"):
        write_plans_variant(906, checkpoint=path, patch_size=[48, 48, 48], plans_identifier="p48", log=None)


def _trainer(target: Path, plans_file: Path):
    plans = json.loads(plans_file.read_text())
    dataset_json = json.loads((target / "dataset.json").read_text())
    return nnUNetTrainerSSL_short(plans_copy(plans), "3d_fullres", 0, dataset_json, torch.device("cpu"))


def test_trainer_loads_down_projection_and_eva_and_reports_them(tmp_path: Path, target: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    path, published = write_nnssl_primus(tmp_path / "checkpoint_final.pth")
    plans_file = write_plans_variant(906, checkpoint=path, log=None)
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(path))
    trainer = _trainer(target, plans_file)
    assert trainer.enable_deep_supervision is False
    trainer.initialize()
    state, report = trainer.network.state_dict(), trainer.pretrained_report
    pretrained = [k for k in published if k.startswith(("down_projection.", "eva."))]
    assert sorted(report.loaded) == sorted(pretrained) and not report.missing and not report.skipped_shape
    for key in pretrained:  # tensor by tensor; the 1-channel patch embedding repeated over the 2 channels, halved
        expected = published[key]
        if key == "down_projection.proj.weight":
            expected = expected.repeat(1, 2, 1, 1, 1) / 2
        assert torch.allclose(state[key], expected), key
    assert report.adapted == ["down_projection.proj.weight"]
    assert not torch.equal(state["up_projection.decode.0.0.weight"], published["up_projection.decode.0.0.weight"])
    log = Path(trainer.log_file).read_text()
    assert "loading pretrained stem + encoder from" in log
    assert f"pretrained stem + encoder: {len(pretrained)} tensors loaded (1 adapted), 0 missing" in log
    out = trainer.network(torch.zeros(1, 2, 32, 32, 32))
    assert out.shape == (1, 3, 32, 32, 32)


def test_trainer_refuses_a_primus_checkpoint_that_loads_nothing(tmp_path: Path, target: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    path, published = write_nnssl_primus(tmp_path / "checkpoint_final.pth")
    plans_file = write_plans_variant(906, checkpoint=path, log=None)
    obj = torch.load(path, weights_only=True)
    obj["network_weights"] = {"encoder." + k: v for k, v in published.items()}  # no key where the plan says
    torch.save(obj, tmp_path / "renamed.pth")
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(tmp_path / "renamed.pth"))
    with pytest.raises(PluginError, match="down_projection.proj.weight .* is in the network but not in the checkpoint"):
        _trainer(target, plans_file).initialize()


def test_trainer_refuses_a_patch_other_than_primus_input_shape(tmp_path: Path, target: Path):
    path, _ = write_nnssl_primus(tmp_path / "checkpoint_final.pth")
    plans_file = write_plans_variant(906, checkpoint=path, log=None)
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["patch_size"] = [40, 40, 40]
    plans_file.write_text(json.dumps(plans))
    with pytest.raises(PluginError, match=r"patch size \[40, 40, 40\] is not Primus's input_shape \[32, 32, 32\]"):
        _trainer(target, plans_file).initialize()


def test_the_trainers_builder_is_nnunets_for_u_nets(target: Path):
    """The override only leaves out deep_supervision for Primus: a U-Net is built exactly as nnU-Net builds it."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(json.loads((target / "nnUNetPlans.json").read_text()))
    cm = pm.get_configuration("3d_fullres")
    for ds in (True, False):
        torch.manual_seed(0)
        ours = nnUNetTrainerSSL_short.build_network_architecture(pm, cm, 2, 3, ds)
        torch.manual_seed(0)
        theirs = nnUNetTrainer.build_network_architecture(pm, cm, 2, 3, ds)
        assert ours.decoder.deep_supervision is ds
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def test_frozen_encoder_of_primus_is_down_projection_and_eva(tmp_path: Path, target: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    from monai_ssl_plugin.nnunet import nnUNetTrainerSSLFrozenEncoder_short

    path, _ = write_nnssl_primus(tmp_path / "checkpoint_final.pth")
    plans_file = write_plans_variant(906, checkpoint=path, log=None)
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(path))
    trainer = nnUNetTrainerSSLFrozenEncoder_short(plans_copy(json.loads(plans_file.read_text())), "3d_fullres", 0,
                                                  json.loads((target / "dataset.json").read_text()),
                                                  torch.device("cpu"))
    trainer.initialize()
    trainer.set_encoder_trainable(False)
    frozen = {k for k, p in trainer.network.named_parameters() if not p.requires_grad}
    assert frozen == {k for k, _ in trainer.network.named_parameters() if k.startswith(("down_projection.", "eva."))}
    assert any(k.startswith("up_projection.") for k, _ in trainer.network.named_parameters())

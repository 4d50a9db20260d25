"""The fine-tuning trainers in-process on a fake preprocessed dataset: load, refuse, resume, schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.nnunet import export_nnunet
from monai_ssl_plugin.nnunet import (WarmupPolyLRScheduler, env_line, ext_trainer_dir, nnUNetTrainerScratch_short,
                                     nnUNetTrainerSSL, nnUNetTrainerSSL_short, warmup_poly_lr)

from nnunet_helpers import plans_copy, tiny_plans, write_checkpoint, write_preprocessed_dataset


@pytest.fixture
def dataset(nnunet_env: dict[str, str]) -> tuple[dict, dict]:
    """Dataset901_Tiny (3 labels) preprocessed with the tiny plans: (plans, dataset_json)."""
    plans = tiny_plans()
    folder = write_preprocessed_dataset(Path(nnunet_env["nnUNet_preprocessed"]), plans)
    return plans, json.loads((folder / "dataset.json").read_text())


def make_trainer(cls, dataset: tuple[dict, dict], fold: int = 0):
    plans, dataset_json = dataset
    return cls(plans_copy(plans), "3d_fullres", fold, dataset_json, torch.device("cpu"))


def log_text(trainer) -> str:
    return Path(trainer.log_file).read_text()


def test_ssl_trainer_loads_full_pretrained_network_except_seg_layers(tmp_path: Path, dataset):
    plans, _ = dataset
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(plans))
    export_nnunet(ckpt, dataset=901)  # the conventional place
    pretrained = torch.load(ckpt, weights_only=True)["network"]

    trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
    trainer.initialize()
    state = trainer.network.state_dict()
    for key, value in state.items():
        if ".seg_layers." in key:
            assert value.shape[0] == 3  # the task's head, fresh (pretrained one had 1 output)
        else:
            assert torch.equal(value, pretrained[key]), key
    report = trainer.pretrained_report
    assert report.loaded_fraction == 1.0 and not report.missing and not report.skipped_shape
    assert all(".seg_layers." in k for k in report.skipped_filtered)
    log = log_text(trainer)
    assert "[monai-ssl] loaded" in log and "pretrained stem + encoder + decoder" in log
    assert "LR schedule: linear warm-up to 0.001 over 1 epoch(s)" in log
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_encoder_only_record_loads_stem_and_encoder(tmp_path: Path, dataset, monkeypatch: pytest.MonkeyPatch):
    plans, _ = dataset
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(plans))
    data = torch.load(ckpt, weights_only=True)
    data["record"]["pretrained_parts"] = ["stem", "encoder"]  # e.g. a contrastive pretext
    torch.save(data, ckpt)
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(export_nnunet(ckpt, tmp_path / "enc.pth")))
    trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
    trainer.initialize()
    state = trainer.network.state_dict()
    enc, dec = "encoder.stages.1.0.convs.0.conv.weight", "decoder.stages.0.convs.0.conv.weight"
    assert torch.equal(state[enc], data["network"][enc])
    assert not torch.equal(state[dec], data["network"][dec])  # the decoder starts fresh
    assert all(k.startswith(("encoder.", "decoder.encoder.")) for k in trainer.pretrained_report.loaded)


def test_missing_weights_name_the_export_command(dataset, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(PluginError, match="monai-ssl export-nnunet CHECKPOINT --dataset Dataset901_Tiny") as err:
        make_trainer(nnUNetTrainerSSL_short, dataset).initialize()
    assert "\n" not in str(err.value)
    monkeypatch.setenv("nnUNet_SSL_pretrained", "/nonexistent/file.pth")
    with pytest.raises(PluginError, match="nnUNet_SSL_pretrained=/nonexistent/file.pth does not exist"):
        make_trainer(nnUNetTrainerSSL_short, dataset).initialize()


def test_architecture_mismatch_is_refused_naming_first_layer(tmp_path: Path, dataset,
                                                             monkeypatch: pytest.MonkeyPatch):
    other = NnUNetBackbone.from_plans(tiny_plans(features=(8, 32, 32)))
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(export_nnunet(write_checkpoint(tmp_path / "o.pt", other),
                                                                  tmp_path / "o.pth")))
    trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
    with pytest.raises(PluginError, match=r"first mismatching layer encoder\.stages\.1\.0\.convs\.0\.conv\.weight "
                                          r"\(encoder stage 1\): checkpoint 32 out / 8 in channels.*vs network 16 out"
                                          r".*features_per_stage at stage 1: 32 vs 16") as err:
        trainer.initialize()
    assert "\n" not in str(err.value)


def test_more_input_channels_downstream_is_refused_at_the_stem(tmp_path: Path, nnunet_env,
                                                               monkeypatch: pytest.MonkeyPatch):
    plans = tiny_plans()
    folder = write_preprocessed_dataset(Path(nnunet_env["nnUNet_preprocessed"]), plans, n_channels=2)
    one_channel = write_checkpoint(tmp_path / "c1.pt", NnUNetBackbone.from_plans(plans))
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(one_channel))
    trainer = make_trainer(nnUNetTrainerSSL_short, (plans, json.loads((folder / "dataset.json").read_text())))
    with pytest.raises(PluginError, match=r"encoder\.stages\.0\.0\.convs\.0\.conv\.weight \(encoder stage 0\): "
                                          r"checkpoint 8 out / 1 in channels.*vs network 8 out / 2 in channels"
                                          r".*input channels 1 vs 2"):
        trainer.initialize()


def test_axis_order_and_normalisation_are_checked(tmp_path: Path, dataset, monkeypatch: pytest.MonkeyPatch):
    plans, _ = dataset
    backbone = NnUNetBackbone.from_plans(plans)
    # a raw pretraining checkpoint is accepted too (the export refuses monai order, so use it directly)
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(write_checkpoint(tmp_path / "m.pt", backbone, axis_order="monai")))
    with pytest.raises(PluginError, match=r"monai-ordered volumes \(x, y, z\)"):
        make_trainer(nnUNetTrainerSSL_short, dataset).initialize()

    ct = export_nnunet(write_checkpoint(tmp_path / "ct.pt", backbone, normalization="CTNormalization"),
                       tmp_path / "ct.pth")
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(ct))
    with pytest.raises(PluginError, match=r"normalisation \['CTNormalization'\], the plans use "
                                          r"\['ZScoreNormalization'\]"):
        make_trainer(nnUNetTrainerSSL_short, dataset).initialize()
    monkeypatch.setenv("nnUNet_SSL_allow_normalization_mismatch", "1")
    trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
    trainer.initialize()
    assert trainer.pretrained_report.loaded_fraction == 1.0 and "WARNING" in log_text(trainer)


def test_continue_and_validation_restore_nnunet_checkpoint_without_pretrained_load(tmp_path: Path, dataset,
                                                                                   monkeypatch: pytest.MonkeyPatch):
    plans, _ = dataset
    export_nnunet(write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(plans)), dataset=901)
    first = make_trainer(nnUNetTrainerSSL_short, dataset)
    first.initialize()
    with torch.no_grad():
        for p in first.network.parameters():
            p.add_(1.0)  # "trained" weights, unlike the pretrained ones
    saved = tmp_path / "checkpoint_latest.pth"
    first.save_checkpoint(str(saved))

    # --c / --val call load_checkpoint, which initializes: the pretrained file must not be needed or applied
    monkeypatch.setenv("nnUNet_SSL_pretrained", "/nonexistent/file.pth")
    second = make_trainer(nnUNetTrainerSSL_short, dataset)
    second.load_checkpoint(str(saved))
    assert second.pretrained_report is None
    for key, value in second.network.state_dict().items():
        assert torch.equal(value, first.network.state_dict()[key]), key


def test_scratch_twin_shares_schedule_and_loads_nothing(dataset):
    ssl, scratch = make_trainer(nnUNetTrainerSSL_short, dataset), make_trainer(nnUNetTrainerScratch_short, dataset, 1)
    scratch.initialize()  # no pretrained file anywhere: fine for the scratch twin
    assert scratch.pretrained_report is None
    assert (ssl.initial_lr, scratch.initial_lr) == (1e-3, 1e-2)
    numbers = ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch", "warmup_epochs", "save_every")
    assert [getattr(ssl, a) for a in numbers] == [getattr(scratch, a) for a in numbers] == [2, 4, 2, 1, 1]
    assert isinstance(scratch.lr_scheduler, WarmupPolyLRScheduler)


def test_env_overrides(dataset, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("nnUNet_SSL_lr", "5e-4")
    monkeypatch.setenv("nnUNet_SSL_warmup_epochs", "0")
    monkeypatch.setenv("nnUNet_SSL_epochs", "3")
    t = make_trainer(nnUNetTrainerSSL_short, dataset)
    assert (t.initial_lr, t.warmup_epochs, t.num_epochs) == (5e-4, 0, 3)
    assert make_trainer(nnUNetTrainerScratch_short, dataset, 1).initial_lr == 1e-2  # SSL lr is not the scratch lr
    monkeypatch.setenv("nnUNet_SSL_lr", "fast")
    with pytest.raises(PluginError, match="nnUNet_SSL_lr='fast' is not a number"):
        make_trainer(nnUNetTrainerSSL_short, dataset)


def test_warmup_poly_schedule():
    assert [warmup_poly_lr(e, 1e-3, 100, 50) for e in (0, 24, 49)] == pytest.approx([2e-5, 5e-4, 1e-3])
    assert warmup_poly_lr(50, 1e-3, 100, 50) == pytest.approx(1e-3)
    assert warmup_poly_lr(75, 1e-3, 100, 50) == pytest.approx(1e-3 * 0.5 ** 0.9)
    assert warmup_poly_lr(10, 1e-2, 100, 0) == pytest.approx(1e-2 * 0.9 ** 0.9)  # no warm-up: nnU-Net's poly
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupPolyLRScheduler(opt, 1e-3, 100, 50)
    sched.step(60)  # as nnU-Net calls it: with the epoch, so --c resumes on the right rate
    assert opt.param_groups[0]["lr"] == pytest.approx(warmup_poly_lr(60, 1e-3, 100, 50))
    with pytest.raises(PluginError, match="warmup_epochs=200 is outside"):
        WarmupPolyLRScheduler(opt, 1e-3, 100, 200)


def test_nnunet_finds_the_trainers_and_prediction_builder_is_nnunets(nnunet_env):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    assert recursive_find_trainer_class_by_name("nnUNetTrainerSSL_short") is nnUNetTrainerSSL_short
    assert recursive_find_trainer_class_by_name("nnUNetTrainerScratch_short") is nnUNetTrainerScratch_short
    # untouched (new signature): nnUNetv2_predict -tr builds the network through it
    assert nnUNetTrainerSSL.build_network_architecture is nnUNetTrainer.build_network_architecture
    assert env_line() == f"export nnUNet_extTrainer={ext_trainer_dir()}"
    assert sorted(p.name for p in Path(ext_trainer_dir()).glob("*.py")) == ["__init__.py", "monai_ssl_trainers.py"]

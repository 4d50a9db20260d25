"""The fine-tuning trainers in-process on a fake preprocessed dataset: load, adapt, refuse, resume, schedule."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest
import torch

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.nnunet import export_nnunet
from monai_ssl_plugin.nnunet import (SawtoothLRScheduler, WarmupPolyLRScheduler, env_line, ext_trainer_dir,
                                     nnUNetTrainerScratch_short, nnUNetTrainerSSL_short,
                                     nnUNetTrainerSSLFrozenEncoder_short, nnUNetTrainerSSLSawtooth,
                                     nnUNetTrainerSSLSawtooth_short, sawtooth_lr, warmup_poly_lr)

from nnunet_helpers import (plans_copy, tiny_plans, tiny_resenc_kwargs, write_checkpoint, write_nnssl_checkpoint,
                            write_preprocessed_dataset)


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


def _two_channel_dataset(nnunet_env) -> tuple[dict, dict]:
    plans = tiny_plans()
    folder = write_preprocessed_dataset(Path(nnunet_env["nnUNet_preprocessed"]), plans, n_channels=2)
    return plans, json.loads((folder / "dataset.json").read_text())


def _extra_dataset(plans: dict, name: str, n_channels: int = 1) -> tuple[dict, dict]:
    plans = json.loads(json.dumps(dict(plans, dataset_name=name)))
    folder = write_preprocessed_dataset(Path(os.environ["nnUNet_preprocessed"]), plans, n_channels=n_channels)
    return plans, json.loads((folder / "dataset.json").read_text())


def test_more_input_channels_downstream_repeat_the_stem_and_are_reported(tmp_path: Path, nnunet_env,
                                                                        monkeypatch: pytest.MonkeyPatch):
    plans, dataset_json = _two_channel_dataset(nnunet_env)
    source = NnUNetBackbone.from_plans(plans)
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(write_checkpoint(tmp_path / "c1.pt", source)))
    trainer = make_trainer(nnUNetTrainerSSL_short, (plans, dataset_json))
    trainer.initialize()
    report, stem = trainer.pretrained_report, "encoder.stages.0.0.convs.0.conv.weight"
    assert report.loaded_fraction == 1.0 and stem in report.adapted
    assert trainer.pretrained_notes[stem] == "input channels 1 -> 2 (repeated x2, divided by 2)"
    assert f"adapted {stem}: input channels 1 -> 2 (repeated x2, divided by 2)" in log_text(trainer)
    # both channels equal to the pretrained input: the encoder computes exactly the pretrained features
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        got = trainer.network.encoder(x.repeat(1, 2, 1, 1, 1))
        want = source.network.encoder(x)
    assert all(torch.allclose(g, w, atol=1e-4) for g, w in zip(got, want))


def _multichannel_plans(schemes: list[str]) -> dict:
    plans = tiny_plans()
    conf = plans["configurations"]["3d_fullres"]
    conf["normalization_schemes"], conf["use_mask_for_norm"] = list(schemes), [False] * len(schemes)
    return plans


def test_multichannel_normalisation_is_checked_per_channel_through_the_channel_adaptation(
        tmp_path: Path, nnunet_env, monkeypatch: pytest.MonkeyPatch):
    """CT + MRI pretrained (2 channels) -> 4 channels: the stem is tiled, and so is the per-channel normalisation."""
    ct, z = "CTNormalization", "ZScoreNormalization"
    two = write_checkpoint(tmp_path / "ct_mr.pt", NnUNetBackbone.from_plans(tiny_plans(), in_channels=2),
                           normalization=[ct, z])
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(two))
    tiled = _extra_dataset(_multichannel_plans([ct, z, ct, z]), "Dataset906_Tiled", n_channels=4)
    trainer = make_trainer(nnUNetTrainerSSL_short, tiled)
    trainer.initialize()
    stem = "encoder.stages.0.0.convs.0.conv.weight"
    assert trainer.pretrained_report.loaded_fraction == 1.0
    assert trainer.pretrained_notes[stem] == "input channels 2 -> 4 (repeated x2, divided by 2)"
    assert (f"normalisation ['{ct}', '{z}', '{ct}', '{z}'] matches the pretraining record (2 channels repeated)"
            in log_text(trainer))
    # the stem's channel j is pretrained channel j mod 2, so CT, CT, MRI, MRI does not fit: channels 1 and 2 named
    grouped = _extra_dataset(_multichannel_plans([ct, ct, z, z]), "Dataset907_Grouped", n_channels=4)
    with pytest.raises(PluginError, match=r"channel 1: CTNormalization in the plans, ZScoreNormalization pretrained "
                                          r"\(pretrained channel 1 repeated\); channel 2: ZScoreNormalization in the "
                                          r"plans, CTNormalization pretrained .*nnUNet_SSL_allow_normalization_mismatch"):
        make_trainer(nnUNetTrainerSSL_short, grouped).initialize()
    # same channel count, one channel's scheme differs: refused naming that channel
    mixed = _extra_dataset(_multichannel_plans([ct, ct]), "Dataset908_Mixed", n_channels=2)
    with pytest.raises(PluginError, match=r"the plans use \['CTNormalization', 'CTNormalization'\] \(channel 1: "
                                          r"CTNormalization in the plans, ZScoreNormalization pretrained\)\."):
        make_trainer(nnUNetTrainerSSL_short, mixed).initialize()


def test_channel_adaptation_can_be_switched_off_and_the_error_names_the_fix(tmp_path: Path, nnunet_env,
                                                                            monkeypatch: pytest.MonkeyPatch):
    plans, dataset_json = _two_channel_dataset(nnunet_env)
    one_channel = write_checkpoint(tmp_path / "c1.pt", NnUNetBackbone.from_plans(plans))
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(one_channel))
    monkeypatch.setenv("nnUNet_SSL_adapt", "none")
    trainer = make_trainer(nnUNetTrainerSSL_short, (plans, dataset_json))
    with pytest.raises(PluginError, match=r"encoder\.stages\.0\.0\.convs\.0\.conv\.weight \(encoder stage 0\): "
                                          r"checkpoint 8 out / 1 in channels.*vs network 8 out / 2 in channels"
                                          r".*input channels 1 vs 2") as err:
        trainer.initialize()
    msg = str(err.value)
    assert "\n" not in msg and f"monai-ssl nnunet-plans Dataset901_Tiny --checkpoint {one_channel}" in msg
    assert "nnUNet_SSL_adapt=channels" in msg


def test_kernel_differences_are_refused_by_default_and_averaged_when_allowed(tmp_path: Path, nnunet_env,
                                                                             monkeypatch: pytest.MonkeyPatch):
    dataset = _extra_dataset(tiny_plans(kernel=(1, 3, 3)), "Dataset901_Tiny")
    ckpt = write_checkpoint(tmp_path / "k.pt", NnUNetBackbone.from_plans(tiny_plans()))
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(ckpt))
    with pytest.raises(PluginError, match=r"encoder stage 0\): checkpoint 8 out / 1 in channels, kernel 3x3x3 vs "
                                          r"network 8 out / 1 in channels, kernel 1x3x3.*kernel_sizes at stage 0"
                                          r".*monai-ssl nnunet-plans Dataset901_Tiny --checkpoint .*"
                                          r"nnUNet_SSL_adapt=channels,kernels"):
        make_trainer(nnUNetTrainerSSL_short, dataset).initialize()
    monkeypatch.setenv("nnUNet_SSL_adapt", "channels,kernels")
    trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
    trainer.initialize()
    key = "encoder.stages.1.0.convs.0.conv.weight"
    pretrained = torch.load(ckpt, weights_only=True)["network"]
    assert torch.allclose(trainer.network.state_dict()[key], pretrained[key].mean(dim=2, keepdim=True))
    assert trainer.pretrained_notes[key] == "kernel 3x3x3 -> 1x3x3 (averaged)"
    assert trainer.pretrained_report.loaded_fraction == 1.0


def test_stage_differences_load_the_common_stages_or_refuse_below_the_minimum(tmp_path: Path, dataset,
                                                                              monkeypatch: pytest.MonkeyPatch):
    deeper = write_checkpoint(tmp_path / "d.pt", NnUNetBackbone.from_plans(tiny_plans(features=(8, 16, 32, 64))))
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(deeper))
    with pytest.raises(PluginError, match=r"n_stages 4 vs 3.*nnUNet_SSL_adapt=channels,stages"):
        make_trainer(nnUNetTrainerSSL_short, dataset).initialize()
    # deeper *and* wider at stage 0: allowing 'stages' would not fix the width, so it is not offered
    wider = write_checkpoint(tmp_path / "w.pt", NnUNetBackbone.from_plans(tiny_plans(features=(16, 16, 32, 64))))
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(wider))
    with pytest.raises(PluginError, match=r"encoder stage 0\): checkpoint 16 out.*n_stages 4 vs 3") as err:
        make_trainer(nnUNetTrainerSSL_short, dataset).initialize()
    assert "nnUNet_SSL_adapt" not in str(err.value)
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(deeper))
    monkeypatch.setenv("nnUNet_SSL_adapt", "channels,stages")
    trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
    trainer.initialize()
    report = trainer.pretrained_report
    assert report.loaded_fraction == 1.0 and not report.missing
    assert any(k.startswith("encoder.stages.3.") for k in report.unexpected)
    assert all(k.startswith("encoder.") for k in report.loaded)  # the decoder starts fresh
    assert "loading the common encoder stages; the decoder starts fresh" in log_text(trainer)

    # the other way round: the network is deeper than the checkpoint
    deep = _extra_dataset(tiny_plans(features=(8, 16, 32, 64)), "Dataset902_Deep")
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(write_checkpoint(tmp_path / "s.pt",
                                                                     NnUNetBackbone.from_plans(dataset[0]))))
    with pytest.raises(PluginError, match=r"Only \d+\.\d% of the targeted pretrained values would load .*need 50\.0%"
                                          r".*encoder stages: 3 pretrained vs 4.*nnUNet_SSL_min_loaded_fraction"):
        make_trainer(nnUNetTrainerSSL_short, deep).initialize()
    monkeypatch.setenv("nnUNet_SSL_min_loaded_fraction", "0.05")
    trainer = make_trainer(nnUNetTrainerSSL_short, deep)
    trainer.initialize()
    assert trainer.pretrained_report.missing and all(".stages.3." in k for k in trainer.pretrained_report.missing)


def test_load_modes(tmp_path: Path, dataset, monkeypatch: pytest.MonkeyPatch):
    plans, _ = dataset
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(plans))  # MAE: decoder pretrained
    pretrained = torch.load(ckpt, weights_only=True)["network"]
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(ckpt))
    dec = "decoder.stages.0.convs.0.conv.weight"
    monkeypatch.setenv("nnUNet_SSL_load", "encoder")
    trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
    trainer.initialize()
    assert not torch.equal(trainer.network.state_dict()[dec], pretrained[dec])
    assert "loading pretrained stem + encoder from" in log_text(trainer)

    data = torch.load(ckpt, weights_only=True)
    data["record"]["pretrained_parts"] = ["stem", "encoder"]
    torch.save(data, tmp_path / "enc.pt")
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(tmp_path / "enc.pt"))
    monkeypatch.setenv("nnUNet_SSL_load", "encoder+decoder")
    trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
    trainer.initialize()
    assert torch.equal(trainer.network.state_dict()[dec], pretrained[dec])
    assert "says the decoder was not pretrained" in log_text(trainer)
    monkeypatch.setenv("nnUNet_SSL_load", "everything")
    with pytest.raises(PluginError, match="nnUNet_SSL_load='everything' is not a load mode"):
        make_trainer(nnUNetTrainerSSL_short, dataset)


def test_nnssl_checkpoint_initialises_the_trainer(tmp_path: Path, nnunet_env, monkeypatch: pytest.MonkeyPatch):
    """A file in nnssl's layout (no ssl_record; BYOL-style encoder prefix, encoder only) into a 2-channel CT target."""
    plans = tiny_plans(normalization="CTNormalization")
    conf = plans["configurations"]["3d_fullres"]
    conf["architecture"]["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    conf["architecture"]["arch_kwargs"] = tiny_resenc_kwargs()
    conf["normalization_schemes"], conf["use_mask_for_norm"] = ["CTNormalization"] * 2, [False] * 2
    dataset = _extra_dataset(plans, "Dataset901_Tiny", n_channels=2)
    path, canonical = write_nnssl_checkpoint(tmp_path / "checkpoint_final.pth", "ResidualEncoderUNet",
                                             tiny_resenc_kwargs(), prefix="online_encoder", encoder_only=True)
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(path))
    trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
    trainer.initialize()
    state, log = trainer.network.state_dict(), log_text(trainer)
    key = "encoder.stages.2.blocks.0.conv1.conv.weight"
    assert torch.equal(state[key], canonical[key])
    assert "encoder.stem.convs.0.conv.weight" in trainer.pretrained_report.adapted  # 1 -> 2 channels
    assert "is an nnssl checkpoint, pretrained with ['ZScoreNormalization']" in log  # CT target: a warning
    assert "loading pretrained stem + encoder from" in log


def test_every_nnssl_cnn_family_fine_tunes_through_the_trainer(tmp_path: Path, nnunet_env,
                                                               monkeypatch: pytest.MonkeyPatch):
    """nnssl's CNN families: ResidualEncoderUNet / ResEncL (a ResEnc), NoSkipResEncL (ResEnc-L's encoder, its own
    decoder: stem + encoder load, the decoder starts fresh), PlainConvUNet. Scaled-down architectures, same keys."""
    from nnunet_helpers import DNA

    resenc_plans = tiny_plans()
    conf = resenc_plans["configurations"]["3d_fullres"]
    conf["architecture"]["network_class_name"] = DNA + "ResidualEncoderUNet"
    conf["architecture"]["arch_kwargs"] = tiny_resenc_kwargs()
    resenc = _extra_dataset(resenc_plans, "Dataset901_Tiny")
    _, canonical = write_nnssl_checkpoint(tmp_path / "r.pth", "ResidualEncoderUNet", tiny_resenc_kwargs())
    noskip_state = {k: v for k, v in canonical.items() if k.startswith("encoder.")}
    noskip_state["decoder.stages.0.convs.0.conv.weight"] = torch.zeros(16, 32, 3, 3, 3)  # no skips: other shapes
    cases = [("ResidualEncoderUNet", tmp_path / "r.pth", resenc, canonical),
             ("NoSkipResEncL", write_nnssl_checkpoint(tmp_path / "n.pth", "NoSkipResEncL", tiny_resenc_kwargs(),
                                                      state=noskip_state)[0], resenc, noskip_state)]
    plain_path, plain_state = write_nnssl_checkpoint(tmp_path / "p.pth", "PlainConvUNet",
                                                     tiny_plans()["configurations"]["3d_fullres"]["architecture"][
                                                         "arch_kwargs"])
    cases.append(("PlainConvUNet", plain_path, _extra_dataset(tiny_plans(), "Dataset903_Plain"), plain_state))
    for family, path, dataset, state in cases:
        monkeypatch.setenv("nnUNet_SSL_pretrained", str(path))
        trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
        trainer.initialize()
        loaded = trainer.network.state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in trainer.pretrained_report.loaded), family
        assert trainer.pretrained_report.loaded_fraction == 1.0 and "pretrained stem + encoder:" in log_text(trainer)
        assert all(k.startswith("encoder.") for k in trainer.pretrained_report.loaded), family  # decoder fresh


def test_axis_order_is_transposed_or_refused_and_normalisation_checked(tmp_path: Path, dataset,
                                                                       monkeypatch: pytest.MonkeyPatch):
    plans, _ = dataset
    backbone = NnUNetBackbone.from_plans(plans)
    # isotropic kernels and strides: the transposed architecture is the plans' own -> exact, loaded, reported
    monai = write_checkpoint(tmp_path / "m.pt", backbone, axis_order="monai")
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(monai))
    trainer = make_trainer(nnUNetTrainerSSL_short, dataset)
    trainer.initialize()
    key = "encoder.stages.1.0.convs.0.conv.weight"
    source = torch.load(monai, weights_only=True)["network"][key]
    assert torch.equal(trainer.network.state_dict()[key], source.permute(0, 1, 4, 3, 2))
    assert trainer.pretrained_notes[key] == "axes (x, y, z) -> (z, y, x)" and key in trainer.pretrained_report.adapted
    assert "was pretrained on (x, y, z) volumes; transposed" in log_text(trainer)
    # anisotropic strides pretrained in (x, y, z): plans with the same (not reversed) strides are refused
    aniso = tiny_plans()
    aniso["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"] = [[1, 1, 1], [2, 2, 1],
                                                                                         [2, 2, 1]]
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(write_checkpoint(tmp_path / "a.pt", NnUNetBackbone.from_plans(
        aniso), axis_order="monai")))
    aniso_ds = _extra_dataset(aniso, "Dataset903_Aniso")
    with pytest.raises(PluginError, match=r"pretrained on \(x, y, z\) volumes; transposed to nnU-Net's \(z, y, x\) its "
                                          r"strides are \[\[1, 1, 1\], \[1, 2, 2\], \[1, 2, 2\]\], but .* has "
                                          r"\[\[1, 1, 1\], \[2, 2, 1\], \[2, 2, 1\]\].*monai-ssl nnunet-plans"):
        make_trainer(nnUNetTrainerSSL_short, aniso_ds).initialize()

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
    # the plans fingerprint in the log makes the fairness checkable after the fact
    from monai_ssl_plugin.nnunet.plans import plans_fingerprint

    assert f"fingerprint {plans_fingerprint(dataset[0])}" in log_text(scratch)


def test_env_overrides(dataset, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("nnUNet_SSL_lr", "5e-4")
    monkeypatch.setenv("nnUNet_SSL_warmup_epochs", "0")
    monkeypatch.setenv("nnUNet_SSL_epochs", "3")
    monkeypatch.setenv("nnUNet_SSL_iterations", "7")
    t = make_trainer(nnUNetTrainerSSL_short, dataset)
    assert (t.initial_lr, t.warmup_epochs, t.num_epochs, t.num_iterations_per_epoch) == (5e-4, 0, 3, 7)
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


def test_sawtooth_schedule_and_frozen_encoder(dataset, monkeypatch: pytest.MonkeyPatch):
    # published numbers over 1000 epochs: decoder tooth 25 warm-up + 25 poly, then 25 warm-up + poly
    lrs = [sawtooth_lr(e, 1e-3, 1000, 25, 50) for e in (0, 24, 25, 49, 50, 74, 75)]
    assert lrs == pytest.approx([4e-5, 1e-3, 1e-3, 1e-3 * (1 / 25) ** 0.9, 4e-5, 1e-3, 1e-3])
    monkeypatch.setenv("nnUNet_SSL_epochs", "150")  # both teeth scale with the run
    t = make_trainer(nnUNetTrainerSSLSawtooth, dataset)
    assert (t.warmup_epochs, t.decoder_epochs, t.num_epochs) == (4, 8, 150)
    monkeypatch.delenv("nnUNet_SSL_epochs")

    saw = make_trainer(nnUNetTrainerSSLSawtooth_short, dataset)
    saw.load_pretrained = False  # no weights needed to test the schedule and the freezing
    saw.initialize()
    assert isinstance(saw.lr_scheduler, SawtoothLRScheduler) and (saw.decoder_epochs, saw.num_epochs) == (1, 3)
    saw.on_train_epoch_start()  # epoch 0: decoder only
    encoder, decoder = saw.network.encoder, saw.network.decoder
    assert not any(p.requires_grad for p in encoder.parameters())
    assert all(p.requires_grad for n, p in decoder.named_parameters() if not n.startswith("encoder."))
    assert saw.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    saw.current_epoch = 1  # epoch 1: the whole network, warm-up restarts
    saw.on_train_epoch_start()
    assert all(p.requires_grad for p in encoder.parameters())
    log = log_text(saw)
    assert "sawtooth — decoder only (encoder frozen) for epochs 0-0" in log
    assert "encoder frozen from epoch 0" in log and "encoder trainable from epoch 1" in log

    probe = make_trainer(nnUNetTrainerSSLFrozenEncoder_short, dataset)
    probe.load_pretrained = False
    probe.initialize()
    for epoch in range(probe.num_epochs):
        probe.current_epoch = epoch
        probe.on_train_epoch_start()
        assert not any(p.requires_grad for p in probe.network.encoder.parameters())
    assert probe.initial_lr == 1e-2


def test_frozen_parameters_do_not_move_in_a_training_step(dataset):
    probe = make_trainer(nnUNetTrainerSSLFrozenEncoder_short, dataset)
    probe.load_pretrained = False
    probe.initialize()
    probe.on_train_epoch_start()
    before = {k: v.clone() for k, v in probe.network.state_dict().items()}
    target = [torch.randint(0, 3, (2, 1, 16 // 2 ** i, 16 // 2 ** i, 16 // 2 ** i)).float() for i in range(3)]
    probe.train_step({"data": torch.randn(2, 1, 16, 16, 16), "target": target})
    after = probe.network.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("encoder."))
    assert not all(torch.equal(after[k], before[k]) for k in after if k.startswith("decoder.stages."))


def test_old_build_network_architecture_signature_still_loads(tmp_path: Path, dataset):
    """A user subclass with nnU-Net's old static signature: nnU-Net builds through it, our loading is unaffected."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    class OldSignature(nnUNetTrainerSSL_short):
        @staticmethod
        def build_network_architecture(architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import,
                                       num_input_channels, num_output_channels, enable_deep_supervision=True):
            return get_network_from_plans(architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import,
                                          num_input_channels, num_output_channels, allow_init=True,
                                          deep_supervision=enable_deep_supervision)

    plans, _ = dataset
    export_nnunet(write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(plans)), dataset=901)
    trainer = make_trainer(OldSignature, dataset)
    with pytest.warns(DeprecationWarning, match="old build_network_architecture signature"):
        trainer.initialize()
    assert trainer.pretrained_report.loaded_fraction == 1.0


def test_nnunet_finds_the_trainers_and_prediction_builder_is_nnunets(nnunet_env):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from monai_ssl_plugin.nnunet.trainers import TRAINERS

    for cls in TRAINERS:
        assert recursive_find_trainer_class_by_name(cls.__name__) is cls
        # nnU-Net's new signature: nnUNetv2_predict -tr builds the network through it (nnU-Net's builder; networks
        # without deep supervision, Primus, are not given the argument: tests/nnunet/test_primus.py)
        assert "plans_manager" in inspect.signature(cls.build_network_architecture).parameters
    assert env_line() == f"export nnUNet_extTrainer={ext_trainer_dir()}"
    assert sorted(p.name for p in Path(ext_trainer_dir()).glob("*.py")) == ["__init__.py", "monai_ssl_trainers.py"]


def test_pretrainedtrainer_recipe_variant_has_masters_settings(tmp_path: Path, dataset):
    """nnU-Net master's PretrainedTrainer: lr 1e-3 (scratch 1e-2), 50 warm-up epochs then poly to 1000, 250
    iterations, SGD 0.99 Nesterov wd 3e-5, no deep supervision, batch 2, stem + encoder only."""
    from monai_ssl_plugin.nnunet import (nnUNetTrainerScratch_PretrainedTrainer, nnUNetTrainerSSL_PretrainedTrainer,
                                         nnUNetTrainerSSL_PretrainedTrainer_short)

    full, scratch = make_trainer(nnUNetTrainerSSL_PretrainedTrainer, dataset), \
        make_trainer(nnUNetTrainerScratch_PretrainedTrainer, dataset, 1)
    assert (full.initial_lr, full.warmup_epochs, full.num_epochs, full.num_iterations_per_epoch) == (1e-3, 50, 1000, 250)
    assert full.num_val_iterations_per_epoch == 50 and full.weight_decay == 3e-5
    assert (scratch.initial_lr, scratch.load_pretrained, scratch.warmup_epochs) == (1e-2, False, 50)
    assert full.enable_deep_supervision is False and full.load_parts == "encoder"
    assert full.configuration_manager.batch_size == 2
    assert [warmup_poly_lr(e, 1e-3, 1000, 50) for e in (0, 49, 50, 999)] == pytest.approx(
        [1e-3 / 50, 1e-3, 1e-3, 1e-3 * (1 / 950) ** 0.9])

    plans = dict(dataset[0], configurations={"3d_fullres": dict(dataset[0]["configurations"]["3d_fullres"],
                                                                batch_size=5)})
    ckpt = write_checkpoint(tmp_path / "final.pt", NnUNetBackbone.from_plans(plans))
    export_nnunet(ckpt, dataset=901)
    short = make_trainer(nnUNetTrainerSSL_PretrainedTrainer_short, (plans, dataset[1]))
    short.initialize()
    assert short.batch_size == 2 and short.network.decoder.deep_supervision is False
    pretrained = torch.load(ckpt, weights_only=True)["network"]
    state = short.network.state_dict()
    assert torch.equal(state["encoder.stages.1.0.convs.0.conv.weight"], pretrained["encoder.stages.1.0.convs.0.conv.weight"])
    assert not torch.equal(state["decoder.stages.0.convs.0.conv.weight"], pretrained["decoder.stages.0.convs.0.conv.weight"])
    assert "pretrained stem + encoder:" in log_text(short)
    optimizer = short.optimizer
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.99
    assert optimizer.defaults["nesterov"] is True


def test_a_patch_with_a_one_voxel_bottleneck_is_refused_before_the_first_step(nnunet_env):
    plans = tiny_plans(patch_size=(4, 4, 4))  # 3 stages, total stride 4: a 1-voxel bottleneck
    folder = write_preprocessed_dataset(Path(nnunet_env["nnUNet_preprocessed"]), plans)
    trainer = make_trainer(nnUNetTrainerScratch_short, (plans, json.loads((folder / "dataset.json").read_text())))
    with pytest.raises(PluginError, match=r"patch size \[4, 4, 4\] does not fit.*bottleneck holds \[1, 1, 1\].*"
                                          r"--patch_size \"\[8, 8, 8\]\""):
        trainer.initialize()


def test_a_resenc_checkpoint_on_plainconvunet_plans_is_not_offered_the_stage_adaptation(
        tmp_path: Path, dataset, monkeypatch: pytest.MonkeyPatch):
    """Different classes share no key: loading 'the stages both have' would load nothing, so that hint is not given,
    and when asked for anyway the refusal names the plans command, not a lower minimum."""
    from nnunet_helpers import DNA

    resenc = NnUNetBackbone(DNA + "ResidualEncoderUNet", tiny_resenc_kwargs(features=(8, 16, 32, 64)),
                            ["conv_op", "norm_op", "dropout_op", "nonlin"], in_channels=1)
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(write_checkpoint(tmp_path / "r.pt", resenc)))
    with pytest.raises(PluginError, match=r"network class ResidualEncoderUNet vs PlainConvUNet.*monai-ssl nnunet-plans"
                                          r" Dataset901_Tiny --checkpoint") as err:
        make_trainer(nnUNetTrainerSSL_short, dataset).initialize()
    assert "nnUNet_SSL_adapt" not in str(err.value)
    monkeypatch.setenv("nnUNet_SSL_adapt", "channels,stages")
    with pytest.raises(PluginError, match=r"Only 0\.0% .*nothing of the pretrained network has a place") as err:
        make_trainer(nnUNetTrainerSSL_short, dataset).initialize()
    assert "nnunet-plans Dataset901_Tiny --checkpoint" in str(err.value)
    assert "min_loaded_fraction" not in str(err.value).split("Fix:")[1]

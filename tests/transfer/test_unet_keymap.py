"""nnU-Net PlainConvUNet <-> MONAI DynUNet: the key map gives the same encoder computation, stage by stage, both
ways; geometry that is not the same computation is refused in one line."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DynUNet
from monai_ssl_helpers import dynunet_encoder_features, save_checkpoint

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone, _arch_kwargs
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.unet_keymap import (check_same_geometry, dynunet_to_plain_unet, plain_unet_geometry,
                                                   plain_unet_to_dynunet)

DNA = "dynamic_network_architectures.architectures.unet."
FEATURES, STRIDES = [4, 8, 16, 16], [1, 2, 2, 2]
KERNELS = [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]  # one anisotropic stage: axes must not be mixed up


def plain_unet(convs: int = 2) -> NnUNetBackbone:
    kw = _arch_kwargs(FEATURES, STRIDES, 3, residual=False, blocks=[convs] * 4, decoder_convs=[2] * 3)
    kw["kernel_sizes"] = KERNELS
    backbone = NnUNetBackbone(DNA + "PlainConvUNet", kw, ["conv_op", "norm_op", "dropout_op", "nonlin"], 1, 2)
    with torch.no_grad():  # away from the initialisation, biases included: dropping them must still be exact
        for p in backbone.network.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return backbone


def dynunet(**kw) -> DynUNet:
    args = dict(kernel_size=KERNELS, strides=STRIDES, upsample_kernel_size=STRIDES[1:], filters=FEATURES)
    return DynUNet(3, 1, 2, **{**args, **kw}).eval()



def test_plain_unet_weights_give_dynunet_the_same_encoder_features():
    torch.manual_seed(0)
    source = plain_unet()
    target = dynunet()
    mapped, biases = plain_unet_to_dynunet(source.network.state_dict(), n_stages=4)
    result = target.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys
    encoder_missing = [k for k in result.missing_keys if k.startswith(("input_block.", "downsamples.", "bottleneck."))]
    assert encoder_missing == []
    assert len(biases) == 8 and all(k.endswith("conv.bias") for k in biases)
    assert any(float(source.network.state_dict()[k].abs().max()) > 0.01 for k in biases)  # real biases were dropped
    x = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        expected = source.network.eval().encoder(x)
        got = dynunet_encoder_features(target, x)
    assert len(got) == len(expected) == 4
    for stage, (a, b) in enumerate(zip(expected, got)):
        assert a.shape == b.shape, stage
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5, msg=f"stage {stage}")


def test_dynunet_weights_give_plain_unet_the_same_encoder_features_with_zero_biases():
    torch.manual_seed(1)
    source = dynunet()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.2 * torch.randn_like(p))
    target = plain_unet()
    mapped, filled = dynunet_to_plain_unet(source.state_dict(), n_stages=4)
    assert len(filled) == 8 and all(not mapped[k].any() for k in filled)
    result = target.network.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys
    enc_missing = [k for k in result.missing_keys if k.startswith("encoder.") and "all_modules" not in k]
    assert enc_missing == []
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        expected = dynunet_encoder_features(source, x)
        got = target.network.eval().encoder(x)
    for stage, (a, b) in enumerate(zip(expected, got)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5, msg=f"stage {stage}")


def test_geometry_that_differs_is_refused_in_one_line_naming_the_argument():
    source = plain_unet_geometry(plain_unet().constructor["arch_kwargs"])
    check_same_geometry(source, source)  # the same network passes
    for change, argument in (({"features": (4, 8, 16, 32)}, "filters="), ({"strides": ((1,) * 3,) * 4}, "strides="),
                             ({"kernel_sizes": ((3, 3, 3),) * 4}, "kernel_size="), ({"norm": "batch"}, "norm_name="),
                             ({"nonlin": "relu"}, "act_name=('leakyrelu', {'negative_slope': 0.01})")):
        target = type(source)(**{**source.__dict__, **change})
        with pytest.raises(PluginError) as err:
            check_same_geometry(source, target)
        assert argument in str(err.value) and "\n" not in str(err.value), change
    one_conv = plain_unet_geometry(plain_unet(convs=1).constructor["arch_kwargs"])
    with pytest.raises(PluginError, match="n_conv_per_stage 2") as err:
        check_same_geometry(one_conv, source)
    assert "\n" not in str(err.value)


def _dynunet_checkpoint(tmp_path, **kw):
    from monai_ssl_plugin.backbones.unet import MonaiDynUNetBackbone

    backbone = MonaiDynUNetBackbone(1, 1, 3, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2],
                                    filters=[8, 16, 32], **kw)
    with torch.no_grad():
        for p in backbone.network.parameters():
            p.add_(0.2 * torch.randn_like(p))
    path = save_checkpoint(tmp_path / "dynunet.pt", backbone.network, backbone.family, axis_order="monai",
                           backbone_kwargs=backbone.constructor, key_prefixes=backbone.key_prefixes(),
                           pretrained_parts=["stem", "encoder", "decoder"])
    return path, backbone


def test_dynunet_checkpoint_initialises_the_nnunet_trainer_encoder_with_zero_biases(tmp_path, monkeypatch, capsys):
    import json
    import os

    from nnunet_helpers import plans_copy, tiny_plans, write_preprocessed_dataset

    from monai_ssl_plugin.nnunet import nnUNetTrainerSSL_short

    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, str(tmp_path / k))
        os.makedirs(tmp_path / k, exist_ok=True)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("nnUNet_compile", "false")
    plans = tiny_plans()  # PlainConvUNet 8-16-32, 3x3x3, strides 1-2-2
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(
        n_conv_per_stage=[2, 2, 2], n_conv_per_stage_decoder=[2, 2])
    folder = write_preprocessed_dataset(tmp_path / "nnUNet_preprocessed", plans)
    path, source = _dynunet_checkpoint(tmp_path)
    monkeypatch.setenv("nnUNet_SSL_pretrained", str(path))
    trainer = nnUNetTrainerSSL_short(plans_copy(plans), "3d_fullres", 0, json.loads((folder / "dataset.json").read_text()),
                                     torch.device("cpu"))
    trainer.initialize()
    log = capsys.readouterr().out
    assert "6 convolution biases filled with zeros" in log and trainer.pretrained_report.loaded_fraction == 1.0
    state, dyn = trainer.network.state_dict(), source.network.state_dict()
    for stage, block in enumerate(["input_block", "downsamples.0", "bottleneck"]):
        for j in (0, 1):
            got = state[f"encoder.stages.{stage}.0.convs.{j}.conv.weight"]
            assert torch.equal(got, dyn[f"{block}.conv{j + 1}.conv.weight"].permute(0, 1, 4, 3, 2))  # (x,y,z) -> (z,y,x)
            assert not state[f"encoder.stages.{stage}.0.convs.{j}.conv.bias"].any()
            assert torch.equal(state[f"encoder.stages.{stage}.0.convs.{j}.norm.weight"], dyn[f"{block}.norm{j + 1}.weight"])
    from monai_ssl_plugin.nnunet.plans import write_plans_variant  # `monai-ssl nnunet-plans ID --checkpoint`

    arch = json.loads(write_plans_variant(plans["dataset_name"], checkpoint=str(path)).read_text()
                      )["configurations"]["3d_fullres"]["architecture"]
    assert arch["network_class_name"].endswith("PlainConvUNet") and arch["arch_kwargs"]["n_conv_per_stage"] == [2, 2, 2]
    assert arch["arch_kwargs"]["features_per_stage"] == [8, 16, 32]


def test_a_dynunet_that_is_not_plainconvunets_computation_is_refused_for_nnunet(tmp_path):
    from monai_ssl_plugin.transfer.formats import read_weights

    path, _ = _dynunet_checkpoint(tmp_path, res_block=True)
    with pytest.raises(PluginError, match="res_block=True") as err:
        read_weights(path, require_record=True, to_nnunet_order=True, accept_bare=False, log=None)
    assert "\n" not in str(err.value)


def test_a_dynunet_checkpoint_is_not_exported_as_a_whole_nnunet_network(tmp_path):
    from monai_ssl_plugin.export.nnunet import export_nnunet

    path, _ = _dynunet_checkpoint(tmp_path)
    with pytest.raises(PluginError, match="only its encoder") as err:
        export_nnunet(path, tmp_path / "export.pth")
    assert "-tr nnUNetTrainerSSL" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "export.pth").exists()

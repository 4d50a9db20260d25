"""nnU-Net weights into MONAI networks through load_pretrained: nnU-Net's own networks as the bundle network
(identity names, encoder only) and a PlainConvUNet checkpoint into DynUNet (exact key map, reported biases,
refusals for what is not the same computation)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DynUNet
from monai_ssl_helpers import dynunet_encoder_features, save_checkpoint, snapshot

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone, _arch_kwargs
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.monai_bundles import load_pretrained, resolve_target

DNA = "dynamic_network_architectures.architectures.unet."
REQ = ["conv_op", "norm_op", "dropout_op", "nonlin"]
FEATURES, STRIDES = [4, 8, 16], [1, 2, 2]


def nnunet_checkpoint(tmp_path, residual: bool = False, convs: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    kw = _arch_kwargs(FEATURES, STRIDES, 3, residual=residual, blocks=[convs] * 3, decoder_convs=[1, 1])
    backbone = NnUNetBackbone(DNA + ("ResidualEncoderUNet" if residual else "PlainConvUNet"), kw, REQ, 1, 1)
    with torch.no_grad():
        for p in backbone.network.parameters():
            p.add_(0.2 * torch.randn_like(p))
    path = save_checkpoint(tmp_path / "final.pt", backbone.network, backbone.family, axis_order="nnunet",
                           backbone_kwargs=backbone.constructor, key_prefixes=backbone.key_prefixes())
    return path, backbone


def dynunet(**kw) -> DynUNet:
    args = dict(kernel_size=[3, 3, 3], strides=STRIDES, upsample_kernel_size=[2, 2], filters=FEATURES)
    return DynUNet(3, 1, 2, **{**args, **kw})



@pytest.mark.parametrize("residual", [False, True])
def test_nnunet_network_as_the_bundle_network_receives_the_encoder_unchanged(tmp_path, residual):
    path, source = nnunet_checkpoint(tmp_path, residual=residual)
    target = NnUNetBackbone(source.constructor["arch_class_name"], source.constructor["arch_kwargs"], REQ, 1, 3).network
    tgt = resolve_target(target)
    assert tgt.kind == "nnunet" and tgt.roots == ("encoder.",)
    before = snapshot(target)
    report = load_pretrained(target, path, axis_order="nnunet", log=None)
    assert report.loaded_fraction == 1.0 and not report.missing and not report.skipped_shape
    for key, value in target.state_dict().items():
        if key.startswith("encoder."):
            assert torch.equal(value, source.network.state_dict()[key]), key
        elif not key.startswith("decoder.encoder."):  # the decoder's alias of the encoder
            assert torch.equal(value, before[key]), key  # decoder and segmentation layers stay new


def test_plain_unet_checkpoint_into_dynunet_same_features_and_reported_biases(tmp_path, capsys):
    path, source = nnunet_checkpoint(tmp_path)
    target = dynunet().eval()
    report = load_pretrained(target, path, axis_order="nnunet")
    log = capsys.readouterr().out
    assert report.loaded_fraction == 1.0 and not report.missing
    assert len(report.skipped_filtered) == 6 and all(k.endswith("conv.bias") for k in report.skipped_filtered)
    assert "6 convolution biases not mapped" in log and "6 excluded" in log
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        for a, b in zip(source.network.eval().encoder(x), dynunet_encoder_features(target, x)):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    # a MONAI pipeline (x, y, z): the kernels are transposed, so the permuted volume gives the permuted features
    target = dynunet().eval()
    load_pretrained(target, path, log=None)
    with torch.no_grad():
        for a, b in zip(source.network.encoder(x), dynunet_encoder_features(target, x.permute(0, 1, 4, 3, 2))):
            torch.testing.assert_close(b, a.permute(0, 1, 4, 3, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case, expected", [
    ("filters", "filters=[4, 8, 16]"), ("res_block", "res_block=False"), ("one_conv", "n_conv_per_stage 2"),
    ("batch", "norm_name="), ("resenc", "ResidualEncoderUNet")])
def test_what_is_not_the_same_computation_is_refused_in_one_line(tmp_path, case, expected):
    path, _ = nnunet_checkpoint(tmp_path, residual=case == "resenc", convs=1 if case == "one_conv" else 2)
    target = {"filters": lambda: dynunet(filters=[4, 8, 32]), "res_block": lambda: dynunet(res_block=True),
              "batch": lambda: dynunet(norm_name="batch")}.get(case, dynunet)()
    before = snapshot(target)
    with pytest.raises(PluginError) as err:
        load_pretrained(target, path, log=None)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing half-loaded

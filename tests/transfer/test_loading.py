import pytest
import torch
from torch import nn

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer import load_weights, remap_keys, strip_wrapper_prefixes


def _net(c=4):
    return nn.Sequential(nn.Conv3d(1, c, 3), nn.InstanceNorm3d(c, affine=True), nn.Conv3d(c, 2, 1))


def test_report_counts_loaded_shape_mismatch_missing_unexpected():
    src, dst = _net(4), _net(4)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}  # DDP prefix is looked through
    state["module.2.weight"] = torch.zeros(3, 4, 1, 1, 1)  # wrong shape
    del state["module.2.bias"]
    state["module.extra"] = torch.zeros(1)
    report = load_weights(dst, state, log=None)
    assert sorted(report.loaded) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    assert report.skipped_shape == [("2.weight", (3, 4, 1, 1, 1), (2, 4, 1, 1, 1))]
    assert report.missing == ["2.bias"] and report.unexpected == ["extra"]
    assert torch.equal(dst[0].weight, src[0].weight)
    assert 0 < report.loaded_fraction < 1


def test_refuses_when_nothing_loads_and_names_first_layer():
    with pytest.raises(PluginError, match="first mismatching layer 0.weight"):
        # only the last bias (2 values) has the same shape: far below the share asked for
        load_weights(_net(4), _net(8).state_dict(), min_fraction=0.5, log=None)
    with pytest.raises(PluginError, match="no key of the checkpoint matches"):
        load_weights(_net(4), {"foo.weight": torch.zeros(1)}, log=None)


def test_min_fraction_and_strict_shapes():
    src = _net(4).state_dict()
    partial = {k: v for k, v in src.items() if k.startswith("0.")}
    with pytest.raises(PluginError, match="need 90.0%"):
        load_weights(_net(4), partial, min_fraction=0.9, log=None)
    with pytest.raises(PluginError, match="Layer 0.weight does not match"):
        load_weights(_net(4), _net(8).state_dict(), strict_shapes=True, log=None)


def test_include_exclude_and_adapt():
    src, dst = _net(4), _net(4)
    report = load_weights(dst, src.state_dict(), include=lambda k: k.startswith("0."), exclude=lambda k: k.startswith("2."),
                          log=None)
    assert sorted(report.loaded) == ["0.bias", "0.weight"] and sorted(report.skipped_filtered) == ["2.bias", "2.weight"]
    wide = _net(4)
    wide[0] = nn.Conv3d(2, 4, 3)  # two input channels downstream
    report = load_weights(wide, src.state_dict(), adapt=lambda k, s, t: s.repeat(1, 2, 1, 1, 1) / 2, log=None)
    assert report.adapted == ["0.weight"]
    assert torch.allclose(wide[0].weight[:, :1] * 2, src[0].weight)


def test_keymap():
    state = {"_orig_mod.module.encoder.a": 1, "decoder.b": 2}
    assert strip_wrapper_prefixes(state) == {"encoder.a": 1, "decoder.b": 2}
    assert remap_keys({"encoder.a": 1, "decoder.b": 2}, {"encoder.": "feature_extractor.body."}) == \
        {"feature_extractor.body.a": 1}
    assert remap_keys({"a": 1}, {"": "net."}) == {"net.a": 1}


def test_a_tensor_with_several_names_counts_once():
    """nnU-Net's ResidualEncoderUNet lists each encoder tensor under up to four names (``decoder.encoder.*``, the
    stem conv also in ``all_modules``); the report counts tensors, each under its first name."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from monai_ssl_plugin.transfer.loading import alias_names

    kwargs = {"n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.modules.conv.Conv3d",
              "kernel_sizes": [[3, 3, 3]] * 2, "strides": [[1, 1, 1], [2, 2, 2]], "n_blocks_per_stage": [1, 1],
              "n_conv_per_stage_decoder": [1], "conv_bias": True,
              "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
              "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
              "nonlin_kwargs": {"inplace": True}}
    net = get_network_from_plans("dynamic_network_architectures.architectures.unet.ResidualEncoderUNet", kwargs,
                                 ["conv_op", "norm_op", "dropout_op", "nonlin"], 1, 2, deep_supervision=False)
    state = {k: v + 1 for k, v in net.state_dict().items()}
    aliases = alias_names(net)
    assert aliases["decoder.encoder.stages.0.blocks.0.conv1.conv.weight"] == "encoder.stages.0.blocks.0.conv1.conv.weight"
    assert aliases["encoder.stem.convs.0.all_modules.0.weight"] == "encoder.stem.convs.0.conv.weight"
    report = load_weights(net, state, log=None)
    params = list(net.parameters())  # unique tensors
    assert len(report.loaded) == len(params) < len(state)
    assert report.n_loaded_params == report.n_target_params == sum(p.numel() for p in params)
    assert sorted(report.aliases) == sorted(aliases)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key

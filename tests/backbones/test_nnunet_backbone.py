import pytest
import torch

from monai_ssl_plugin.backbones import NnUNetBackbone, create_backbone, list_backbones
from monai_ssl_plugin.errors import PluginError


@pytest.mark.parametrize("dims", [2, 3])
def test_tiny_preset_faces(dims):
    b = create_backbone("nnunet_plain_tiny", spatial_dims=dims)
    x = torch.randn(2, 1, *([16] * dims))
    feats = b.encode(x)
    assert [f.shape[1] for f in feats] == [8, 16, 32]
    assert b.decode(feats).shape == x.shape
    assert b.embed(x).shape == (2, 32)
    assert b.divisor() == [4] * dims
    assert set(b.key_prefixes()) >= {"stem", "encoder", "decoder", "in_proj"}


def test_resenc_l_is_nnssl_preset():
    b = create_backbone("nnunet_resenc_l")
    kw = b.constructor["arch_kwargs"]
    assert kw["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert kw["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6]
    assert b.family == "nnunet.ResidualEncoderUNet"
    assert 100e6 < sum(p.numel() for p in b.network.parameters()) < 105e6


def test_from_plans_and_errors(tmp_path):
    b = create_backbone("nnunet_plain_tiny")
    arch = {"network_class_name": b.constructor["arch_class_name"], "arch_kwargs": b.constructor["arch_kwargs"],
            "_kw_requires_import": b.constructor["arch_kwargs_req_import"]}
    plans = {"configurations": {"3d_fullres": {"architecture": arch, "normalization_schemes": ["Z", "Z"]},
                                "3d_lowres": {"inherits_from": "3d_fullres", "patch_size": [8, 8, 8]}}}
    net = NnUNetBackbone.from_plans(plans, "3d_lowres")
    assert net.in_channels == 2 and net.network.encoder.stages[0][0].convs[0].conv.in_channels == 2
    with pytest.raises(PluginError, match="no configuration '2d'.*3d_fullres"):
        NnUNetBackbone.from_plans(plans, "2d")
    with pytest.raises(PluginError, match="does not exist"):
        NnUNetBackbone.from_plans(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PluginError, match="not valid JSON"):
        NnUNetBackbone.from_plans(tmp_path / "bad.json")
    with pytest.raises(PluginError, match="Unknown backbone"):
        create_backbone("resnet9000")
    assert "nnunet_resenc_l" in list_backbones()

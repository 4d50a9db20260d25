"""The real contract: a record written by build_record() for the project's MONAI backbone adapters is
read by load_pretrained() and lands in the downstream networks (skipped if the adapters are absent)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from monai_ssl_helpers import equal_under

backbones = pytest.importorskip("monai_ssl_plugin.backbones")

from monai_ssl_plugin.checkpoint import atomic_save, build_record  # noqa: E402
from monai_ssl_plugin.monai_bundles import load_pretrained  # noqa: E402

DATA = {"axis_order": "monai", "normalization": ["ZScoreNormalization"], "spacing": [1.5, 1.5, 1.5]}


def _checkpoint(tmp_path, adapter):
    pretext = SimpleNamespace(pretext_name="test", trains_decoder=False, settings=lambda: {})
    rec = build_record(adapter, pretext, DATA, patch_size=[32, 32, 32], steps=1)
    return atomic_save({"network": adapter.network.state_dict(), "record": rec.to_dict()}, tmp_path / "final.pt")


def test_resnet_adapter_into_zoo_retinanet(tmp_path):
    from monai.apps.detection.networks.retinanet_network import RetinaNet, resnet_fpn_feature_extractor
    from monai.networks.nets import resnet10

    try:
        adapter = backbones.create_backbone("monai_resnet10", in_channels=1)
    except Exception as e:  # the adapters' API is another engineer's; do not fail on its churn
        pytest.skip(f"monai_resnet10 adapter unavailable: {e}")
    ckpt = _checkpoint(tmp_path, adapter)
    fe = resnet_fpn_feature_extractor(resnet10(spatial_dims=3, n_input_channels=1, conv1_t_stride=[2, 2, 1],
                                               conv1_t_size=[7, 7, 7]), 3, False, [1, 2], None)
    net = RetinaNet(spatial_dims=3, num_classes=1, num_anchors=3, feature_extractor=fe, size_divisible=[16, 16, 8])
    report = load_pretrained(net, ckpt, normalization="NormalizeIntensityd", log=None)
    assert report.loaded_fraction == 1.0
    equal_under(net, adapter.network.state_dict(), "feature_extractor.body.")


def test_swinunetr_adapter_into_swinunetr(tmp_path):
    from monai.networks.nets import SwinUNETR

    kw = dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    try:
        adapter = backbones.create_backbone("monai_swinunetr", in_channels=1, **kw)
    except Exception as e:
        pytest.skip(f"monai_swinunetr adapter unavailable: {e}")
    ckpt = _checkpoint(tmp_path, adapter)
    net = SwinUNETR(in_channels=1, out_channels=3, **kw)
    assert load_pretrained(net, ckpt, log=None).loaded_fraction == 1.0
    equal_under(net, adapter.network.state_dict(), "swinViT.", "swinViT.")
    assert torch.equal(net.swinViT.patch_embed.proj.weight, adapter.network.swinViT.patch_embed.proj.weight)

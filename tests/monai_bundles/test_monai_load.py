"""load_pretrained on the real MONAI downstream networks: the targeted parameters equal the SSL ones,
the rest is untouched, the source forms (checkpoint, SSL bundle, bare state dict) work, a training step runs."""

from __future__ import annotations

import json

import pytest
import torch
from monai_ssl_helpers import (densenet, detector, equal_under, record, resnet, retinanet, save_checkpoint, snapshot,
                               swinunetr, unetr, vit)

from monai_ssl_plugin.checkpoint import atomic_save
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.monai_bundles import load_pretrained, resolve_target


def _unchanged(net, before, include):
    for k, v in net.state_dict().items():
        if include(k):
            assert torch.equal(v, before[k]), f"{k} changed but is not part of the target"


def _step(net, loss_fn, *inputs):
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
    net.train()
    loss = loss_fn(*inputs)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    return float(loss.detach())


def test_retinanet_feature_extractor_body_from_ssl_resnet(tmp_path, capsys):
    ssl = resnet(num_classes=7, conv1_t_size=[7, 7, 7], conv1_t_stride=[2, 2, 1], seed=1)  # its fc never loads
    ckpt = save_checkpoint(tmp_path / "final.pt", ssl, "monai.ResNet")
    net = retinanet(seed=2)
    before = snapshot(net)
    report = load_pretrained(net, ckpt)
    assert report.loaded_fraction == 1.0 and not report.missing and not report.skipped_shape
    n = equal_under(net, ssl.state_dict(), "feature_extractor.body.")
    assert n == len(report.loaded)
    _unchanged(net, before, lambda k: not k.startswith("feature_extractor.body."))  # FPN and heads stay new
    # returned_layers=[1, 2]: the RetinaNet keeps no layer3/layer4; they are reported, not silently dropped
    assert "feature_extractor.body.layer3.0.conv1.weight" in report.unexpected
    assert not any("fc." in k for k in report.unexpected)  # the classifier head is not part of the encoder
    out = capsys.readouterr().out
    assert "feature_extractor.body" in out and "loaded" in out and "missing" in out
    det = detector(net)
    images = [torch.randn(1, 32, 32, 32) for _ in range(2)]
    targets = [{"box": torch.tensor([[8.0, 8.0, 8.0, 18.0, 18.0, 16.0]]), "label": torch.tensor([0])} for _ in range(2)]

    def loss_fn():
        losses = det(images, targets)
        return losses[det.cls_key] + losses[det.box_reg_key]

    det.train()
    _step(net, loss_fn)
    assert not torch.equal(net.feature_extractor.body.conv1.weight, ssl.conv1.weight)  # it trains


def test_retinanet_inside_detector_wrapper_is_found():
    net = retinanet(seed=2)
    det = detector(net)
    tgt = resolve_target(det)
    assert tgt.kind == "retinanet" and tgt.roots == ("network.feature_extractor.body.",)
    ssl = resnet(seed=3)
    load_pretrained(det, {"network": ssl.state_dict(), "record": record("monai.ResNet")}, log=None)
    equal_under(net, ssl.state_dict(), "feature_extractor.body.")


def test_resnet_classifier_all_but_fc(tmp_path):
    ssl = resnet(num_classes=5, seed=1)  # another head size: fc is the new head
    net = resnet(num_classes=2, seed=2)
    before = snapshot(net)
    report = load_pretrained(net, save_checkpoint(tmp_path / "c.pt", ssl, "monai.ResNet"), log=None)
    assert report.loaded_fraction == 1.0
    for k, v in net.state_dict().items():
        if k.startswith("fc."):
            assert torch.equal(v, before[k])
        else:
            assert torch.equal(v, ssl.state_dict()[k]), k
    x, y = torch.randn(2, 1, 32, 32, 32), torch.tensor([0, 1])
    _step(net, lambda: torch.nn.functional.cross_entropy(net(x), y))


def test_densenet121_features(tmp_path):
    ssl, net = densenet(out_channels=4, seed=1), densenet(out_channels=2, seed=2)
    before = snapshot(net)
    report = load_pretrained(net, save_checkpoint(tmp_path / "d.pt", ssl, "monai.DenseNet121"), log=None)
    assert report.loaded_fraction == 1.0
    equal_under(net, ssl.state_dict(), "features.", "features.")
    _unchanged(net, before, lambda k: k.startswith("class_layers."))
    x, y = torch.randn(2, 1, 32, 32, 32), torch.tensor([0, 1])
    _step(net, lambda: torch.nn.functional.cross_entropy(net(x), y))


def test_swinunetr_swinvit(tmp_path):
    ssl, net = swinunetr(out_channels=5, seed=1), swinunetr(out_channels=2, seed=2)
    before = snapshot(net)
    ckpt = save_checkpoint(tmp_path / "s.pt", ssl, "monai.SwinUNETR", key_prefixes={"encoder": "swinViT"})
    report = load_pretrained(net, ckpt, log=None)
    assert report.loaded_fraction == 1.0
    equal_under(net, ssl.state_dict(), "swinViT.", "swinViT.")
    _unchanged(net, before, lambda k: not k.startswith("swinViT."))
    x, y = torch.randn(2, 1, 32, 32, 32), torch.randint(0, 2, (2, 1, 32, 32, 32))
    from monai.losses import DiceCELoss

    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    _step(net, lambda: loss(net(x), y))


@pytest.mark.parametrize("source_family", ["monai.UNETR", "monai.ViT"])
def test_unetr_vit_from_unetr_or_plain_vit(tmp_path, source_family):
    ssl = unetr(out_channels=3, seed=1) if source_family == "monai.UNETR" else vit(seed=1)
    net = unetr(out_channels=2, seed=2)
    before = snapshot(net)
    report = load_pretrained(net, save_checkpoint(tmp_path / "u.pt", ssl, source_family), log=None)
    assert report.loaded_fraction == 1.0
    equal_under(net, ssl.state_dict(), "vit.", "vit." if source_family == "monai.UNETR" else "")
    _unchanged(net, before, lambda k: not k.startswith("vit."))
    x, y = torch.randn(2, 1, 32, 32, 32), torch.randint(0, 2, (2, 32, 32, 32))
    _step(net, lambda: torch.nn.functional.cross_entropy(net(x), y))


@pytest.mark.parametrize("kind", ["segresnet", "unet", "dynunet"])
def test_cnn_segmentation_encoders(tmp_path, kind):
    from monai.networks import nets

    build = {"segresnet": lambda: nets.SegResNet(spatial_dims=3, init_filters=8, in_channels=1, out_channels=2),
             "unet": lambda: nets.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32),
                                       strides=(2, 2), num_res_units=1),
             "dynunet": lambda: nets.DynUNet(3, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2],
                                             upsample_kernel_size=[2, 2])}[kind]
    family = {"segresnet": "monai.SegResNet", "unet": "monai.UNet", "dynunet": "monai.DynUNet"}[kind]
    torch.manual_seed(1)
    ssl = build()
    torch.manual_seed(2)
    net = build()
    before = snapshot(net)
    tgt = resolve_target(net)
    report = load_pretrained(net, save_checkpoint(tmp_path / "n.pt", ssl, family), log=None)
    assert report.loaded_fraction == 1.0
    for k, v in net.state_dict().items():
        if tgt.includes(k):
            assert torch.equal(v, ssl.state_dict()[k]), k
        elif not k.startswith("skip_layers."):  # DynUNet's aliases of its own blocks
            assert torch.equal(v, before[k]), k
    decoder = {"segresnet": "up_layers.", "unet": "model.2.", "dynunet": "upsamples."}[kind]
    assert any(k.startswith(decoder) for k in before) and not tgt.includes(decoder + "0.weight")


def test_ssl_bundle_directory_with_record_in_metadata(tmp_path):
    ssl, net = resnet(seed=1), resnet(seed=2)
    bundle = tmp_path / "simclr_ssl_pretraining"
    (bundle / "configs").mkdir(parents=True)
    atomic_save(ssl.state_dict(), bundle / "models" / "model.pt")  # bare weights, record in metadata
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0", "ssl_record": record("monai.ResNet")}))
    load_pretrained(net, bundle, log=None)
    equal_under(net, ssl.state_dict(), "layer1.", "layer1.")
    # a bundle whose models/model.pt is a full pretraining checkpoint
    save_checkpoint(bundle / "models" / "model.pt", resnet(seed=3), "monai.ResNet")
    (bundle / "configs" / "metadata.json").write_text("{}")
    load_pretrained(net, bundle, log=None)
    assert torch.equal(net.conv1.weight, resnet(seed=3).conv1.weight)


def test_bare_state_dict_needs_a_statement_and_warns(tmp_path, capsys):
    ssl, net = resnet(seed=1), resnet(seed=2)
    path = atomic_save({"state_dict": {f"module.{k}": v for k, v in ssl.state_dict().items()}}, tmp_path / "w.pth")
    with pytest.raises(PluginError, match="bare state dict without a pretraining record") as e:
        load_pretrained(net, path)
    assert "\n" not in str(e.value)
    report = load_pretrained(net, path, backbone_family="monai.ResNet", source_axis_order="monai")
    assert report.loaded_fraction == 1.0
    assert "WARNING" in capsys.readouterr().out and torch.equal(net.conv1.weight, ssl.conv1.weight)


def test_explicit_prefix_target_and_source_prefix(tmp_path):
    """A custom network: target= names the sub-module, the record's encoder prefix says where it comes from."""
    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = swinunetr(seed=4).swinViT
            self.head = torch.nn.Linear(4, 2)

    ssl, net = swinunetr(seed=1), Custom()
    ckpt = save_checkpoint(tmp_path / "s.pt", ssl, "monai.SwinUNETR", key_prefixes={"encoder": "swinViT"})
    with pytest.raises(PluginError, match="Cannot tell which part of Custom"):
        load_pretrained(net, ckpt, log=None)
    report = load_pretrained(net, ckpt, target="encoder", log=None)
    assert report.loaded_fraction == 1.0
    equal_under(net, ssl.state_dict(), "encoder.", "swinViT.")

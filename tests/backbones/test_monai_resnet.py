"""ResNet adapter: keys equal the real RetinaNet's ``feature_extractor.body``; the pretext-owned light decoder."""

import pytest
import torch
from monai.apps.detection.networks.retinanet_network import RetinaNet, resnet_fpn_feature_extractor
from monai.networks.nets.resnet import resnet18, resnet50

from monai_ssl_plugin.backbones import create_backbone, make_light_decoder
from monai_ssl_plugin.transfer.keymap import remap_keys

torch.set_num_threads(1)

# model zoo lung_nodule_ct_detection: the backbone and feature extractor its config builds
ZOO = {"conv1_t_stride": [2, 2, 1], "conv1_t_size": [7, 7, 7]}


def _detector(backbone, dims, returned_layers):
    fe = resnet_fpn_feature_extractor(backbone, dims, False, returned_layers, None)
    return RetinaNet(spatial_dims=dims, num_classes=1, num_anchors=3, feature_extractor=fe,
                     size_divisible=[16] * dims)


@pytest.mark.parametrize("returned_layers", [[1, 2], [1, 2, 3, 4]])
def test_keys_equal_retinanet_body_zoo_config(returned_layers):
    adapter = create_backbone("monai_resnet50", spatial_dims=3, in_channels=1, **ZOO)
    zoo_backbone = resnet50(spatial_dims=3, n_input_channels=1, **ZOO)
    detector = _detector(zoo_backbone, 3, returned_layers)
    prefix = "feature_extractor.body."
    body = {k[len(prefix):]: v for k, v in detector.state_dict().items() if k.startswith(prefix)}
    mine = adapter.network.state_dict()
    # the detector keeps the ResNet up to its deepest returned layer (IntermediateLayerGetter);
    # the zoo's [1, 2] therefore holds conv1, bn1, layer1, layer2 only
    kept = ("conv1.", "bn1.") + tuple(f"layer{i}." for i in range(1, max(returned_layers) + 1))
    assert set(body) == {k for k in mine if k.startswith(kept)}
    assert all(body[k].shape == mine[k].shape for k in body)
    if returned_layers == [1, 2, 3, 4]:
        assert set(body) == set(mine)  # feed_forward=False: no fc, nothing else

    # the transfer a MONAI detection overlay does: every body tensor loads, and the detector's body
    # then computes exactly the adapter's encoder features
    loaded = remap_keys(mine, {"": prefix})
    missing, _ = detector.load_state_dict(loaded, strict=False)
    assert not [k for k in missing if k.startswith(prefix)]
    adapter.eval(), detector.eval()
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        ours = adapter.encode(x)
        theirs = list(detector.feature_extractor.body(x).values())
    assert len(theirs) == len(returned_layers)
    for level, t in zip(returned_layers, theirs):
        assert torch.equal(ours[level - 1], t)


def test_2d_detector_and_classifier_keys():
    adapter = create_backbone("monai_resnet18", spatial_dims=2, in_channels=3)
    detector = _detector(resnet18(spatial_dims=2, n_input_channels=3), 2, [1, 2, 3, 4])
    body = {k.split("feature_extractor.body.", 1)[1] for k in detector.state_dict() if ".body." in k}
    assert body == set(adapter.network.state_dict())
    # a classifier has an fc on top: same keys plus its head, which is never transferred
    clf = resnet18(spatial_dims=2, n_input_channels=3, num_classes=5)
    assert set(clf.state_dict()) - set(adapter.network.state_dict()) == {"fc.weight", "fc.bias"}
    with_head = create_backbone("monai_resnet18", spatial_dims=2, in_channels=3, feed_forward=True, num_classes=5)
    assert with_head.key_prefixes()["head"] == "fc" and adapter.key_prefixes()["head"] is None


def test_medicalnet_variants_pass_through():
    b = create_backbone("monai_resnet18", shortcut_type="A", bias_downsample=False)  # MedicalNet resnet18
    assert b.constructor["shortcut_type"] == "A" and b.constructor["bias_downsample"] is False
    assert not [k for k in b.network.state_dict() if "downsample" in k]  # type A: parameter-free shortcuts
    b10 = create_backbone("monai_resnet10", bias_downsample=False)  # MedicalNet resnet10: type B, no bias
    assert "layer2.0.downsample.0.weight" in b10.network.state_dict()
    assert "layer2.0.downsample.0.bias" not in b10.network.state_dict()
    assert b.feature_channels == [64, 128, 256, 512] and b.stem_stride == [2, 2, 2]
    zoo = create_backbone("monai_resnet50", **ZOO)
    assert zoo.feature_channels == [256, 512, 1024, 2048] and zoo.stem_stride == [4, 4, 2]


@pytest.mark.parametrize("dims,size,kwargs", [(2, (32, 32), {}), (3, (32, 32, 16), ZOO), (3, (20, 24, 18), {})])
def test_light_decoder_is_pretext_owned(dims, size, kwargs):
    b = create_backbone("monai_resnet10", spatial_dims=dims, **kwargs)
    dec = make_light_decoder(b, out_channels=1, width=16)
    x = torch.randn(2, 1, *size)
    feats = b.encode(x)
    out = dec(feats, size=x.shape[2:])
    assert out.shape == x.shape
    if all(s % 16 == 0 for s in size):  # default size: finest level × stem stride
        assert dec(feats).shape == x.shape
    out.mean().backward()
    assert b.network.conv1.weight.grad is not None  # the encoder trains through it
    # its weights are not the backbone's: export (network.state_dict) never carries them
    assert not set(dec.state_dict()) & set(b.network.state_dict())
    assert all(p is not q for p in dec.parameters() for q in b.network.parameters())

"""Models Genesis (Zhou et al. 2019/2021): the target is the (flipped) original, restoration learns, decoders."""

import itertools

import pytest
import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.checkpoint import build_record
from monai_ssl_plugin.pretext import create_pretext

torch.set_num_threads(1)

NO_CORRUPTION = {"flip_prob": 0.0, "local_shuffle_prob": 0.0, "nonlinear_prob": 0.0, "paint_prob": 0.0}


def _flips(x):
    dims = list(range(1, x.dim()))
    return [x.flip(list(axes)) if axes else x for r in range(len(dims) + 1) for axes in itertools.combinations(dims, r)]


@pytest.mark.parametrize("dims", [2, 3])
def test_target_is_the_flipped_original(dims):
    torch.manual_seed(0)
    pretext = create_pretext("models_genesis", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=dims))
    image = torch.randn(4, 1, *([16] * dims)) * 3 + 5  # z-scored-like data, not in [0, 1]
    corrupted, target = pretext.corrupt(image)
    for b in range(4):  # the target is the original up to the shared flips, in the data's own intensity scale
        assert any(torch.allclose(target[b], f, atol=1e-5) for f in _flips(image[b]))
    assert not torch.allclose(corrupted, target)
    assert corrupted.min() >= image.min() - 1e-4 and corrupted.max() <= image.max() + 1e-4  # stays in the range
    plain = create_pretext("models_genesis", backbone=pretext.backbone, **NO_CORRUPTION)
    corrupted, target = plain.corrupt(image)
    assert torch.allclose(corrupted, image, atol=1e-5) and torch.allclose(target, image, atol=1e-5)
    flip_only = create_pretext("models_genesis", backbone=pretext.backbone, **{**NO_CORRUPTION, "flip_prob": 1.0})
    corrupted, target = flip_only.corrupt(image)
    assert torch.equal(corrupted, target)  # input and target are flipped alike
    assert any(not torch.allclose(target[b], image[b]) for b in range(4))


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_and_learning(dims, train_losses):
    torch.manual_seed(0)
    pretext = create_pretext("models_genesis", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=dims),
                             n_blocks=500)
    image = torch.randn(2, 1, *([16] * dims))
    out = pretext({"image": image})
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    prediction, target = pretext.last_outputs["prediction"], pretext.last_outputs["target"]
    assert torch.allclose(out["loss"].detach(), torch.mean((prediction - target) ** 2))
    losses = train_losses(pretext, image, lr=3e-3)
    assert losses[-1] < losses[0], losses
    assert pretext.trains_decoder and pretext.settings()["decoder"] == "network"


def test_light_decoder_stays_out_of_the_network():
    torch.manual_seed(0)
    resnet = create_backbone("monai_resnet10", spatial_dims=3, widen_factor=0.25)
    keys = set(resnet.network.state_dict())
    pretext = create_pretext("models_genesis", backbone=resnet, n_blocks=200, decoder_width=16)
    out = pretext({"image": torch.randn(2, 1, 16, 16, 16)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and pretext.last_outputs["prediction"].shape == (2, 1, 16, 16, 16)
    assert set(resnet.network.state_dict()) == keys  # the decoder is the pretext's, never exported
    assert pretext.dense.light is not None and pretext.trains_decoder is False
    record = build_record(resnet, pretext, {"axis_order": "monai"}, [16, 16, 16])
    assert record.pretrained_parts == ["stem", "encoder"] and record.pretext == "models_genesis"
    # a segmentation-configured network: the output layer's channels do not match the input
    with pytest.raises(ValueError, match="out_channels=in_channels"):
        create_pretext("models_genesis", backbone=create_backbone("nnunet_plain_tiny", out_channels=3))
    # SwinUNETR forced to the light decoder reads swinViT only (encoder1 is on the decoder side)
    swin = create_backbone("monai_swinunetr", spatial_dims=2, feature_size=12, depths=[1, 1, 1, 1], window_size=4)
    pretext = create_pretext("models_genesis", backbone=swin, decoder="light", n_blocks=200, decoder_width=16)
    out = pretext({"image": torch.rand(2, 1, 64, 64)})
    out["loss"].backward()
    assert swin.network.encoder1.layer.conv1.conv.weight.grad is None
    assert swin.network.swinViT.patch_embed.proj.weight.grad is not None

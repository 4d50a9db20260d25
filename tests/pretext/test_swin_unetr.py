"""Swin UNETR pretraining (Tang et al. 2022): three terms weighted 1/1/1, encoder-only head, 2D and 3D."""

import pytest
import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.checkpoint import build_record
from monai_ssl_plugin.pretext import create_pretext, list_pretexts

torch.set_num_threads(1)

SWIN = {"feature_size": 12, "depths": [1, 1, 1, 1], "window_size": 4}


def test_swinunetr_3d_terms_and_encoder_only():
    torch.manual_seed(0)
    swin = create_backbone("monai_swinunetr", **SWIN)
    keys = set(swin.network.state_dict())
    pretext = create_pretext("swin_unetr", backbone=swin, decoder_width=16)
    out = pretext({"image": torch.rand(2, 1, 64, 32, 32)})  # multiples of 32, rotation plane (last two axes) square
    assert set(out) == {"loss", "rotation", "contrastive", "reconstruction", "rotation_accuracy"}
    assert torch.allclose(out["loss"].detach(), out["rotation"] + out["contrastive"] + out["reconstruction"])
    assert pretext.last_embeddings.shape == (4, 512)  # both views' projections, for the collapse monitor
    out["loss"].backward()
    assert swin.network.swinViT.layers4[0].blocks[0].attn.qkv.weight.grad is not None
    assert swin.network.encoder1.layer.conv1.conv.weight.grad is None  # decoder side of SwinUNETR: untouched
    assert set(swin.network.state_dict()) == keys and not pretext.trains_decoder
    record = build_record(swin, pretext, {"axis_order": "monai"}, [64, 32, 32])
    assert record.pretrained_parts == ["stem", "encoder"] and record.pretext_settings["weights"] == [1.0, 1.0, 1.0]
    assert record.pretext_settings["temperature"] == 0.5 and record.pretext_settings["projection_dim"] == 512
    assert list_pretexts()["swin_unetr"] == "hybrid"


def test_swinunetr_2d_learns(train_losses):
    torch.manual_seed(0)
    pretext = create_pretext("swin_unetr", backbone=create_backbone("monai_swinunetr", spatial_dims=2, **SWIN),
                             decoder_width=16)
    image = torch.rand(2, 1, 64, 64)
    out = pretext({"image": image})
    labels = pretext.last_outputs["rotation"]
    assert labels.shape == (4,) and set(labels.tolist()) <= {0, 1, 2, 3}  # both views of both samples
    losses = train_losses(pretext, image)
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("dims", [2, 3])
def test_cnn_unet_with_its_decoder(dims, train_losses):
    torch.manual_seed(0)
    pretext = create_pretext("swin_unetr", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=dims),
                             weights=(1.0, 0.5, 2.0))
    image = torch.randn(2, 1, *([16] * dims))
    out = pretext({"image": image})
    expected = out["rotation"] + 0.5 * out["contrastive"] + 2.0 * out["reconstruction"]
    assert torch.allclose(out["loss"].detach(), expected)
    assert pretext.trains_decoder and pretext.settings()["reconstruction"] == "network"
    # the reconstruction target of each view is its rotated, un-cut original
    assert pretext.last_outputs["reconstruction"].shape == (4, 1, *([16] * dims))
    losses = train_losses(pretext, image)
    assert losses[-1] < losses[0], losses

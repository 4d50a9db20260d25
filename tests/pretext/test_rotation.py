"""Rotation prediction (Gidaris et al. 2018): labels are the quarter turns applied, loss learns, 2D and 3D."""

import pytest
import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.checkpoint import build_record
from monai_ssl_plugin.pretext import create_pretext, list_pretexts

torch.set_num_threads(1)


def _spy_embed(pretext):
    seen = []
    embed = pretext.backbone.embed
    pretext.backbone.embed = lambda x: (seen.append(x.detach().clone()), embed(x))[1]
    return seen


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_labels_and_learning(dims, train_losses):
    torch.manual_seed(0)
    pretext = create_pretext("rotation", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=dims))
    image = torch.randn(2, 1, *([16] * dims))
    seen = _spy_embed(pretext)
    out = pretext({"image": image})
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pretext.backbone.network.parameters())
    assert pretext.last_embeddings.shape == (2, pretext.backbone.embed_dim)  # for the collapse monitor
    labels = pretext.last_outputs["labels"]
    assert labels.shape == (2,) and labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2, 3}
    for b in range(2):  # what the encoder saw is the sample turned by labels[b] quarter turns in the last two axes
        assert torch.equal(seen[0][b], torch.rot90(image[b], int(labels[b]), (-2, -1)))
    del pretext.backbone.embed
    losses = train_losses(pretext, image, seed=0)
    assert losses[-1] < losses[0], losses


def test_labels_cover_all_classes_and_plane():
    torch.manual_seed(1)
    pretext = create_pretext("rotation", backbone=create_backbone("nnunet_plain_tiny"), plane=(-3, -1))
    image = torch.randn(16, 1, 16, 8, 16)  # the rotated plane (axes -3, -1) is square, the other axis is not
    seen = _spy_embed(pretext)
    pretext({"image": image})
    labels = pretext.last_outputs["labels"]
    assert set(labels.tolist()) == {0, 1, 2, 3}
    assert all(torch.equal(seen[0][b], torch.rot90(image[b], int(labels[b]), (-3, -1))) for b in range(16))


def test_other_backbones_and_record():
    torch.manual_seed(0)
    resnet = create_backbone("monai_resnet10", spatial_dims=3, widen_factor=0.25)
    pretext = create_pretext("rotation", backbone=resnet)
    out = pretext({"image": torch.randn(2, 1, 16, 16, 16)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    vit = create_backbone("monai_vit_small", spatial_dims=2, img_size=32, num_layers=4)
    out = create_pretext("rotation", backbone=vit)({"image": torch.randn(1, 1, 32, 32)})  # batch 1 works
    assert torch.isfinite(out["loss"])
    record = build_record(resnet, pretext, {"axis_order": "monai"}, [16, 16, 16])
    assert record.pretext == "rotation" and record.pretrained_parts == ["stem", "encoder"]
    assert record.pretext_settings["classes"] == 4 and list_pretexts()["rotation"] == "predictive"

"""Relative patch position (Doersch et al. 2015; 3D: Taleb et al. 2020): class <-> offset, learning, 2D and 3D."""

import pytest
import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.pretext import create_pretext
from monai_ssl_plugin.pretext.predictive.relative_position import neighbour_offsets

torch.set_num_threads(1)


def test_offsets():
    assert neighbour_offsets(2).tolist() == [[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 0], [1, 1]]
    off3 = neighbour_offsets(3)
    assert off3.shape == (26, 3) and len({tuple(o) for o in off3.tolist()}) == 26
    assert not (off3 == 0).all(1).any() and off3.abs().max() == 1


def _coordinates(shape, batch):
    """(B, D, *shape): channel d holds the coordinate along spatial axis d."""
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    return torch.stack(grids)[None].repeat(batch, 1, *([1] * len(shape)))


@pytest.mark.parametrize("dims", [2, 3])
def test_class_matches_offset(dims):
    torch.manual_seed(0)
    pretext = create_pretext("relative_position", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=dims),
                             gap=3, jitter=2)
    shape = [40] * dims
    image = _coordinates(shape, 64)
    pairs = pretext.sample_pairs(image, jitter=False)
    p = (40 - 2 * 3 - 2 * 2) // 3  # 10: the largest patch that fits the 3^D grid with gaps and jitter margins
    assert pairs["patches"].shape == (64, 2, dims, *([p] * dims))
    corner = (slice(None), slice(None), slice(None)) + (0,) * dims
    first = pairs["patches"][corner]  # (B, 2, D) coordinates of each patch's first voxel
    step = (first[:, 1] - first[:, 0]) / (p + 3)
    assert torch.equal(step, pretext.offsets[pairs["label"]].float())  # class c <-> offset offsets[c]
    assert len(set(pairs["label"].tolist())) > 4
    jittered = pretext.sample_pairs(image)
    first = jittered["patches"][corner]
    expected = pretext.offsets[jittered["label"]].float() * (p + 3)
    assert ((first[:, 1] - first[:, 0]) - expected).abs().max() <= 4  # two independent jitters of up to 2
    assert (jittered["starts"] >= 0).all() and (jittered["starts"] + p <= 40).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_and_learning(dims, train_losses):
    torch.manual_seed(0)
    pretext = create_pretext("relative_position", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=dims),
                             head_hidden=64)
    image = torch.randn(2, 1, *([32] * dims))
    out = pretext({"image": image})
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    assert pretext.num_classes == (26 if dims == 3 else 8)
    assert pretext.last_embeddings.shape == (4, pretext.backbone.embed_dim)
    losses = train_losses(pretext, image)
    assert losses[-1] < losses[0], losses
    assert pretext.trains_decoder is False and pretext.settings()["grid"] == [3] * dims


def test_other_backbone_and_size_error():
    torch.manual_seed(0)
    vit = create_backbone("monai_vit_small", spatial_dims=2, img_size=16, patch_size=8, num_layers=4)
    pretext = create_pretext("relative_position", backbone=vit, patch_size=16, gap=2, jitter=1)
    out = pretext({"image": torch.randn(2, 1, 56, 56)})
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="needs an input of at least"):
        pretext({"image": torch.randn(2, 1, 40, 40)})

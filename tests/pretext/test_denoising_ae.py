"""Denoising / in-painting autoencoder (MONAI tutorial corruption, L1 restore): target, scaling, learning."""

import pytest
import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.pretext import create_pretext
from monai_ssl_plugin.transforms.coarse import monai_ssl_view

torch.set_num_threads(1)


@pytest.mark.parametrize("dims", [2, 3])
def test_corruption_restore_target_and_learning(dims, train_losses):
    torch.manual_seed(0)
    pretext = create_pretext("denoising_ae", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=dims))
    image = torch.randn(2, 1, *([32] * dims))
    corrupted = pretext.corrupt(image)
    assert corrupted.shape == image.shape and not torch.equal(corrupted, image)
    for b in range(2):  # holes are filled with noise inside each sample's own range (MONAI's default)
        assert corrupted[b].min() >= image[b].min() and corrupted[b].max() <= image[b].max()
    out = pretext({"image": image})
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    l1_to_clean = (pretext.last_outputs["prediction"] - image).abs().mean()
    assert torch.allclose(out["loss"].detach(), l1_to_clean)
    losses = train_losses(pretext, image, lr=3e-3)
    assert losses[-1] < losses[0], losses
    assert pretext.settings()["loss"] == "l1" and pretext.trains_decoder


def test_hole_scale():
    torch.manual_seed(0)
    pretext = create_pretext("denoising_ae", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=2),
                             shuffle_prob=0.0)
    assert pretext._scale((48, 48)) == 0.5 and pretext._scale((96, 128)) == 1.0
    image = torch.arange(64 * 64, dtype=torch.float32).view(1, 1, 64, 64).repeat(8, 1, 1, 1)
    changed = (pretext.corrupt(image) != image).flatten(1).float().mean(1)
    assert (changed > 0).all() and (changed < 1).all()  # holes (in-painting) or their complement (out-painting)
    # at the tutorial's 96^3 scale with its shuffle probability the batched MONAI tutorial view is used
    exact = create_pretext("denoising_ae", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=2),
                           hole_scale=1.0)
    torch.manual_seed(2)
    a = exact.corrupt(image)
    torch.manual_seed(2)
    assert torch.equal(a, monai_ssl_view(image))


def test_light_decoder_backbone():
    torch.manual_seed(0)
    vit = create_backbone("monai_vit_small", spatial_dims=3, img_size=16, patch_size=8, num_layers=4)
    pretext = create_pretext("denoising_ae", backbone=vit, decoder_width=16)
    out = pretext({"image": torch.randn(2, 1, 16, 16, 16)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and not pretext.trains_decoder
    assert not any("laterals" in k for k in vit.network.state_dict())

import json

import pytest
import torch
from joint_embedding_helpers import BACKBONES, check_forward, check_record, fit, make, patch_shape, volumes

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext import list_pretexts
from monai_ssl_plugin.pretext.contrastive import SimCLR

torch.set_num_threads(1)


def test_registered_as_contrastive():
    assert list_pretexts()["simclr"] == "contrastive"


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_finite_loss_with_grad(dims):
    pretext = make("simclr", dims=dims)
    out = check_forward(pretext, volumes(2, patch_shape("simclr", dims)))
    assert set(out) == {"loss", "nt_xent", "alignment"}
    assert pretext.last_embeddings.shape == (4, 128)  # both views of both volumes
    # views: 3/4 of the patch (24 of 32), a multiple of the tiny U-Net's stride 4
    assert pretext._crop_size([32] * dims, None) == (24,) * dims


def test_views_overlap_and_fit_the_backbone():
    pretext = make("simclr", view_size=20, min_overlap=0.5)
    x = volumes(2, [32, 32, 32])
    v1, v2 = pretext.two_views(x)
    assert v1.shape == v2.shape == (2, 1, 20, 20, 20)  # 20 is a multiple of 4
    assert make("simclr", view_size=22)._crop_size([32] * 3, 22) == (20, 20, 20)  # rounded down


def test_batch_of_one_names_the_fix():
    pretext = make("simclr")
    with pytest.raises(PluginError, match="batch_size >= 2") as err:
        pretext({"image": volumes(1, [32, 32, 32])})
    assert "\n" not in str(err.value)


def test_steps_lower_the_loss():
    pretext = make("simclr")
    history = fit(pretext, volumes(2, [32, 32, 32]), steps=10)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"], history


def test_settings_and_record():
    settings = check_record(make("simclr"))
    assert settings["temperature"] == 0.5 and settings["min_overlap"] == 0.5 and settings["standardise"] is True
    json.dumps(settings)


def test_published_defaults():
    pretext = SimCLR(make("simclr").backbone)
    assert pretext.criterion.temperature == 0.5
    assert pretext.projector[1].mlp[-1].out_features == 128 and pretext.projector[1].mlp[0].out_features == 2048


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_with_embed(backbone, dims):
    side = BACKBONES[backbone][1]
    pretext = make("simclr", backbone=backbone, dims=dims)
    check_forward(pretext, volumes(2, [side] * dims))

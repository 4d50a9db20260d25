import pytest
import torch
from joint_embedding_helpers import BACKBONES, check_ema, check_forward, check_record, fit, make, volumes

from monai_ssl_plugin.pretext import list_pretexts
from monai_ssl_plugin.pretext.ema import cosine_momentum
from monai_ssl_plugin.pretext.non_contrastive import BYOL

torch.set_num_threads(1)


def test_registered_as_non_contrastive():
    assert list_pretexts()["byol"] == "non_contrastive"


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_finite_loss_with_grad(dims):
    pretext = make("byol", dims=dims)
    out = check_forward(pretext, volumes(2, [32] * dims))
    assert set(out) == {"loss", "byol", "alignment"} and 0.0 <= float(out["loss"].detach()) <= 8.0
    assert all(p.grad is None for p in pretext.target_backbone.parameters())


@pytest.mark.parametrize("dims", [2, 3])
def test_batch_of_one_works(dims):
    # no negatives, LayerNorm heads, running standardiser: nothing needs a second volume
    check_forward(make("byol", dims=dims), volumes(1, [32] * dims))


def test_target_follows_the_cosine_momentum():
    pretext = make("byol", total_steps=100)
    pretext({"image": volumes(2, [32, 32, 32])})
    expected = cosine_momentum(40, 100, 0.996, 1.0)
    assert 0.996 < expected < 1.0
    check_ema(pretext, [(pretext.target_backbone, pretext.backbone), (pretext.target_projector, pretext.projector)],
              iteration=40, momentum=expected)
    assert pretext.momentum == pytest.approx(expected)
    assert pretext.momentum_at(0) == pytest.approx(0.996) and pretext.momentum_at(100) == 1.0
    assert make("byol").momentum_at(10**6) == 0.996  # no total_steps: constant


def test_steps_lower_the_loss():
    history = fit(make("byol"), volumes(2, [32, 32, 32]), steps=10)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"], history


def test_settings_and_published_defaults():
    settings = check_record(make("byol", total_steps=7))
    assert settings["base_momentum"] == 0.996 and settings["total_steps"] == 7
    pretext = BYOL(make("byol").backbone)
    assert pretext.projector[1].mlp[0].out_features == 4096 and pretext.projector[1].mlp[-1].out_features == 256
    assert pretext.predictor.mlp[-1].out_features == 256


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_with_embed(backbone, dims):
    side = BACKBONES[backbone][1]
    check_forward(make("byol", backbone=backbone, dims=dims), volumes(2, [side] * dims))

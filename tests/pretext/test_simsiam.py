import pytest
import torch
from joint_embedding_helpers import BACKBONES, check_forward, check_record, fit, make, volumes

from monai_ssl_plugin.pretext import list_pretexts
from monai_ssl_plugin.pretext.non_contrastive import SimSiam

torch.set_num_threads(1)


def test_registered_as_non_contrastive():
    assert list_pretexts()["simsiam"] == "non_contrastive"


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_finite_loss_with_grad(dims):
    out = check_forward(make("simsiam", dims=dims), volumes(2, [32] * dims))
    assert set(out) == {"loss", "simsiam", "alignment"} and -1.0 <= float(out["loss"].detach()) <= 1.0


def test_stop_gradient_no_teacher():
    pretext = make("simsiam")
    assert not hasattr(pretext, "after_step")  # no EMA: the stop-gradient is the whole trick
    names = {n.split(".")[0] for n, _ in pretext.named_parameters()}
    assert names == {"backbone", "projector", "predictor"}


@pytest.mark.parametrize("dims", [2, 3])
def test_batch_of_one_works(dims):
    check_forward(make("simsiam", dims=dims), volumes(1, [32] * dims))


def test_steps_lower_the_loss():
    history = fit(make("simsiam"), volumes(2, [32, 32, 32]), steps=10)
    assert history[-1]["loss"] < history[0]["loss"] - 0.1, history


def test_settings_and_published_defaults():
    settings = check_record(make("simsiam"))
    assert settings["predictor_dim"] == 16
    pretext = SimSiam(make("simsiam").backbone)
    head = pretext.projector[1].mlp
    assert len([m for m in head if isinstance(m, torch.nn.Linear)]) == 3 and head[-1].out_features == 2048
    assert pretext.predictor.mlp[0].out_features == 512 and pretext.predictor.mlp[-1].out_features == 2048


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_with_embed(backbone, dims):
    side = BACKBONES[backbone][1]
    check_forward(make("simsiam", backbone=backbone, dims=dims), volumes(2, [side] * dims))

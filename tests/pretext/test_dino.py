import math

import pytest
import torch
from joint_embedding_helpers import BACKBONES, check_ema, check_forward, check_record, fit, make, volumes

from monai_ssl_plugin.pretext import list_pretexts
from monai_ssl_plugin.pretext.ema import cosine_momentum
from monai_ssl_plugin.pretext.non_contrastive import DINO

torch.set_num_threads(1)


def test_registered_as_non_contrastive():
    assert list_pretexts()["dino"] == "non_contrastive"


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_finite_loss_with_grad(dims):
    pretext = make("dino", dims=dims)
    out = check_forward(pretext, volumes(2, [32] * dims))
    assert set(out) == {"loss", "dino", "teacher_entropy", "teacher_temp"}
    assert pretext.last_embeddings.shape == (4, 32)  # student embeddings of 2 global crops x 2 volumes
    probs = pretext.last_teacher_probs
    assert probs.shape == (4, 128) and torch.allclose(probs.sum(-1), torch.ones(4))
    assert 0 <= float(out["teacher_entropy"]) <= math.log(128)
    assert all(p.grad is None for p in pretext.teacher_backbone.parameters())


def test_crop_sizes_and_teacher_sees_global_crops_only():
    pretext = make("dino", n_local=3)
    assert pretext.crop_sizes([32, 32, 32]) == ((32, 32, 32), (16, 16, 16))
    seen = {"student": [], "teacher": []}
    for net, key in ((pretext.backbone, "student"), (pretext.teacher_backbone, "teacher")):
        net.network.encoder.register_forward_pre_hook(lambda m, a, key=key: seen[key].append(tuple(a[0].shape)))
    pretext({"image": volumes(2, [32, 32, 32])})
    assert seen["teacher"] == [(4, 1, 32, 32, 32)]  # 2 global crops x 2 volumes, nothing else
    assert sorted(seen["student"]) == [(4, 1, 32, 32, 32), (6, 1, 16, 16, 16)]


@pytest.mark.parametrize("dims", [2, 3])
def test_batch_of_one_works(dims):
    check_forward(make("dino", dims=dims), volumes(1, [32] * dims))


def test_centre_and_step_are_checkpointed():
    pretext = make("dino")
    pretext({"image": volumes(2, [32, 32, 32])})
    pretext.after_step(7)
    state = pretext.state_dict()
    assert "criterion.center" in state and state["criterion.center"].abs().sum() > 0  # moved after one step
    assert int(state["step"]) == 7
    fresh = make("dino")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.criterion.center, pretext.criterion.center) and int(fresh.step) == 7


def test_teacher_follows_the_cosine_momentum():
    pretext = make("dino", total_steps=50)
    pretext({"image": volumes(2, [32, 32, 32])})
    expected = cosine_momentum(10, 50, 0.996, 1.0)
    check_ema(pretext, [(pretext.teacher_backbone, pretext.backbone), (pretext.teacher_head, pretext.head)],
              iteration=10, momentum=expected)


def test_teacher_temperature_schedule():
    pretext = make("dino", warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_steps=10)
    x = volumes(2, [32, 32, 32])
    assert float(pretext({"image": x})["teacher_temp"]) == pytest.approx(0.04)
    pretext.after_step(5)
    assert float(pretext({"image": x})["teacher_temp"]) == pytest.approx(0.055)
    pretext.after_step(20)
    assert float(pretext({"image": x})["teacher_temp"]) == pytest.approx(0.07)


def test_steps_lower_the_loss():
    history = fit(make("dino"), volumes(2, [32, 32, 32]), steps=10)
    assert history[-1]["loss"] < 0.6 * history[0]["loss"], history


def test_settings_and_published_defaults():
    settings = check_record(make("dino"))
    assert settings["n_global"] == 2 and settings["teacher_temp"] == 0.04 and settings["student_temp"] == 0.1
    assert settings["center_momentum"] == 0.9 and settings["base_momentum"] == 0.996
    pretext = DINO(make("dino").backbone)
    assert pretext.n_local == 8 and pretext.criterion.center.shape == (1, 65536)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_with_embed(backbone, dims):
    side = BACKBONES[backbone][1]
    pretext = make("dino", backbone=backbone, dims=dims)
    check_forward(pretext, volumes(2, [side] * dims))
    g, loc = pretext.crop_sizes([side] * dims)
    if backbone in ("monai_vit_small", "monai_unetr_small"):  # fixed input size: every crop is resized to it
        assert g == loc == (16,) * dims

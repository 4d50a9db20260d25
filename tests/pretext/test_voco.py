import pytest
import torch
from joint_embedding_helpers import BACKBONES, check_ema, check_forward, check_record, fit, make, patch_shape, volumes

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext import list_pretexts
from monai_ssl_plugin.pretext.contrastive import VoCo

torch.set_num_threads(1)


def test_registered_as_contrastive():
    assert list_pretexts()["voco"] == "contrastive"


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_finite_loss_with_grad(dims):
    pretext = make("voco", dims=dims)
    out = check_forward(pretext, volumes(2, patch_shape("voco", dims)))
    assert set(out) == {"loss", "positive", "negative", "regulariser", "position_error"}
    assert pretext.last_embeddings.shape == (2 * (16 + 4), 64)  # 16 bases + 4 random crops per volume
    assert all(p.grad is None for p in pretext.teacher_backbone.parameters())


def test_heads_are_batch_norm_without_affine_or_running_stats():
    pretext = make("voco")
    norms = [m for m in pretext.head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)


def test_batch_of_one_works():
    # the head normalises over the 20 crops of the volume
    out = make("voco")({"image": volumes(1, patch_shape("voco", 3))})
    assert torch.isfinite(out["loss"])


def test_patch_too_small_for_the_grid_names_the_fix():
    with pytest.raises(PluginError, match="patch"):
        make("voco")({"image": volumes(1, [8, 2, 2])})


def test_teacher_moves_by_momentum_0_9():
    pretext = make("voco")
    assert pretext.momentum == 0.9 and VoCo(pretext.backbone).momentum == 0.9
    pretext({"image": volumes(2, patch_shape("voco", 3))})
    check_ema(pretext, [(pretext.teacher_backbone, pretext.backbone), (pretext.teacher_head, pretext.head)],
              iteration=3, momentum=0.9)


def test_steps_lower_the_loss_and_the_position_error():
    pretext = make("voco")
    history = fit(pretext, volumes(2, patch_shape("voco", 3)), steps=10)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"], history
    assert history[-1]["position_error"] < history[0]["position_error"]


def test_settings():
    settings = check_record(make("voco"))
    assert settings["grid"] == [4, 4] and settings["axes"] == [-2, -1] and settings["n_crops"] == 4
    assert settings["momentum"] == 0.9 and settings["norm"] == "batch"


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_with_embed(backbone, dims):
    side = BACKBONES[backbone][1]
    # base crops of side 16 (8 in 2D: crops are resized to what the backbone accepts, e.g. ViT's 16)
    check_forward(make("voco", backbone=backbone, dims=dims), volumes(2, patch_shape("voco", dims, min(side, 32))))

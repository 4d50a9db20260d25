import pytest
import torch
from joint_embedding_helpers import BACKBONES, check_ema, check_forward, check_record, fit, make, volumes

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext import list_pretexts
from monai_ssl_plugin.pretext.contrastive import MoCo

torch.set_num_threads(1)


def test_registered_as_contrastive():
    assert list_pretexts()["moco"] == "contrastive"


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_finite_loss_with_grad(dims):
    pretext = make("moco", dims=dims)
    out = check_forward(pretext, volumes(2, [32] * dims))
    assert set(out) == {"loss", "info_nce", "alignment"}
    assert pretext.last_embeddings.shape == (2, 128)
    # the key encoder gets no gradient
    assert all(p.grad is None for p in pretext.key_backbone.parameters())


def test_queue_receives_the_keys_and_is_checkpointed():
    pretext = make("moco", queue_size=8)
    queue = pretext.criterion.queue
    pretext({"image": volumes(2, [32, 32, 32])})
    assert int(queue.ptr) == 2
    state = pretext.state_dict()
    assert {"criterion.queue.queue", "criterion.queue.ptr"} <= set(state)
    assert any(k.startswith("key_backbone.network.") for k in state)  # the momentum encoder too
    fresh = make("moco", queue_size=8)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.criterion.queue.queue, queue.queue) and int(fresh.criterion.queue.ptr) == 2
    pretext.eval()
    pretext({"image": volumes(2, [32, 32, 32])})
    assert int(queue.ptr) == 2  # no enqueue outside training


def test_symmetric_enqueues_both_views_after_both_terms():
    pretext = make("moco", queue_size=8, symmetric=True)
    out = pretext({"image": volumes(2, [32, 32, 32])})
    assert int(pretext.criterion.queue.ptr) == 4 and torch.isfinite(out["loss"])


def test_batch_of_one_works_with_a_queue_and_needs_two_without():
    out = make("moco")({"image": volumes(1, [32, 32, 32])})
    assert torch.isfinite(out["loss"])
    with pytest.raises(PluginError, match="queue_size > 0"):
        make("moco", queue_size=0)({"image": volumes(1, [32, 32, 32])})
    assert torch.isfinite(make("moco", queue_size=0)({"image": volumes(2, [32, 32, 32])})["loss"])


def test_momentum_encoder_moves_by_the_momentum():
    pretext = make("moco", momentum=0.99)
    pretext({"image": volumes(2, [32, 32, 32])})
    check_ema(pretext, [(pretext.key_backbone, pretext.backbone), (pretext.key_projector, pretext.projector)],
              iteration=5, momentum=0.99)


def test_steps_raise_the_alignment_of_queries_and_keys():
    # the InfoNCE value itself may rise while the queue fills with real keys; the alignment must rise
    pretext = make("moco")
    history = fit(pretext, volumes(2, [32, 32, 32]), steps=10)
    assert history[-1]["alignment"] > history[0]["alignment"] + 0.2, history


def test_settings_and_published_defaults():
    settings = check_record(make("moco"))
    assert settings["queue_size"] == 16 and settings["temperature"] == 0.2 and settings["momentum"] == 0.999
    pretext = MoCo(make("moco").backbone)
    assert pretext.criterion.queue.size == 65536 and pretext.momentum == 0.999


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_with_embed(backbone, dims):
    side = BACKBONES[backbone][1]
    check_forward(make("moco", backbone=backbone, dims=dims), volumes(2, [side] * dims))

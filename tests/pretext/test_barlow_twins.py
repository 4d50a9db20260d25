import pytest
import torch
from joint_embedding_helpers import BACKBONES, check_forward, check_record, fit, make, volumes

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext import list_pretexts
from monai_ssl_plugin.pretext.non_contrastive import BarlowTwins

torch.set_num_threads(1)


def test_registered_as_non_contrastive():
    assert list_pretexts()["barlow_twins"] == "non_contrastive"


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_finite_loss_with_grad(dims):
    out = check_forward(make("barlow_twins", dims=dims), volumes(4, [32] * dims))
    assert set(out) == {"loss", "barlow_twins", "alignment"}


@pytest.mark.parametrize("batch", [1, 2])
def test_small_batches_name_the_fix(batch):
    # over 2 rows every standardised entry is +-1 whatever the embeddings: nothing to learn
    with pytest.raises(PluginError, match="batch_size >= 3") as err:
        make("barlow_twins")({"image": volumes(batch, [32, 32, 32])})
    assert "\n" not in str(err.value)


def test_batch_of_three_works():
    check_forward(make("barlow_twins"), volumes(3, [32, 32, 32]))


def test_steps_lower_the_loss():
    history = fit(make("barlow_twins"), volumes(4, [32, 32, 32]), steps=10)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"], history


def test_settings_and_published_defaults():
    settings = check_record(make("barlow_twins"))
    assert settings["lambd"] == 5e-3
    pretext = BarlowTwins(make("barlow_twins").backbone, projection_dim=256, hidden_dim=256)
    assert pretext.criterion.lambd == 5e-3
    assert len([m for m in pretext.projector[1].mlp if isinstance(m, torch.nn.Linear)]) == 3
    import inspect

    defaults = inspect.signature(BarlowTwins).parameters
    assert defaults["projection_dim"].default == 8192 and defaults["hidden_dim"].default == 8192


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_with_embed(backbone, dims):
    side = BACKBONES[backbone][1]
    check_forward(make("barlow_twins", backbone=backbone, dims=dims), volumes(3, [side] * dims))

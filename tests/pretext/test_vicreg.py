import pytest
import torch
from joint_embedding_helpers import BACKBONES, check_forward, check_record, fit, make, volumes

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.losses import VICRegLoss
from monai_ssl_plugin.pretext import list_pretexts
from monai_ssl_plugin.pretext.non_contrastive import VICReg

torch.set_num_threads(1)


def test_registered_as_non_contrastive():
    assert list_pretexts()["vicreg"] == "non_contrastive"


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_finite_loss_with_grad(dims):
    out = check_forward(make("vicreg", dims=dims), volumes(2, [32] * dims))
    assert set(out) == {"loss", "invariance", "variance", "covariance"}
    # the total is the weighted sum of the reported terms (25 / 25 / 1)
    total = 25 * out["invariance"] + 25 * out["variance"] + out["covariance"]
    torch.testing.assert_close(out["loss"].detach(), total)


def test_total_equals_the_loss_module():
    pretext = make("vicreg")
    torch.manual_seed(3)
    out = pretext({"image": volumes(2, [32, 32, 32])})
    z1, z2 = pretext.last_embeddings.chunk(2)
    torch.testing.assert_close(out["loss"].detach(), VICRegLoss()(z1, z2))


def test_batch_of_one_names_the_fix():
    with pytest.raises(PluginError, match="batch_size >= 2"):
        make("vicreg")({"image": volumes(1, [32, 32, 32])})


def test_steps_lower_the_loss():
    history = fit(make("vicreg"), volumes(2, [32, 32, 32]), steps=10)
    assert history[-1]["loss"] < 0.9 * history[0]["loss"], history


def test_settings_and_published_defaults():
    settings = check_record(make("vicreg"))
    assert (settings["sim_weight"], settings["var_weight"], settings["cov_weight"]) == (25.0, 25.0, 1.0)
    import inspect

    defaults = inspect.signature(VICReg).parameters
    assert defaults["projection_dim"].default == 8192 and defaults["num_layers"].default == 3


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_with_embed(backbone, dims):
    side = BACKBONES[backbone][1]
    check_forward(make("vicreg", backbone=backbone, dims=dims), volumes(2, [side] * dims))

"""User-composed hybrids: weighted sum of terms over one shared backbone, per-term report, after_step fan-out."""

import pytest
import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.checkpoint import build_record
from monai_ssl_plugin.pretext import create_pretext, list_pretexts
from monai_ssl_plugin.pretext.hybrid.composed import parse_terms

torch.set_num_threads(1)


def _own(module, shared):
    ids = {id(p) for p in shared.parameters()}
    return sum(p.numel() for p in module.parameters() if id(p) not in ids)


@pytest.mark.parametrize("dims", [2, 3])
def test_weighted_sum_and_shared_parameters(dims, train_losses):
    torch.manual_seed(0)
    backbone = create_backbone("nnunet_plain_tiny", spatial_dims=dims)
    pretext = create_pretext("composed", backbone=backbone, terms={"mae": 1.0, "rotation": 0.5})
    assert all(term.backbone is backbone for term in pretext.terms.values())
    n_backbone = sum(p.numel() for p in backbone.parameters())
    n_total = sum(p.numel() for p in pretext.parameters())  # each shared parameter counted once
    assert n_total == n_backbone + sum(_own(t, backbone) for t in pretext.terms.values())
    image = torch.randn(2, 1, *([16] * dims))
    torch.manual_seed(1)
    out = pretext({"image": image})
    assert torch.allclose(out["loss"].detach(), out["mae"] + 0.5 * out["rotation"])
    assert {"mae", "mae/reconstruction", "rotation", "rotation/accuracy"} <= set(out)
    # each term's loss is what the term alone computes with the same random draws
    torch.manual_seed(1)
    alone = pretext.terms["mae"]({"image": image})
    assert torch.allclose(alone["loss"].detach(), out["mae"])
    # both terms send gradients into the same backbone weights
    grads = []
    for key in ("mae", "rotation"):
        backbone.zero_grad()
        torch.manual_seed(1)
        pretext.terms[key]({"image": image})["loss"].backward()
        grads.append(backbone.network.encoder.stages[0][0].convs[0].conv.weight.grad.clone())
    backbone.zero_grad()
    torch.manual_seed(1)
    pretext({"image": image})["loss"].backward()
    combined = backbone.network.encoder.stages[0][0].convs[0].conv.weight.grad
    assert torch.allclose(combined, grads[0] + 0.5 * grads[1], atol=1e-5)
    losses = train_losses(pretext, image, seed=2)
    assert losses[-1] < losses[0], losses


def test_settings_record_after_step_and_parsing():
    torch.manual_seed(0)
    backbone = create_backbone("nnunet_plain_tiny")
    terms = [{"name": "rotation", "weight": 1.0}, {"name": "rotation", "weight": 0.25, "plane": [-3, -1]},
             {"name": "mae", "weight": 2.0, "mask_ratio": 0.6, "block_size": 4}]
    pretext = create_pretext("composed", backbone=backbone, terms=terms)
    assert list(pretext.terms) == ["rotation", "rotation_2", "mae"]
    settings = pretext.settings()["terms"]
    assert settings["rotation_2"]["settings"]["plane"] == [-3, -1] and settings["mae"]["settings"]["mask_ratio"] == 0.6
    assert settings["mae"]["weight"] == 2.0 and settings["mae"]["paradigm"] == "generative"
    calls = []
    pretext.terms["rotation_2"].after_step = calls.append
    pretext.after_step(7)
    assert calls == [7]
    assert pretext.trains_decoder  # mae trains the U-Net's decoder
    record = build_record(backbone, pretext, {"axis_order": "nnunet"}, [16, 16, 16])
    assert record.pretext == "composed" and "decoder" in record.pretrained_parts
    only_rotation = create_pretext("composed", backbone=backbone, terms={"rotation": 1.0})
    assert not only_rotation.trains_decoder
    assert parse_terms({"a": 1, "b": 0.5})[1] == {"key": "b", "name": "b", "weight": 0.5, "kwargs": {}}
    with pytest.raises(ValueError):
        parse_terms({})
    with pytest.raises(ValueError):
        create_pretext("composed", backbone=backbone, terms={"composed": 1.0})
    assert list_pretexts()["composed"] == "hybrid"


@pytest.mark.skipif("simclr" not in list_pretexts(), reason="the contrastive pretexts are not registered")
def test_masked_modelling_plus_simclr():
    torch.manual_seed(0)
    backbone = create_backbone("nnunet_plain_tiny")
    pretext = create_pretext("composed", backbone=backbone, terms={"mae": 1.0, "simclr": 0.5})
    image = torch.randn(2, 1, 32, 32, 32)
    out = pretext({"image": image})
    assert torch.allclose(out["loss"].detach(), out["mae"] + 0.5 * out["simclr"])
    assert pretext.last_embeddings is pretext.terms["simclr"].last_embeddings  # passed on to the collapse monitor
    out["loss"].backward()
    assert pretext.terms["simclr"].backbone is backbone
    assert torch.isfinite(out["loss"]) and backbone.network.encoder.stages[-1][0].convs[0].conv.weight.grad is not None

"""Activation checkpointing switch: same loss, gradients and state-dict keys; hooks (SparK) still apply."""

import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.engine.memory import activation_checkpointing
from monai_ssl_plugin.pretext import create_pretext


def _loss_and_grads(checkpointed: bool):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = create_backbone("nnunet_plain_tiny", in_channels=1)
    keys = list(backbone.network.state_dict())
    backbone = activation_checkpointing(backbone, "true" if checkpointed else "false")
    pretext = create_pretext("mae", backbone=backbone, mask_ratio=0.75, block_size=4, sparse=True)
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)  # same masks
    loss = pretext({"image": x})["loss"]
    loss.backward()
    assert list(backbone.network.state_dict()) == keys
    return float(loss), {k: p.grad.clone() for k, p in pretext.named_parameters() if p.grad is not None}


def test_checkpointing_gives_the_same_loss_and_gradients():
    loss_a, grads_a = _loss_and_grads(False)
    loss_b, grads_b = _loss_and_grads(True)
    assert abs(loss_a - loss_b) < 1e-6
    assert grads_a.keys() == grads_b.keys() and grads_a
    for key in grads_a:
        torch.testing.assert_close(grads_a[key], grads_b[key], rtol=1e-5, atol=1e-7)


def test_switch_is_idempotent_and_off_by_default():
    backbone = create_backbone("nnunet_plain_tiny", in_channels=1)
    assert activation_checkpointing(backbone, False) is backbone
    assert not any(getattr(s, "_ssl_checkpointed", False) for s in backbone.encoder_stages())
    activation_checkpointing(activation_checkpointing(backbone))
    assert all(s._ssl_checkpointed for s in backbone.encoder_stages())
    with torch.no_grad():  # inference path: plain forward
        assert backbone.encode(torch.randn(1, 1, 16, 16, 16))[-1].shape[0] == 1


def test_momentum_copy_of_a_checkpointed_backbone_runs_its_own_weights():
    """EMA teachers are deep copies of the backbone: a copy must compute with the copy's weights,
    with and without gradients (a closure over the original stage would silently use the student's)."""
    import copy

    torch.set_num_threads(1)
    torch.manual_seed(0)
    student = activation_checkpointing(create_backbone("nnunet_plain_tiny", in_channels=1))
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(0.5)
    plain = copy.deepcopy(teacher)
    for stage in plain.encoder_stages():  # the same weights without the switch
        del stage.forward
    x = torch.randn(1, 1, 16, 16, 16)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(teacher.embed(x), plain.embed(x))
            assert not torch.allclose(teacher.embed(x), student.embed(x))

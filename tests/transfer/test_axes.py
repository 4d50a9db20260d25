"""Axis-order transposition is exact where it is offered: the transposed network on the transposed
volume computes the same function."""

from __future__ import annotations

import torch
from monai_ssl_helpers import resnet, save_checkpoint, unetr, vit

from monai_ssl_plugin.monai_bundles import axis_permutation, load_pretrained, permute_axes


def test_axis_permutation():
    assert axis_permutation("nnunet", "monai") == (2, 1, 0)
    assert axis_permutation("monai", "monai") == (0, 1, 2)
    w = torch.arange(24.0).reshape(1, 1, 2, 3, 4)
    state, changed = permute_axes({"w": w, "b": torch.zeros(1)}, (2, 1, 0))
    assert state["w"].shape == (1, 1, 4, 3, 2) and changed == ["w"]
    assert state["w"][0, 0, 3, 2, 1] == w[0, 0, 1, 2, 3] == 23


def test_resnet_nnunet_to_monai_is_exact(tmp_path):
    # pretrained on (z, y, x) volumes with an anisotropic stem; the MONAI pipeline feeds (x, y, z)
    ssl = resnet(num_classes=3, conv1_t_size=[3, 7, 5], conv1_t_stride=[1, 2, 2], seed=1)
    ckpt = save_checkpoint(tmp_path / "nn.pt", ssl, "monai.ResNet", axis_order="nnunet")
    net = resnet(num_classes=3, conv1_t_size=[5, 7, 3], conv1_t_stride=[2, 2, 1], seed=2)
    report = load_pretrained(net, ckpt, on_axis_mismatch="permute", log=None)
    assert report.loaded_fraction == 1.0
    net.fc.load_state_dict(ssl.fc.state_dict())  # same head, to compare the whole function
    ssl.eval(), net.eval()
    x_zyx = torch.randn(2, 1, 12, 20, 28)
    with torch.no_grad():
        assert torch.allclose(ssl(x_zyx), net(x_zyx.permute(0, 1, 4, 3, 2)), atol=1e-5)


def test_vit_position_embeddings_are_reordered_exactly(tmp_path):
    ssl = vit(seed=1, img_size=(16, 32, 48))  # (z, y, x): patch grid 1 x 2 x 3
    ckpt = save_checkpoint(tmp_path / "vit.pt", ssl, "monai.ViT", axis_order="nnunet",
                           backbone_kwargs={"img_size": [16, 32, 48], "patch_size": 16})
    net = unetr(seed=2, img_size=(48, 32, 16))
    load_pretrained(net, ckpt, on_axis_mismatch="permute", log=None)
    ssl.eval(), net.eval()
    x_zyx = torch.randn(1, 1, 16, 32, 48)
    with torch.no_grad():
        a = ssl(x_zyx)[0]  # (1, 6, hidden): tokens in (z, y, x) grid order
        b = net.vit(x_zyx.permute(0, 1, 4, 3, 2))[0]  # tokens in (x, y, z) grid order
    a = a.reshape(1, 1, 2, 3, -1).permute(0, 3, 2, 1, 4).reshape(1, 6, -1)
    assert torch.allclose(a, b, atol=1e-5)

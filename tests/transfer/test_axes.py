"""Axis-order transposition is exact where it is offered: the transposed network on the transposed
volume computes the same function."""

from __future__ import annotations

import pytest
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


def _swin(seed: int, downsample: str):
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(seed)
    # window 2 and depth 2 (a shifted-window block per stage); every window of a 32x64x96 input is full
    return SwinUNETR(in_channels=1, out_channels=2, feature_size=12, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                     window_size=2, downsample=downsample, norm_name="batch")


@pytest.mark.parametrize("downsample", ["merging", "mergingv2"])
def test_swin_nnunet_to_monai_is_exact(tmp_path, downsample):
    ssl = _swin(1, downsample)
    ckpt = save_checkpoint(tmp_path / "swin.pt", ssl, "monai.SwinUNETR", axis_order="nnunet",
                           backbone_kwargs={"window_size": 2, "downsample": downsample})
    net = _swin(2, downsample)
    report = load_pretrained(net, ckpt, on_axis_mismatch="permute", log=None)
    assert report.loaded_fraction == 1.0
    ssl.eval(), net.eval()
    x_zyx = torch.randn(1, 1, 32, 64, 96)
    with torch.no_grad():
        feats_zyx = ssl.swinViT(x_zyx)
        feats_xyz = net.swinViT(x_zyx.permute(0, 1, 4, 3, 2))
    assert len(feats_zyx) == 5
    for a, b in zip(feats_zyx, feats_xyz):  # every stage, patch merging and shifted windows included
        assert torch.allclose(a.permute(0, 1, 4, 3, 2), b, atol=1e-5)
    # without the Swin-specific re-ordering (kernels only) the features differ: the test can fail
    kernels_only, _ = permute_axes(ssl.state_dict(), (2, 1, 0))
    net.load_state_dict(kernels_only)
    with torch.no_grad():
        wrong = net.swinViT(x_zyx.permute(0, 1, 4, 3, 2))
    assert not torch.allclose(feats_zyx[-1].permute(0, 1, 4, 3, 2), wrong[-1], atol=1e-3)


def test_swin_merge_blocks_follow_the_permuted_offsets():
    from monai_ssl_plugin.transfer.swin_axes import merge_block_order, merge_offsets

    for mode in ("merging", "mergingv2"):
        offsets = merge_offsets(mode, 3)
        order = merge_block_order(mode, (2, 1, 0), 3)
        assert sorted(order) == list(range(8))
        assert all(offsets[src] == offsets[dst][::-1] for dst, src in enumerate(order))


def test_swin_non_cubic_window_is_refused():
    from monai_ssl_plugin.errors import PluginError
    from monai_ssl_plugin.transfer.axes import transpose_state

    state = {"swinViT.layers1.0.blocks.0.attn.relative_position_bias_table": torch.zeros(3 * 5 * 7, 2)}
    with pytest.raises(PluginError, match="not the table of a window equal along every axis"):
        transpose_state(state, "monai.SwinUNETR", (2, 1, 0))

"""SwinUNETR adapter: ``swinViT.*`` keys equal a separately built SwinUNETR's; errors; SparK masking."""

import pytest
import torch
from monai.networks.nets import SwinUNETR

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext.generative.mae import MaskedImageModelling

torch.set_num_threads(1)


@pytest.mark.parametrize("dims", [2, 3])
def test_swinvit_keys_equal_a_downstream_swinunetr(dims):
    b = create_backbone("monai_swinunetr", spatial_dims=dims, in_channels=1, feature_size=24)
    downstream = SwinUNETR(in_channels=1, out_channels=14, feature_size=24, spatial_dims=dims)  # e.g. BTCV, 14 labels
    mine, theirs = b.network.state_dict(), downstream.state_dict()
    enc = {k: v.shape for k, v in mine.items() if k.startswith("swinViT.")}
    assert enc == {k: v.shape for k, v in theirs.items() if k.startswith("swinViT.")}
    # the decoder transfers too, except the output layer, whose shape follows the label count
    diff = {k for k in mine if mine[k].shape != theirs[k].shape}
    assert set(mine) == set(theirs) and diff == {"out.conv.conv.weight", "out.conv.conv.bias"}
    assert all(k.startswith(b.key_prefixes()["seg_layers"] + ".") for k in diff)
    assert b.key_prefixes()["encoder"] == "swinViT" and b.embed_dim == 16 * 24


def test_input_errors():
    b = create_backbone("monai_swinunetr", spatial_dims=2, feature_size=12, window_size=4)
    with pytest.raises(PluginError, match="divisible by 32"):
        b.encode(torch.randn(1, 1, 48, 64))
    with pytest.raises(PluginError, match="divisible by 32"):
        b.embed(torch.randn(1, 1, 48, 64))
    assert b.out_channels == 1 and create_backbone("monai_swinunetr", in_channels=2).out_channels == 2


def test_sparse_masked_image_modelling_runs_on_swin():
    b = create_backbone("monai_swinunetr", spatial_dims=2, feature_size=12, window_size=4)
    pretext = MaskedImageModelling(b, mask_ratio=0.6, block_size=8, sparse=True)
    out = pretext({"image": torch.randn(2, 1, 64, 64)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert b.network.swinViT.patch_embed.proj.weight.grad is not None
    assert b.network.decoder1.transp_conv.conv.weight.grad is not None

"""SegResNet adapter: its own encode/decode, key parts, sparse masked modelling."""

import pytest
import torch
from monai.networks.nets import SegResNet

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext.generative.mae import MaskedImageModelling

torch.set_num_threads(1)


def test_keys_match_a_downstream_segresnet():
    # e.g. the brats_mri_segmentation bundle's network (4 MRI channels in, 3 regions out, 16 filters)
    b = create_backbone("monai_segresnet", in_channels=4, init_filters=16, blocks_down=[1, 2, 2, 4])
    downstream = SegResNet(in_channels=4, out_channels=3, init_filters=16, blocks_down=[1, 2, 2, 4])
    mine, theirs = b.network.state_dict(), downstream.state_dict()
    assert set(mine) == set(theirs)
    assert {k for k in mine if mine[k].shape != theirs[k].shape} == {"conv_final.2.conv.weight",
                                                                     "conv_final.2.conv.bias"}
    assert b.feature_channels == [16, 32, 64, 128] and b.embed_dim == 128 and b.out_channels == 4


def test_decode_needs_divisible_input():
    b = create_backbone("monai_segresnet", spatial_dims=2)
    feats = b.encode(torch.randn(1, 1, 36, 32))
    assert b.embed(torch.randn(1, 1, 36, 32)).shape == (1, 64)  # embeddings work at any size
    with pytest.raises(PluginError, match="divisible by 8"):
        b.decode(feats)


def test_sparse_masked_image_modelling_runs_on_segresnet():
    b = create_backbone("monai_segresnet", spatial_dims=3)
    pretext = MaskedImageModelling(b, mask_ratio=0.75, block_size=4, sparse=True)
    out = pretext({"image": torch.randn(2, 1, 16, 16, 16)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and b.network.convInit.conv.weight.grad is not None

"""ViT / UNETR adapters: MONAI's MaskedAutoEncoderViT encoder maps onto ``UNETR.vit`` tensor for tensor."""

import pytest
import torch
from monai.networks.nets import UNETR, MaskedAutoEncoderViT

from monai_ssl_plugin.backbones import create_backbone, mae_vit_key_map
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.keymap import remap_keys

torch.set_num_threads(1)

SMALL = {"hidden_size": 192, "mlp_dim": 768, "num_heads": 3}  # the *_small presets (ViT-Tiny width)


@pytest.mark.parametrize("dims", [2, 3])
def test_vit_keys_equal_unetr_vit(dims):
    vit = create_backbone("monai_vit_small", spatial_dims=dims, img_size=32)
    unetr = create_backbone("monai_unetr_small", spatial_dims=dims, img_size=32, out_channels=3)
    u = {k[len("vit."):]: v.shape for k, v in unetr.network.state_dict().items() if k.startswith("vit.")}
    assert u == {k: v.shape for k, v in vit.network.state_dict().items()}
    # and a UNETR built directly, as a segmentation bundle would
    direct = UNETR(in_channels=1, out_channels=3, img_size=32, spatial_dims=dims, **SMALL)
    assert set(direct.state_dict()) == set(unetr.network.state_dict())


@pytest.mark.parametrize("dims", [2, 3])
def test_mae_vit_weights_transfer_into_unetr_vit(dims):
    mae = MaskedAutoEncoderViT(in_channels=1, img_size=32, patch_size=16, num_layers=12, spatial_dims=dims, **SMALL)
    unetr = create_backbone("monai_unetr_small", spatial_dims=dims, img_size=32, out_channels=2)
    src = mae.state_dict()
    mapped = remap_keys(src, mae_vit_key_map(num_layers=12, dst_prefix="vit."))
    target = unetr.network.state_dict()
    vit_keys = {k for k in target if k.startswith("vit.")}
    assert set(mapped) == vit_keys  # every UNETR.vit tensor has a source, and nothing else is sent
    assert all(mapped[k].shape == target[k].shape for k in mapped)
    missing, unexpected = unetr.network.load_state_dict(mapped, strict=False)
    assert not unexpected and set(missing) == set(target) - vit_keys
    after = unetr.network.state_dict()
    assert all(torch.equal(after[k], mapped[k]) for k in mapped)
    # spot checks of the one renamed tensor and a block
    assert torch.equal(after["vit.norm.weight"], src["blocks.12.weight"])
    assert torch.equal(after["vit.blocks.11.attn.qkv.weight"], src["blocks.11.attn.qkv.weight"])
    dropped = set(src) - {k for k in src if k.startswith(("patch_embedding.", "blocks."))}
    assert {"cls_token", "mask_tokens", "decoder_pos_embedding", "decoder_pred.weight"} <= dropped

    vit = create_backbone("monai_vit_small", spatial_dims=dims, img_size=32)  # plain ViT: strict load works
    vit.network.load_state_dict(remap_keys(src, mae_vit_key_map(12, dst_prefix="")), strict=True)


def test_features_follow_unetr():
    b = create_backbone("monai_unetr_small", img_size=32)
    b.eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        feats = b.encode(x)
        out, hidden = b.network.vit(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 32, 32, 32)] + [(192, 2, 2, 2)] * 4
    assert torch.equal(feats[2], b.network.proj_feat(hidden[6])) and torch.equal(feats[-1], b.network.proj_feat(out))
    v = create_backbone("monai_vit_small", img_size=32)
    assert v.skip_layers == [3, 6, 9] and v.stem_stride == [16, 16, 16]
    # a plain ViT carrying UNETR.vit's weights gives UNETR's token maps
    v.network.load_state_dict(remap_keys(b.network.state_dict(), {"vit.": ""}), strict=True)
    v.eval()
    with torch.no_grad():
        assert all(torch.allclose(a, c, atol=1e-6) for a, c in zip(v.encode(x), feats[1:]))
        assert torch.allclose(v.embed(x), b.embed(x), atol=1e-6)


def test_size_errors():
    b = create_backbone("monai_vit_small", img_size=32)
    with pytest.raises(PluginError, match=r"built for inputs of size \[32, 32, 32\]"):
        b.encode(torch.randn(1, 1, 64, 64, 64))
    with pytest.raises(PluginError, match="multiple of the patch size"):
        create_backbone("monai_unetr_small", img_size=40)
    u = create_backbone("monai_unetr_small", img_size=32)
    with pytest.raises(PluginError, match="built for inputs"):
        u.embed(torch.randn(1, 1, 32, 32, 16))

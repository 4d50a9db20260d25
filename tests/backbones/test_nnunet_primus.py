"""nnU-Net's Primus as a backbone: nnssl's key names, the encoder / decoder split, the record round trip."""

import pytest
import torch

from monai_ssl_plugin.backbones import NnUNetPrimusBackbone, backbone_from_record, compatibility, create_backbone


def test_tiny_primus_faces_and_nnssl_key_names():
    b = create_backbone("nnunet_primus_tiny")
    assert isinstance(b, NnUNetPrimusBackbone) and b.family == "nnunet.Primus"
    x = torch.randn(2, 1, 32, 32, 32)
    feats = b.encode(x)
    assert [tuple(f.shape) for f in feats] == [(2, 48, 4, 4, 4)]  # tokens on the 8^3-patch grid
    assert b.decode(feats).shape == x.shape
    assert torch.allclose(b(x), b.network(x), atol=1e-5)  # encode + decode is the network's own forward
    assert b.embed(x).shape == (2, 48)
    assert b.divisor() == [32, 32, 32]
    prefixes = b.key_prefixes()
    assert prefixes == {"stem": "down_projection", "encoder": "eva", "decoder": "up_projection",
                        "in_proj": ["down_projection.proj"], "lpe": "eva.pos_embed"}
    keys = b.network.state_dict().keys()
    assert {"down_projection.proj.weight", "eva.pos_embed", "eva.blocks.1.attn.q_proj.weight",
            "up_projection.decode.2.weight"} <= set(keys)
    assert all(k.split(".")[0] in ("mask_token", "down_projection", "eva", "up_projection") for k in keys)


def test_record_round_trip_rebuilds_the_same_network():
    b = create_backbone("nnunet_primus_tiny", in_channels=2, out_channels=3)
    again = backbone_from_record(b.family, b.constructor)
    assert {k: v.shape for k, v in again.network.state_dict().items()} == \
        {k: v.shape for k, v in b.network.state_dict().items()}
    assert again.network.down_projection.proj.weight.shape == (48, 2, 8, 8, 8)


def test_primus_m_preset_is_nnssls_primus_m():
    with torch.device("meta"):
        b = create_backbone("nnunet_primus_m")
    kw = b.constructor["arch_kwargs"]
    assert (kw["embed_dim"], kw["eva_depth"], kw["eva_numheads"], kw["patch_embed_size"]) == (864, 16, 12, [8, 8, 8])
    assert b.network.eva.pos_embed.shape == (1, 20 ** 3, 864)
    assert compatibility("nnunet_primus_m")["sparse_masking"] is False


def test_input_other_than_input_shape_is_not_computed():
    b = create_backbone("nnunet_primus_tiny")
    with pytest.raises(RuntimeError):
        b(torch.randn(1, 1, 40, 40, 40))


def test_a_reconstruction_pretext_trains_the_whole_primus():
    from monai_ssl_plugin.pretext import create_pretext

    backbone = create_backbone("nnunet_primus_tiny")
    pretext = create_pretext("mae", backbone=backbone)
    out = pretext({"image": torch.randn(2, 1, 32, 32, 32)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    for module in ("down_projection", "eva", "up_projection"):  # gradients reach stem, encoder and decoder
        grads = [p.grad for p in getattr(backbone.network, module).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), module

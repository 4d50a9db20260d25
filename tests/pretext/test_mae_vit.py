"""MAE on a ViT (He et al. 2022) with MONAI's MaskedAutoEncoderViT: masking, exported keys, learning, 2D/3D."""

import pytest
import torch
from monai.networks.nets import UNETR, ViT, MaskedAutoEncoderViT

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.checkpoint import build_record
from monai_ssl_plugin.transfer.keymap import remap_keys
from monai_ssl_plugin.pretext import create_pretext
from monai_ssl_plugin.pretext.generative.mae_vit import mae_vit_backbone, patchify, unpatchify

torch.set_num_threads(1)

TINY = {"hidden_size": 48, "mlp_dim": 96, "num_heads": 2, "num_layers": 4}
DECODER = {"decoder_hidden_size": 48, "decoder_mlp_dim": 64, "decoder_num_layers": 1, "decoder_num_heads": 2}


def test_patchify_roundtrip():
    x = torch.randn(2, 3, 32, 16, 48)
    tokens = patchify(x, [16, 16, 16])
    assert tokens.shape == (2, 6, 16**3 * 3)
    assert torch.equal(unpatchify(tokens, [16, 16, 16], [2, 1, 3], 3), x)
    assert torch.equal(tokens[0, 1], patchify(x[:, :, :16, :, 16:32], [16, 16, 16])[0, 0])  # row-major token order
    assert torch.equal(tokens[0, 3], patchify(x[:, :, 16:32, :, :16], [16, 16, 16])[0, 0])


@pytest.mark.parametrize("dims", [2, 3])
def test_masking_loss_and_learning(dims, train_losses):
    torch.manual_seed(0)
    backbone = mae_vit_backbone(img_size=[32] * dims, spatial_dims=dims, patch_size=8, **TINY)
    pretext = create_pretext("mae_vit", backbone=backbone, **DECODER)
    image = torch.randn(2, 1, *([32] * dims))
    out = pretext({"image": image})
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    keep = pretext.last_outputs["keep_mask"]
    n_tokens = 4**dims
    tokens = keep[(slice(None), 0) + (slice(None, None, 8),) * dims].flatten(1)
    assert (tokens.sum(1) == n_tokens - round(0.75 * n_tokens)).all()  # exactly 75 % of the tokens masked, per sample
    whole = tokens.view(2, 1, *([4] * dims))
    for axis in range(2, 2 + dims):
        whole = whole.repeat_interleave(8, axis)
    assert torch.equal(keep, whole)  # every token is masked or visible as a whole
    prediction = pretext.last_outputs["prediction"]
    masked = 1 - keep
    assert torch.allclose(out["loss"].detach(), ((prediction - image) ** 2 * masked).sum() / masked.sum())
    # one set of weights: the MAE encoder is the backbone's ViT
    assert pretext.model.blocks[0] is backbone.network.blocks[0] and pretext.model.blocks[-1] is backbone.network.norm
    before = backbone.network.blocks[0].attn.qkv.weight.detach().clone()
    losses = train_losses(pretext, image)
    assert losses[-1] < losses[0], losses
    assert not torch.equal(before, backbone.network.blocks[0].attn.qkv.weight)


def test_exported_keys_load_into_vit_and_unetr():
    torch.manual_seed(0)
    backbone = mae_vit_backbone(img_size=32, **TINY, patch_size=16)
    pretext = create_pretext("mae_vit", backbone=backbone, **DECODER)
    state = backbone.network.state_dict()
    assert isinstance(pretext.model, MaskedAutoEncoderViT)
    assert not any(k.startswith(("cls_token", "mask_tokens", "decoder")) for k in state)
    ViT(**backbone.vit_constructor).load_state_dict(state, strict=True)  # plain ViT: every key, nothing else
    unetr = UNETR(in_channels=1, out_channels=2, img_size=32, feature_size=16, hidden_size=48, mlp_dim=96, num_heads=2)
    # UNETR fixes 12 layers: a 12-layer MAE-ViT loads into its vit completely
    full = mae_vit_backbone(img_size=32, hidden_size=48, mlp_dim=96, num_heads=2)
    create_pretext("mae_vit", backbone=full, **DECODER)
    missing, unexpected = unetr.load_state_dict(remap_keys(full.network.state_dict(), {"": "vit."}), strict=False)
    assert not unexpected and not any(k.startswith("vit.") for k in missing)
    # the MAE-ViT encoder's own keys map onto the export through the recorded key map
    mae_keys = set(remap_keys(pretext.model.state_dict(), backbone.key_prefixes()["key_map"]))
    assert mae_keys == set(state)
    record = build_record(backbone, pretext, {"axis_order": "monai"}, [32, 32, 32])
    assert record.backbone_family == "monai.MaskedAutoEncoderViT" and record.pretrained_parts == ["stem", "encoder"]
    assert record.key_prefixes["load_into"] == {"monai.UNETR": "vit.", "monai.ViT": ""}
    assert record.key_prefixes["encoder"] == ["patch_embedding", "blocks", "norm"]
    MaskedAutoEncoderViT(**record.backbone_kwargs)  # the constructor is MaskedAutoEncoderViT's own


def test_unetr_backbone_and_size_check():
    torch.manual_seed(0)
    unetr = create_backbone("monai_unetr_small", spatial_dims=2, img_size=32, hidden_size=48, mlp_dim=96, num_heads=2)
    pretext = create_pretext("mae_vit", backbone=unetr, **DECODER)
    out = pretext({"image": torch.randn(2, 1, 32, 32)})
    out["loss"].backward()
    assert unetr.network.vit.blocks[0].attn.qkv.weight.grad is not None
    assert unetr.network.decoder2.transp_conv.conv.weight.grad is None and pretext.trains_decoder is False
    with pytest.raises(ValueError, match="built for inputs"):
        pretext({"image": torch.randn(2, 1, 48, 48)})
    with pytest.raises(ValueError, match="ViT or UNETR"):
        create_pretext("mae_vit", backbone=create_backbone("nnunet_plain_tiny"))

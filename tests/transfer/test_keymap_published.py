"""The key maps of published SSL checkpoints (transfer/keymap.py): pure renames, heads dropped, nothing else."""

from __future__ import annotations

import torch

from monai_ssl_plugin.transfer.keymap import nnssl_to_nnunet, strip_prefixes, swin_ssl_to_monai, voco_to_monai


def test_swin_ssl_keys_get_monais_root_and_mlp_names():
    t = torch.zeros(1)
    out = swin_ssl_to_monai({"module.patch_embed.proj.weight": t, "module.layers2.0.blocks.1.mlp.fc1.weight": t,
                             "module.layers4.0.downsample.reduction.weight": t, "swin_vit.layers1.0.blocks.0.mlp.fc2.bias": t})
    assert sorted(out) == ["swinViT.layers1.0.blocks.0.mlp.linear2.bias", "swinViT.layers2.0.blocks.1.mlp.linear1.weight",
                           "swinViT.layers4.0.downsample.reduction.weight", "swinViT.patch_embed.proj.weight"]
    assert all(v is t for v in out.values())  # renamed, never copied or changed


def test_voco_keys_lose_wrappers_and_heads():
    t = torch.zeros(1)
    out = voco_to_monai({"module.backbone.swinViT.layers1c.0.layer.conv1.conv.weight": t,
                         "backbone.encoder10.layer.conv1.conv.weight": t, "student.layer1.0.weight": t,
                         "module.teacher.layer3.0.bias": t})
    assert sorted(out) == ["encoder10.layer.conv1.conv.weight", "swinViT.layers1c.0.layer.conv1.conv.weight"]


def test_nnssl_keys_kept_only_where_the_network_has_them():
    t = torch.zeros(1)
    out = nnssl_to_nnunet({"module.encoder.stem.convs.0.conv.weight": t, "projector.layer1.0.weight": t,
                           "rotation_proj_head.weight": t}, {"encoder.stem.convs.0.conv.weight", "decoder.seg_layers.0.weight"})
    assert list(out) == ["encoder.stem.convs.0.conv.weight"]


def test_strip_prefixes_handles_nesting_in_any_order():
    assert list(strip_prefixes({"backbone.module.backbone.x": 0}, ("module.", "backbone."))) == ["x"]

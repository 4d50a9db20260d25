"""The shared face of every registered MONAI backbone, in 2D and 3D (tiny sizes, CPU)."""

import json
import math

import pytest
import torch

from monai_ssl_plugin.backbones import (backbone_from_record, compatibility, compatibility_table, create_backbone,
                                       list_backbones)
from monai_ssl_plugin.errors import PluginError

torch.set_num_threads(1)

# name -> (small kwargs that keep the test fast, input side per dims)
TINY = {
    "monai_resnet10": ({}, {2: (32, 32), 3: (32, 32, 32)}),
    "monai_resnet18": ({}, {2: (32, 32), 3: (16, 16, 16)}),
    "monai_resnet50": ({}, {2: (32, 32), 3: (16, 16, 16)}),
    "monai_swinunetr": ({"feature_size": 12, "window_size": 4}, {2: (64, 64), 3: (32, 32, 64)}),
    "monai_unetr": ({"hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "img_size": 32}, {2: (32, 32), 3: (32, 32, 32)}),
    "monai_unetr_small": ({"img_size": 32}, {2: (32, 32), 3: (32, 32, 32)}),
    "monai_vit": ({"hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "img_size": 32}, {2: (32, 32), 3: (32, 32, 32)}),
    "monai_vit_small": ({"img_size": 32}, {2: (32, 32), 3: (32, 32, 32)}),
    "monai_segresnet": ({}, {2: (32, 32), 3: (16, 16, 16)}),
    "monai_unet": ({"channels": [8, 16, 32], "strides": [2, 2]}, {2: (16, 16), 3: (16, 16, 16)}),
    "monai_dynunet": ({"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "upsample_kernel_size": [2, 2],
                       "filters": [8, 16, 32]}, {2: (16, 16), 3: (16, 16, 16)}),
    "monai_densenet121": ({"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]},
                          {2: (32, 32), 3: (32, 32, 32)}),
}
CASES = [(name, dims) for name in TINY for dims in (2, 3)]


def test_every_monai_backbone_is_covered():
    assert {n for n in list_backbones() if n.startswith("monai_")} == set(TINY)


def _build(name, dims):
    kwargs, sizes = TINY[name]
    return create_backbone(name, spatial_dims=dims, **kwargs), sizes[dims]


@pytest.mark.parametrize("name,dims", CASES)
def test_face(name, dims):
    b, size = _build(name, dims)
    b.eval()  # batch norm running stats: forward and adapter agree exactly
    x = torch.randn(2, 1, *size)
    feats = b.encode(x)
    assert all(f.ndim == 2 + dims and f.shape[0] == 2 for f in feats)
    assert [f.shape[1] for f in feats] == b.feature_channels
    voxels = [math.prod(f.shape[2:]) for f in feats]
    assert voxels == sorted(voxels, reverse=True) and voxels[-1] < math.prod(size)  # shallow -> deep
    assert b.embed(x).shape == (2, b.embed_dim)
    assert b.spatial_dims == dims and b.in_channels == 1
    if b.has_decoder:
        out = b.decode(feats)
        assert out.shape == (2, b.out_channels, *size) and b.out_channels == 1  # reconstruction default
        with torch.no_grad():
            assert torch.allclose(b(x), b.network(x), atol=1e-5)  # decode(encode(x)) is the network's forward
    else:
        with pytest.raises(NotImplementedError):
            b.decode(feats)


@pytest.mark.parametrize("name,dims", CASES)
def test_key_prefixes_exist(name, dims):
    b, _ = _build(name, dims)
    keys = list(b.network.state_dict())
    prefixes = b.key_prefixes()
    assert {"stem", "encoder", "decoder", "in_proj"} <= set(prefixes)
    assert (prefixes["decoder"] is not None) == b.has_decoder

    def matches(p):
        return [k for k in keys if k.startswith(p.rstrip(".") + ".")]

    for part, value in prefixes.items():
        if value is None or part == "in_proj":
            continue
        for p in [value] if isinstance(value, str) else value:
            assert matches(p), f"{part} prefix {p!r} matches no key"
    state = b.network.state_dict()
    assert prefixes["in_proj"] and all(state[k].shape[1] == b.in_channels for k in prefixes["in_proj"])
    # every key belongs to the stem/encoder, the decoder or the head: nothing is left unaccounted for
    parts = [prefixes["encoder"], prefixes["decoder"], prefixes.get("head")]
    covered = {k for v in parts if v for p in ([v] if isinstance(v, str) else v) for k in matches(p)}
    # DynUNet also lists its modules under skip_layers.*: aliases of tensors that are covered already
    ptrs = {state[k].data_ptr() for k in covered if state[k].numel()}
    aliases = {k for k in set(keys) - covered if state[k].numel() and state[k].data_ptr() in ptrs}
    assert covered | aliases == set(keys)


@pytest.mark.parametrize("name,dims", CASES)
def test_constructor_rebuilds_identical_network(name, dims):
    b, _ = _build(name, dims)
    ctor = json.loads(json.dumps(b.constructor))  # what the checkpoint record stores
    again = backbone_from_record(b.family, ctor)
    mine, theirs = b.network.state_dict(), again.network.state_dict()
    assert list(mine) == list(theirs) and all(mine[k].shape == theirs[k].shape for k in mine)
    # the constructor is the MONAI class's own kwargs: a downstream user rebuilds without the plugin
    direct = type(b.network)(**ctor)
    assert list(direct.state_dict()) == list(mine)


@pytest.mark.parametrize("name,dims", CASES)
def test_compatibility_row_matches_adapter(name, dims):
    b, size = _build(name, dims)
    row = compatibility(name)
    assert row["family"] == b.family and row["dense"] == b.has_decoder and dims in row["dims"] and row["global"]
    stages = b.encoder_stages()
    assert bool(stages) == row["sparse_masking"]
    seen = []
    hooks = [s.register_forward_hook(lambda m, i, o: seen.append(o.shape)) for s in stages]
    b.eval()
    with torch.no_grad():
        b.encode(torch.randn(1, 1, *size))
    for h in hooks:
        h.remove()
    # SparK's re-masking multiplies each stage output by a mask resized to output.shape[2:]
    assert len(seen) == len(stages) and all(len(s) == 2 + dims for s in seen)


def test_compatibility_table_and_errors():
    table = compatibility_table()
    assert set(table) == set(list_backbones())
    assert table["nnunet_plain_tiny"]["dense"] and table["monai_resnet50"]["light_decoder"]
    assert compatibility("monai_vit_small") == {"family": "monai.ViT", "global": True, "dense": False, "dims": [2, 3],
                                                "sparse_masking": False, "light_decoder": True,
                                                "input": "exactly img_size (multiple of 16)"}
    with pytest.raises(PluginError, match="Unknown backbone"):
        compatibility("resnet9000")
    with pytest.raises(PluginError, match="Unknown backbone family"):
        backbone_from_record("torchvision.ResNet", {})
    with pytest.raises(PluginError, match="spatial_dims"):
        create_backbone("monai_segresnet", spatial_dims=1)
    with pytest.raises(PluginError, match="plain values"):
        create_backbone("monai_segresnet", act=torch.nn.ReLU)
    with pytest.raises(PluginError, match="takes no argument img_size.*any multiple of 32"):
        create_backbone("monai_swinunetr", img_size=96)


def test_record_round_trip(tmp_path):
    from monai_ssl_plugin.checkpoint import atomic_save, build_record, safe_load
    from monai_ssl_plugin.pretext.generative.mae import MaskedImageModelling

    b = create_backbone("monai_segresnet", spatial_dims=2)
    record = build_record(b, MaskedImageModelling(b, block_size=4), {"axis_order": "monai", "normalization": ["z"]},
                          [32, 32])
    plain = json.loads(json.dumps(record.to_dict(), default=str))  # as engine.handlers.checkpoint stores it
    atomic_save({"network": b.network.state_dict(), "record": plain}, tmp_path / "ckpt.pt")
    loaded = safe_load(tmp_path / "ckpt.pt")  # weights_only=True: the record is plain data
    r = loaded["record"]
    assert r["backbone_family"] == "monai.SegResNet" and r["pretrained_parts"] == ["stem", "encoder", "decoder"]
    again = backbone_from_record(r["backbone_family"], r["backbone_kwargs"])
    again.network.load_state_dict(loaded["network"], strict=True)

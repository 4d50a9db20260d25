"""The one reader: every layout the plugin reads gives the same type, with the record where there is one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_ssl_plugin.checkpoint import atomic_save
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.nnunet import export_nnunet
from monai_ssl_plugin.transfer.formats import PretrainedWeights, read_weights

from nnunet_helpers import tiny_resenc_kwargs, write_checkpoint, write_nnssl_checkpoint

STEM = "encoder.stages.0.0.convs.0.conv.weight"


def test_every_layout_reads_into_one_type(tmp_path: Path):
    ckpt = write_checkpoint(tmp_path / "final.pt")
    export = export_nnunet(ckpt, tmp_path / "export.pth")
    nnssl, _ = write_nnssl_checkpoint(tmp_path / "nnssl.pth", "ResidualEncoderUNet", tiny_resenc_kwargs())
    raw = torch.load(ckpt, weights_only=True)
    atomic_save({"network_weights": raw["network"]}, tmp_path / "nnunet.pth")  # nnU-Net's own layout: no record
    bundle = tmp_path / "bundle"
    atomic_save(raw["network"], bundle / "models" / "model.pt")
    (bundle / "configs").mkdir()
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"ssl_record": raw["record"]}))
    read = {
        "checkpoint": read_weights(ckpt), "nnunet_export": read_weights(export), "nnssl": read_weights(nnssl),
        "nnunet": read_weights(tmp_path / "nnunet.pth", accept_bare=False), "bundle": read_weights(bundle),
        "state_dict": read_weights({"state_dict": raw["network"]}, backbone_family="nnunet.PlainConvUNet", log=None),
    }
    for kind, weights in read.items():
        assert isinstance(weights, PretrainedWeights) and weights.kind == kind, kind
        assert weights.state and all(isinstance(v, torch.Tensor) for v in weights.state.values())
    assert torch.equal(read["checkpoint"].state[STEM], read["nnunet_export"].state[STEM])
    assert torch.equal(read["checkpoint"].state[STEM], read["bundle"].state[STEM])
    assert read["bundle"].record == read["checkpoint"].record  # from configs/metadata.json
    assert read["nnssl"].from_nnssl and read["nnssl"].record.pretrained_parts == ["stem", "encoder"]
    assert read["nnunet"].record is None and read["state_dict"].record is None
    assert read["state_dict"].family == "nnunet.PlainConvUNet" and read["state_dict"].origin == "<in-memory checkpoint>"


def test_wrapper_prefixes_are_stripped_and_statements_checked(tmp_path: Path):
    raw = torch.load(write_checkpoint(tmp_path / "final.pt"), weights_only=True)
    wrapped = {"network": {"module._orig_mod." + k: v for k, v in raw["network"].items()}, "record": raw["record"]}
    weights = read_weights(wrapped)
    assert STEM in weights.state and not [k for k in weights.state if k.startswith(("module.", "_orig_mod."))]
    with pytest.raises(PluginError, match="records 1 input channel\\(s\\), but 2 were stated"):
        read_weights(wrapped, in_channels=2)
    with pytest.raises(PluginError, match="records axis order 'nnunet', but 'monai' was stated"):
        read_weights(wrapped, axis_order="monai")


def test_what_each_reader_refuses(tmp_path: Path):
    raw = torch.load(write_checkpoint(tmp_path / "final.pt"), weights_only=True)
    bare = tmp_path / "bare.pt"
    atomic_save(raw["network"], bare)
    with pytest.raises(PluginError, match="bare state dict without a pretraining record"):
        read_weights(bare)  # nothing stated: nothing can be checked
    with pytest.raises(PluginError, match="holds no network weights"):
        read_weights(bare, accept_bare=False)  # nnU-Net consumers read only layouts that say what they are
    atomic_save({"network_weights": raw["network"]}, tmp_path / "nnunet.pth")
    with pytest.raises(PluginError, match="carries no pretraining record"):
        read_weights(tmp_path / "nnunet.pth", require_record=True, accept_bare=False)
    with pytest.raises(PluginError, match="unreadable record"):
        read_weights({"network": raw["network"], "record": {"backbone_family": "x"}})
    with pytest.raises(PluginError, match="directory without models/model.pt"):
        read_weights(tmp_path)

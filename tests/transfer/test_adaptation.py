"""Shape adaptations for load_weights(adapt=...) and the exact (x, y, z) -> (z, y, x) transposition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer import load_weights
from monai_ssl_plugin.transfer.adaptation import (ADAPTATIONS, ShapeAdapter, adapt_kernel, parse_adaptations,
                                                  repeat_input_channels)
from monai_ssl_plugin.transfer.axes import record_to_nnunet_order, reverse_arch_axes
from monai_ssl_plugin.transfer.compare import check_transfer, is_seg_layer, part_selector
from monai_ssl_plugin.transfer.formats import read_weights

from nnunet_helpers import tiny_plans, write_checkpoint

IN_PROJ = ("encoder.stages.0.0.convs.0.conv", "encoder.stages.0.0.convs.0.all_modules.0")


def test_parse_adaptations():
    assert parse_adaptations(None) == ("channels",)
    assert parse_adaptations("all") == ADAPTATIONS and parse_adaptations("none") == ()
    assert parse_adaptations("kernels, channels") == ("channels", "kernels")  # canonical order
    assert parse_adaptations(["stages"]) == ("stages",)
    with pytest.raises(PluginError, match=r"Unknown adaptation\(s\) \['kernel'\]"):
        parse_adaptations("kernel")


def test_repeated_stem_gives_the_pretrained_response_on_equal_channels():
    torch.manual_seed(0)
    w = torch.randn(8, 1, 3, 3, 3)
    x = torch.randn(2, 1, 10, 10, 10)
    for n in (2, 3, 4):
        adapted = repeat_input_channels(w, n)
        assert adapted.shape == (8, n, 3, 3, 3)
        assert torch.allclose(F.conv3d(x.repeat(1, n, 1, 1, 1), adapted), F.conv3d(x, w), atol=1e-5)
    two = torch.randn(8, 2, 3, 3, 3)
    assert repeat_input_channels(two, 4).shape == (8, 4, 3, 3, 3)
    assert repeat_input_channels(two, 3) is None  # not a multiple
    assert repeat_input_channels(two, 1) is None  # fewer channels: never


def test_kernel_adaptation_averages_collapsed_axes_and_pads_grown_ones_exactly():
    torch.manual_seed(0)
    w = torch.randn(4, 2, 3, 3, 3)
    flat = adapt_kernel(w, (1, 3, 3))
    assert flat.shape == (4, 2, 1, 3, 3) and torch.allclose(flat, w.mean(dim=2, keepdim=True))
    # growing 1x3x3 -> 3x3x3 (zeros around the centre) computes the same function with nnU-Net's padding
    small = torch.randn(4, 2, 1, 3, 3)
    grown = adapt_kernel(small, (3, 3, 3))
    x = torch.randn(1, 2, 7, 8, 9)
    assert torch.allclose(F.conv3d(x, grown, padding=1), F.conv3d(x, small, padding=(0, 1, 1)), atol=1e-5)
    assert adapt_kernel(w, (2, 3, 3)) is None  # cropping / even sizes: refused
    assert adapt_kernel(w, (3, 3)) is None


def test_adapter_only_repeats_the_stem_and_says_why_it_refuses():
    adapter = ShapeAdapter(("channels",), IN_PROJ)
    stem = torch.randn(8, 1, 3, 3, 3)
    out = adapter("encoder.stages.0.0.convs.0.conv.weight", stem, torch.empty(8, 2, 3, 3, 3))
    assert out.shape == (8, 2, 3, 3, 3)
    assert adapter.notes["encoder.stages.0.0.convs.0.conv.weight"] == "input channels 1 -> 2 (repeated x2, divided by 2)"
    assert adapter("decoder.encoder.stages.0.0.convs.0.conv.weight", stem, torch.empty(8, 2, 3, 3, 3)) is not None
    deeper = "encoder.stages.1.0.convs.0.conv.weight"
    assert adapter(deeper, torch.randn(16, 8, 3, 3, 3), torch.empty(16, 16, 3, 3, 3)) is None
    assert "outside the stem's input layer" in adapter.refusals[deeper]
    assert adapter(deeper, torch.randn(16, 8, 3, 3, 3), torch.empty(16, 8, 1, 3, 3)) is None
    assert "adaptation 'kernels' not allowed" in adapter.refusals[deeper]
    assert adapter(deeper, torch.randn(16, 8, 3, 3, 3), torch.empty(32, 8, 3, 3, 3)) is None  # features: never
    both = ShapeAdapter(("channels", "kernels"), IN_PROJ)
    out = both("encoder.stages.0.0.convs.0.conv.weight", stem, torch.empty(8, 2, 1, 3, 3))
    assert out.shape == (8, 2, 1, 3, 3)
    assert "kernel 3x3x3 -> 1x3x3 (averaged)" in both.notes["encoder.stages.0.0.convs.0.conv.weight"]


def _net(plans: dict, channels: int = 1) -> torch.nn.Module:
    return NnUNetBackbone.from_plans(plans, in_channels=channels).network


def test_load_weights_reports_each_adaptation():
    torch.manual_seed(0)
    src, dst = _net(tiny_plans()), _net(tiny_plans(kernel=(1, 3, 3)), channels=2)
    adapter = ShapeAdapter(("channels", "kernels"), IN_PROJ)
    report = load_weights(dst, src.state_dict(), exclude=is_seg_layer, adapt=adapter, strict_shapes=True, log=None)
    assert report.loaded_fraction == 1.0 and not report.skipped_shape
    convs = [k for k in report.adapted if k.endswith("conv.weight")]
    assert convs and set(report.adapted) == set(adapter.notes)
    key = "encoder.stages.1.0.convs.0.conv.weight"
    assert torch.allclose(dst.state_dict()[key], src.state_dict()[key].mean(dim=2, keepdim=True))
    stem = "encoder.stages.0.0.convs.0.conv.weight"
    assert torch.allclose(dst.state_dict()[stem], src.state_dict()[stem].mean(dim=2, keepdim=True).repeat(1, 2, 1, 1, 1) / 2)


def test_stage_differences_are_missing_or_unexpected_never_silent():
    deep, shallow = _net(tiny_plans(features=(8, 16, 32, 64))), _net(tiny_plans())
    encoder = part_selector(["encoder.stages.0", "encoder.stages"])
    strict = check_transfer(deep.state_dict(), shallow.state_dict(), encoder)
    assert strict.problem.startswith("encoder.stages.3.0.convs.0.conv.weight (encoder stage 3) is in the checkpoint")
    assert strict.first_refused_kind == "stages"
    loose = check_transfer(deep.state_dict(), shallow.state_dict(), encoder, allow_stage_differences=True)
    assert loose.problem is None and not loose.missing
    assert loose.unexpected and all(".stages.3." in k for k in loose.unexpected)
    grow = check_transfer(shallow.state_dict(), deep.state_dict(), encoder, allow_stage_differences=True)
    assert grow.problem is None and grow.missing and all(".stages.3." in k for k in grow.missing)
    # the loader then refuses below the share asked for (stage 3 holds most of the encoder's values)
    with pytest.raises(PluginError, match=r"only \d+\.\d% of the targeted weights loaded \(need 50\.0%\)"):
        load_weights(deep, shallow.state_dict(), include=encoder, exclude=is_seg_layer, min_fraction=0.5, log=None)
    report = load_weights(deep, shallow.state_dict(), include=encoder, exclude=is_seg_layer, min_fraction=0.1, log=None)
    assert report.missing and 0.1 < report.loaded_fraction < 0.5


def _anisotropic_plans() -> dict:
    """(x, y, z)-ordered tiny plans with kernels and strides that differ per axis."""
    plans = tiny_plans()
    kw = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    kw["kernel_sizes"] = [[3, 3, 1], [3, 3, 3], [3, 1, 3]]
    kw["strides"] = [[1, 1, 1], [2, 2, 1], [2, 1, 2]]
    return plans


def test_monai_ordered_checkpoint_is_transposed_exactly(tmp_path: Path):
    """The transposed network on (z, y, x) volumes computes the pretrained network's output, transposed."""
    torch.manual_seed(0)
    monai_plans = _anisotropic_plans()
    source = NnUNetBackbone.from_plans(monai_plans)
    ckpt = write_checkpoint(tmp_path / "monai.pt", source, axis_order="monai", spacing=[0.8, 0.9, 2.5],
                            patch_size=(16, 12, 8))
    weights = read_weights(ckpt, require_record=True, to_nnunet_order=True)
    rec = weights.record
    assert rec.axis_order == "nnunet" and rec.data["axis_order_converted_from"] == "monai"
    assert rec.spacing == [2.5, 0.9, 0.8] and rec.patch_size == [8, 12, 16]
    arch = rec.backbone_kwargs["arch_kwargs"]
    assert arch["kernel_sizes"] == [[1, 3, 3], [3, 3, 3], [3, 1, 3]] and arch["strides"] == [[1, 1, 1], [1, 2, 2],
                                                                                                [2, 1, 2]]
    assert weights.axis_transposed and all(weights.state[k].ndim == 5 for k in weights.axis_transposed)

    target = NnUNetBackbone(rec.backbone_kwargs["arch_class_name"], arch, rec.backbone_kwargs["arch_kwargs_req_import"],
                            1).network
    report = load_weights(target, weights.state, strict_shapes=True, log=None)
    assert report.loaded_fraction == 1.0
    source.network.eval(), target.eval()
    x = torch.randn(2, 1, 16, 12, 8)  # (x, y, z)
    with torch.no_grad():
        expected = source.network(x)
        got = target(x.permute(0, 1, 4, 3, 2))  # the same volume in nnU-Net's (z, y, x)
    assert torch.allclose(got, expected.permute(0, 1, 4, 3, 2), atol=1e-5)


def test_axis_transposition_refuses_what_it_cannot_make_exact():
    assert reverse_arch_axes({"kernel_sizes": [[1, 3, 3]], "strides": [[1, 2, 2]], "n_stages": 1}, 3) == \
        {"kernel_sizes": [[3, 3, 1]], "strides": [[2, 2, 1]], "n_stages": 1}
    with pytest.raises(PluginError, match=r"monai\.SwinUNETR backbone pretrained on \(x, y, z\) volumes cannot be made "
                                          r"exact"):
        record_to_nnunet_order({"axis_order": "monai", "backbone_family": "monai.SwinUNETR", "backbone_kwargs": {}})
    with pytest.raises(PluginError, match="does not give the kernel sizes and strides"):
        record_to_nnunet_order({"axis_order": "monai", "backbone_family": "nnunet.PlainConvUNet",
                                "backbone_kwargs": {"arch_kwargs": {"n_stages": 3}}})
    same = {"axis_order": "nnunet", "spacing": [1, 2, 3]}
    assert record_to_nnunet_order(same) == json.loads(json.dumps(same))

"""The one-command overlay on zoo-shaped bundles of every consumer family, with its defaults.

SSL weights are made the way pretraining reads the consumer (``read_like``: the bundle's own reading
transforms and network), then ``write_overlay(ckpt, bundle)`` runs with no option, the merged config
builds the trainer, and every tensor of the network is checked: the targeted sub-module holds the SSL
tensors (transposed when the checkpoint is in nnU-Net's axis order), everything else is exactly the
bundle's own initialisation.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from zoo_shaped import FAMILIES, TARGETS, write_zoo_bundle

from monai_ssl_plugin.checkpoint import atomic_save, build_record
from monai_ssl_plugin.data.consumer import ConsumerReadSource
from monai_ssl_plugin.engine.network import consumer_backbone
from monai_ssl_plugin.monai_bundles import write_overlay
from monai_ssl_plugin.monai_bundles.demo_data import make_lesion_dataset
from monai_ssl_plugin.monai_bundles.targets import resolve_target
from monai_ssl_plugin.transfer.axes import transpose_state


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_lesion_dataset(tmp_path_factory.mktemp("lesions"), n_cases=4, n_val=1, size=32))


def ssl_checkpoint(path: Path, bundle: Path, data: str, axis_order: str = "monai") -> tuple[Path, dict, str]:
    """(checkpoint, its network state, family): the consumer's network read the consumer's way, random weights."""
    info = ConsumerReadSource(Path(data) / "imagesTr", bundle).info
    backbone = consumer_backbone(info["consumer_network"], info["in_channels"])
    torch.manual_seed(7)
    with torch.no_grad():
        for p in backbone.network.parameters():
            p.normal_(0.0, 0.1)  # far from any default initialisation
    record = build_record(backbone, SimpleNamespace(), {**info, "axis_order": axis_order}, [32, 32, 32], steps=1)
    state = backbone.network.state_dict()
    atomic_save({"network": state, "record": record.to_dict()}, path)
    return path, state, backbone.family


def built(bundle: Path, overlay: Path | None, monkeypatch) -> torch.nn.Module:
    """The bundle's network after its trainer is built (seeded), with or without the overlay merged."""
    from monai.bundle import ConfigParser

    monkeypatch.chdir(bundle)
    monkeypatch.syspath_prepend(str(bundle))
    train = next(p for p in (bundle / "configs").iterdir() if p.stem == "train")
    parser = ConfigParser()
    parser.read_config([str(train)] + ([str(overlay)] if overlay else []))
    torch.manual_seed(0)
    network = parser.get_parsed_content("network")
    parser.get_parsed_content("train#trainer" if "train#trainer" in parser else "trainer")  # attaches the handler
    return network


def check_tensors(net: torch.nn.Module, ref: torch.nn.Module, expected: dict, target: str) -> int:
    """Targeted keys hold ``expected`` (consumer key -> tensor); every other tensor equals ``ref``'s."""
    tgt = resolve_target(net, target)
    ref_state, loaded = ref.state_dict(), 0
    for key, value in net.state_dict().items():
        if tgt.includes(key) and key in expected:
            assert torch.equal(value, expected[key].to(value.dtype)), key
            loaded += int(value.is_floating_point() and not torch.equal(value, ref_state[key]))
        else:
            assert torch.equal(value, ref_state[key]), f"{key} changed but is not targeted"
    return loaded


def expected_tensors(family_key: str, state: dict, family: str, axis_order: str, record_kwargs: dict) -> dict:
    if axis_order == "nnunet":
        state, _ = transpose_state(state, family, (2, 1, 0), record_kwargs=record_kwargs)
    prefix = "feature_extractor.body." if family_key == "retinanet" else ""
    return {prefix + k: v for k, v in state.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_overlay_by_default_loads_exactly_the_ssl_tensors(tmp_path, data, monkeypatch, family):
    bundle = write_zoo_bundle(tmp_path / family, family, data)
    ckpt, state, ssl_family = ssl_checkpoint(tmp_path / "final.pt", bundle, data)
    lines: list[str] = []
    plan = write_overlay(ckpt, bundle, log=lines.append)  # the defaults, as `monai-ssl monai-overlay` runs
    assert plan.checked and plan.target == TARGETS[family]
    assert not [m for m in lines if "WARNING" in m or "transposed" in m], lines  # matched by construction
    assert any("SSL init" in m and "100.0%" in m for m in lines), lines
    net = built(bundle, plan.path, monkeypatch)
    ref = built(bundle, None, monkeypatch)
    assert check_tensors(net, ref, expected_tensors(family, state, ssl_family, "monai", {}), plan.target) > 0


@pytest.mark.parametrize("family", ["swinunetr", "unet", "retinanet"])
def test_overlay_transposes_an_nnunet_ordered_checkpoint_by_default(tmp_path, data, monkeypatch, family):
    bundle = write_zoo_bundle(tmp_path / family, family, data)
    ckpt, state, ssl_family = ssl_checkpoint(tmp_path / "final.pt", bundle, data, axis_order="nnunet")
    lines: list[str] = []
    plan = write_overlay(ckpt, bundle, log=lines.append)
    assert any("transposed" in m and "(z, y, x) to (x, y, z)" in m for m in lines), lines
    net, ref = built(bundle, plan.path, monkeypatch), built(bundle, None, monkeypatch)
    kwargs = torch.load(ckpt, weights_only=True)["record"]["backbone_kwargs"]
    expected = expected_tensors(family, state, ssl_family, "nnunet", kwargs)
    assert check_tensors(net, ref, expected, plan.target) > 0
    some_kernel = next(k for k, v in state.items() if v.ndim == 5 and len(set(v.shape[2:])) == 1 and v.shape[2] > 1)
    key = ("feature_extractor.body." if family == "retinanet" else "") + some_kernel
    assert not torch.equal(net.state_dict()[key], state[some_kernel])  # really transposed, not copied


def test_flags_mean_what_they_say(tmp_path, data, monkeypatch):
    import yaml

    bundle = write_zoo_bundle(tmp_path / "unet", "unet", data)
    ckpt, _, _ = ssl_checkpoint(tmp_path / "final.pt", bundle, data)
    plan = write_overlay(ckpt, bundle, linear_probe="false", check="false", log=None)  # as fire passes them
    overlay = yaml.safe_load(plan.path.read_text())
    assert overlay["ssl_init"]["linear_probe"] is False and not plan.checked
    net = built(bundle, plan.path, monkeypatch)
    assert all(p.requires_grad for p in net.parameters())  # nothing frozen
    plan = write_overlay(ckpt, bundle, linear_probe="true", log=None)
    assert yaml.safe_load(plan.path.read_text())["ssl_init"]["linear_probe"] is True and plan.checked
    assert not all(p.requires_grad for p in built(bundle, plan.path, monkeypatch).parameters())


def test_template_layout_extends_the_top_level_handlers(tmp_path, data):
    import yaml

    bundle = write_zoo_bundle(tmp_path / "template", "template", data)
    ckpt, _, _ = ssl_checkpoint(tmp_path / "final.pt", bundle, data)
    plan = write_overlay(ckpt, bundle, log=None)
    assert plan.handlers_key == "+handlers" and plan.train_config.name == "train.yaml"
    assert yaml.safe_load(plan.path.read_text())["+handlers"] == ["@ssl_init#handler"]

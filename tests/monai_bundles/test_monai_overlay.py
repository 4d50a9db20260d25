"""The overlay: decided from a bundle's network definition, merged after the unchanged train config,
loads the SSL weights into the right sub-module when the trainer is built."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from monai_ssl_helpers import (ZOO_DETECTION_TRAINER, densenet, equal_under, resnet, save_checkpoint, swinunetr, unetr,
                               vit, write_bundle, zoo_classification_config, zoo_detection_config,
                               zoo_segmentation_config)

from monai_ssl_plugin.bundles import BUNDLES_DIR
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.monai_bundles import monai_overlay, write_overlay
from monai_ssl_plugin.monai_bundles.demo_data import make_lesion_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_lesion_dataset(tmp_path_factory.mktemp("lesions"), n_cases=6, size=32))


def _merged(bundle: Path, plan, monkeypatch, overrides=None):
    """What `monai.bundle run --config_file "['configs/train.json','configs/ssl_init.yaml']"` parses."""
    from monai.bundle import ConfigParser

    monkeypatch.chdir(bundle)
    monkeypatch.syspath_prepend(str(bundle))  # `scripts.` targets, as run() does
    parser = ConfigParser()
    parser.read_config([str(plan.train_config), str(plan.path)])
    parser.update(overrides or {})
    return parser


def test_detection_zoo_config(tmp_path, data, monkeypatch):
    ssl = resnet(conv1_t_size=[7, 7, 7], conv1_t_stride=[2, 2, 1], seed=1)
    ckpt = save_checkpoint(tmp_path / "final.pt", ssl, "monai.ResNet")
    bundle = write_bundle(tmp_path / "lung_nodule_ct_detection", zoo_detection_config(data),
                          scripts={"scripts/__init__.py": "", "scripts/trainer.py": ZOO_DETECTION_TRAINER})
    plan = write_overlay(ckpt, bundle, pretrained_lr_mult=0.1, log=None)
    assert (plan.network_id, plan.network_class, plan.target) == ("network_def", "RetinaNet", "feature_extractor.body")
    assert plan.handlers_key == "+train#handlers" and plan.optimizer_id == "optimizer" and plan.checked
    assert plan.normalization == "NormalizeIntensityd"
    overlay = yaml.safe_load(plan.path.read_text())
    assert overlay["+train#handlers"] == ["@ssl_init#handler"]
    assert overlay["optimizer#params"]["network"] == "$@detector.network"  # the expression the bundle used
    assert "configs/train.json','configs/ssl_init.yaml" in plan.command
    parser = _merged(bundle, plan, monkeypatch)
    trainer = parser.get_parsed_content("train#trainer")
    net = parser.get_parsed_content("network")
    equal_under(net, ssl.state_dict(), "feature_extractor.body.")
    assert trainer.state.ssl_init["loaded_fraction"] == 1.0
    opt = parser.get_parsed_content("optimizer")
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001, 0.01])
    assert len(parser.get_parsed_content("train#handlers")) == 3  # the bundle's two + ours, appended


@pytest.mark.parametrize("arch", ["densenet", "resnet"])
def test_classification_zoo_config(tmp_path, data, monkeypatch, arch):
    if arch == "densenet":
        ssl, family, net_def, prefix = densenet(seed=1), "monai.DenseNet121", None, "features."
    else:
        ssl, family, prefix = resnet(num_classes=9, seed=1), "monai.ResNet", "layer"
        net_def = {"_target_": "monai.networks.nets.ResNet", "block": "basic", "layers": [1, 1, 1, 1],
                   "block_inplanes": [8, 16, 32, 64], "spatial_dims": 3, "n_input_channels": 1, "num_classes": 2}
    ckpt = save_checkpoint(tmp_path / "final.pt", ssl, family)
    bundle = write_bundle(tmp_path / "cls", zoo_classification_config(data, net_def))
    plan = write_overlay(ckpt, bundle, freeze_epochs=1, log=None)
    assert plan.target == ("features" if arch == "densenet" else "auto")
    parser = _merged(bundle, plan, monkeypatch)
    parser.get_parsed_content("train#trainer")
    net = parser.get_parsed_content("network")
    equal_under(net, ssl.state_dict(), prefix, prefix)
    assert not next(iter(net.parameters())).requires_grad  # frozen for the first epoch


@pytest.mark.parametrize("arch", ["swinunetr", "unetr"])
def test_segmentation_zoo_config(tmp_path, data, monkeypatch, arch):
    if arch == "swinunetr":
        ssl, family, prefix = swinunetr(seed=1), "monai.SwinUNETR", ("swinViT.", "swinViT.")
        net_def = {"_target_": "SwinUNETR", "in_channels": 1, "out_channels": 2, "feature_size": 12,
                   "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "norm_name": "batch"}
    else:
        ssl, family, prefix = vit(seed=1), "monai.ViT", ("vit.", "")
        net_def = {"_target_": "UNETR", "in_channels": 1, "out_channels": 2, "img_size": [32, 32, 32], "feature_size": 8,
                   "hidden_size": 48, "mlp_dim": 96, "num_heads": 4}
    ckpt = save_checkpoint(tmp_path / "final.pt", ssl, family)
    bundle = write_bundle(tmp_path / "seg", zoo_segmentation_config(data, net_def))
    plan = write_overlay(ckpt, bundle, log=None)
    assert plan.target == {"swinunetr": "swinViT", "unetr": "vit"}[arch]
    parser = _merged(bundle, plan, monkeypatch)
    trainer = parser.get_parsed_content("train#trainer")
    equal_under(parser.get_parsed_content("network"), ssl.state_dict(), *prefix)
    trainer.run()  # one training step from the overlay-initialised network (2 cases, batch 2)
    assert trainer.state.iteration == 1 and torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))


def test_overlay_refusals(tmp_path, data):
    ckpt = save_checkpoint(tmp_path / "r.pt", resnet(seed=1), "monai.ResNet")
    custom = zoo_segmentation_config(data, {"_target_": "my_pkg.nets.MyNet"})
    with pytest.raises(PluginError, match=r"Cannot tell which sub-module of `network_def` \(MyNet\)"):
        write_overlay(ckpt, write_bundle(tmp_path / "custom", custom), log=None)
    det = zoo_detection_config(data)
    det["feature_extractor"] = "$my_pkg.make_extractor()"
    with pytest.raises(PluginError, match="not built with resnet_fpn_feature_extractor"):
        write_overlay(ckpt, write_bundle(tmp_path / "det", det), log=None)
    # the dry run catches a wrong checkpoint before anything is written
    swin = save_checkpoint(tmp_path / "s.pt", swinunetr(seed=1), "monai.SwinUNETR")
    bundle = write_bundle(tmp_path / "det_ok", zoo_detection_config(data))
    with pytest.raises(PluginError, match="cannot initialise feature_extractor.body"):
        write_overlay(swin, bundle, log=None)
    assert not (bundle / "configs" / "ssl_init.yaml").exists()
    # never overwrite a file the command did not write
    (bundle / "configs" / "ssl_init.yaml").write_text("mine: 1\n")
    with pytest.raises(PluginError, match="was not written by this command"):
        write_overlay(save_checkpoint(tmp_path / "r2.pt", resnet(conv1_t_size=[7, 7, 7], seed=1), "monai.ResNet"),
                      bundle, check=False, log=None)
    # normalisation of the bundle's pipeline vs the record
    ct = save_checkpoint(tmp_path / "ct.pt", resnet(conv1_t_size=[7, 7, 7], seed=1), "monai.ResNet",
                         normalization=["CTNormalization"])
    with pytest.raises(PluginError, match="this pipeline uses \\['NormalizeIntensityd'\\]"):
        write_overlay(ct, bundle, overwrite=True, on_normalization_mismatch="refuse", log=None)
    assert write_overlay(ct, bundle, overwrite=True, normalization="any", log=None).checked
    lines = []  # the default loads with a warning that names both normalisations
    assert write_overlay(ct, bundle, overwrite=True, log=lines.append).checked
    assert any("WARNING" in m and "this pipeline uses ['NormalizeIntensityd']" in m for m in lines)


def test_cli_function_text(tmp_path, data):
    ckpt = save_checkpoint(tmp_path / "d.pt", densenet(seed=1), "monai.DenseNet121")
    bundle = write_bundle(tmp_path / "cls", zoo_classification_config(data))
    text = monai_overlay(str(ckpt), str(bundle))
    assert text.startswith(f"wrote {bundle / 'configs' / 'ssl_init.yaml'}")
    assert "python -m monai.bundle run --config_file" in text and "features" in text


@pytest.mark.parametrize("name", ["classification_finetune", "detection_finetune", "segmentation_finetune"])
def test_plugin_bundles_decide_their_targets(tmp_path, name):
    bundle = tmp_path / name
    shutil.copytree(BUNDLES_DIR / name, bundle)
    family, net = {"classification_finetune": ("monai.ResNet", resnet(seed=1)),
                   "detection_finetune": ("monai.ResNet", resnet(conv1_t_size=[7, 7, 7], seed=1)),
                   "segmentation_finetune": ("monai.SwinUNETR", swinunetr(seed=1))}[name]
    ckpt = save_checkpoint(tmp_path / "final.pt", net, family)
    overrides = {"widths": [8, 16, 32, 64]} if family == "monai.ResNet" else {
        "feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "norm_name": "batch"}
    plan = write_overlay(ckpt, bundle, overrides=overrides, log=None)
    expected = {"classification_finetune": "auto", "detection_finetune": "feature_extractor.body",
                "segmentation_finetune": "swinViT"}
    assert plan.checked and plan.target == expected[name]
    assert plan.train_config.name == "train.yaml"
    assert ("--widths" if family == "monai.ResNet" else "--feature_size") in plan.command


def test_network_that_cannot_be_built_here_skips_the_dry_run(tmp_path, data, capsys):
    net_def = {"_target_": "SwinUNETR", "in_channels": "$int(os.environ['NO_SUCH_VARIABLE_FOR_SSL_TEST'])",
               "out_channels": 2, "feature_size": 12}
    ckpt = save_checkpoint(tmp_path / "s.pt", swinunetr(seed=1), "monai.SwinUNETR")
    plan = write_overlay(ckpt, write_bundle(tmp_path / "seg", zoo_segmentation_config(data, net_def)))
    assert not plan.checked and plan.target == "swinViT" and plan.path.is_file()
    assert "could not build `network_def` for a dry run" in capsys.readouterr().out
    assert "Dry run at writing time: not run" in plan.path.read_text()

"""`python -m monai.bundle run` on an unchanged bundle + the generated overlay, as a subprocess: the
zoo-style detection and classification configs (written here the way the model zoo writes them) and
the plugin's three fine-tuning bundles, and a bundle whose network is nnU-Net's own ResidualEncoderUNet
initialised from a converted OpenMind (nnssl) checkpoint. Each asserts from the log that the SSL weights loaded and the
run finished, and where the pretrained part stays frozen, that the saved model still holds them."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from monai_ssl_helpers import (ZOO_DETECTION_TRAINER, densenet, resnet, save_checkpoint, swinunetr, write_bundle,
                               zoo_classification_config, zoo_detection_config, zoo_segmentation_config)

from monai_ssl_plugin.bundles import BUNDLES_DIR
from monai_ssl_plugin.monai_bundles import write_overlay
from monai_ssl_plugin.monai_bundles.demo_data import make_lesion_dataset

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_lesion_dataset(tmp_path_factory.mktemp("lesions"), n_cases=6, n_val=2, size=32))


def _run(plan, *extra: str) -> str:
    """The command the overlay printed, with this interpreter, plus test-size overrides."""
    command = plan.command.replace("python -m monai.bundle", f"{sys.executable} -m monai.bundle") + " " + " ".join(extra)
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def _assert_loaded(log: str, target: str) -> None:
    assert f"[monai-ssl] SSL init {target}: loaded" in log and "100.0%" in log, log[-3000:]
    assert "Engine run finished" in log, log[-3000:]


def test_zoo_detection_bundle_runs_with_overlay(tmp_path, data):
    ssl = resnet(conv1_t_size=[7, 7, 7], conv1_t_stride=[2, 2, 1], seed=1)
    ckpt = save_checkpoint(tmp_path / "final.pt", ssl, "monai.ResNet")
    bundle = write_bundle(tmp_path / "lung_nodule_ct_detection", zoo_detection_config(data),
                          scripts={"scripts/__init__.py": "", "scripts/trainer.py": ZOO_DETECTION_TRAINER})
    plan = write_overlay(ckpt, bundle, log=None)
    log = _run(plan)
    _assert_loaded(log, "feature_extractor.body")
    assert "Epoch[1] Complete" in log


def test_zoo_classification_bundle_runs_with_overlay_linear_probe(tmp_path, data):
    ssl = densenet(seed=1)
    ckpt = save_checkpoint(tmp_path / "final.pt", ssl, "monai.DenseNet121")
    bundle = write_bundle(tmp_path / "tiny_classification", zoo_classification_config(data))
    plan = write_overlay(ckpt, bundle, linear_probe=True, log=None)
    log = _run(plan)
    _assert_loaded(log, "features")
    saved = torch.load(bundle / "models" / "model.pt", weights_only=True)
    for k, v in ssl.state_dict().items():
        if k.startswith("features."):
            assert torch.equal(saved[k], v), k  # the saved model carries the SSL encoder, untouched
    init = densenet(seed=1).state_dict()
    assert any(not torch.equal(saved[k], v) for k, v in init.items() if k.startswith("class_layers."))  # head trained


def _plugin_bundle(tmp_path, name):
    bundle = tmp_path / name
    shutil.copytree(BUNDLES_DIR / name, bundle, ignore=shutil.ignore_patterns("model.pt", "*.pt", "eval"))
    return bundle


def test_classification_finetune_bundle(tmp_path, data):
    ssl = resnet(num_classes=5, seed=1)
    ckpt = save_checkpoint(tmp_path / "final.pt", ssl, "monai.ResNet")
    bundle = _plugin_bundle(tmp_path, "classification_finetune")
    plan = write_overlay(ckpt, bundle, freeze_epochs=1, pretrained_lr_mult=0.1, overrides={"widths": [8, 16, 32, 64]},
                         log=None)
    log = _run(plan, f"--dataset_dir {data} --epochs 2")
    _assert_loaded(log, "<all but fc>")
    assert "froze" in log and "unfroze" in log
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "last.pt").is_file()


def test_detection_finetune_bundle(tmp_path, data):
    ssl = resnet(conv1_t_size=[7, 7, 7], conv1_t_stride=[2, 2, 1], seed=1)
    ckpt = save_checkpoint(tmp_path / "final.pt", ssl, "monai.ResNet")
    bundle = _plugin_bundle(tmp_path, "detection_finetune")
    plan = write_overlay(ckpt, bundle, overrides={"widths": [8, 16, 32, 64]}, log=None)
    log = _run(plan, f"--dataset_dir {data} --epochs 1 --batch_size 2")
    _assert_loaded(log, "feature_extractor.body")
    assert (bundle / "models" / "model.pt").is_file()


def test_segmentation_finetune_bundle(tmp_path, data):
    ssl = swinunetr(seed=1)
    ckpt = save_checkpoint(tmp_path / "final.pt", ssl, "monai.SwinUNETR", key_prefixes={"encoder": "swinViT"})
    bundle = _plugin_bundle(tmp_path, "segmentation_finetune")
    small = {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "norm_name": "batch"}
    plan = write_overlay(ckpt, bundle, overrides=small, log=None)
    log = _run(plan, f"--dataset_dir {data} --epochs 1 --val_interval 1 --roi_size '[32,32,32]'")
    _assert_loaded(log, "swinViT")
    assert "val_mean_dice" in log


def test_nnunet_resencl_bundle_network_from_converted_openmind_weights(tmp_path, data, monkeypatch):
    from nnunet_helpers import tiny_resenc_kwargs
    from published_layouts import bundle_network_def, write_openmind

    from monai_ssl_plugin.pretrained import get
    from monai_ssl_plugin.pretrained.cache import ENV_HOME

    monkeypatch.setenv(ENV_HOME, str(tmp_path / "cache"))
    arch = tiny_resenc_kwargs((4, 8, 16))
    published, expected = write_openmind(tmp_path / "checkpoint_final.pth", "MAE", arch)
    converted = get("openmind-resencl-mae", file=str(published), log=None)  # what `monai-ssl pretrained get` writes
    config = zoo_segmentation_config(data, bundle_network_def(arch))
    config["run"].append("$torch.save(@network.state_dict(), @bundle_root + '/trained.pt')")
    bundle = write_bundle(tmp_path / "nnunet_resenc_seg", config)
    plan = write_overlay(converted, bundle, log=None)
    assert plan.network_class == "ResidualEncoderUNet" and plan.target == "auto" and plan.checked
    log = _run(plan)
    _assert_loaded(log, "encoder")
    assert "transposed" in log  # nnssl's (z, y, x) kernels into a LoadImage (x, y, z) pipeline
    trained = torch.load(bundle / "trained.pt", weights_only=True)
    stem = "encoder.stem.convs.0.conv.weight"
    pretrained = expected[stem].permute(0, 1, 4, 3, 2)  # the exact transposition the overlay applied
    assert torch.allclose(trained[stem], pretrained, atol=5e-3)  # one small AdamW step away from the SSL weights
    assert not torch.allclose(trained[stem], expected[stem], atol=5e-3)  # and not the untransposed kernel

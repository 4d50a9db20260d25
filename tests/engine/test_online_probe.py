"""Online probe handler: logs probe/* metrics and a curve, and leaves the pretraining untouched."""

import json

import torch
from monai.bundle import ConfigParser

from monai_ssl_plugin.bundles import train_configs
from monai_ssl_plugin.checkpoint import safe_load
from monai_ssl_plugin.engine.handlers import OnlineProbeHandler
from monai_ssl_plugin.engine.run import bundle_dir, pretrain
from monai_ssl_plugin.evaluation.runner import read_scalars


def _probe_set(path):
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 4)
    # class 1 is brighter in one half: separable, so a working probe scores above chance
    images = [torch.randn(1, 32, 32, 32, generator=gen) + 2.0 * int(y) * (torch.arange(32) < 16).float()
              for y in labels]
    torch.save({"images": images, "labels": labels}, path)
    return path


def _run(data, out, handler=None):
    overrides = {"backbone": "nnunet_plain_tiny", "patch_size": [32, 32, 32], "batch_size": 2, "device": "cpu",
                 "seed": 3, "quiet": True, "train#trainer#max_epochs": 1, "train#epoch_length": 6,
                 "train#num_workers": 0}
    if handler is not None:
        parser = ConfigParser()
        parser.read_config(train_configs("simclr_ssl_pretraining"))
        overrides["train#handlers"] = list(parser.get("train#handlers")) + [handler]
    return pretrain("simclr_ssl_pretraining", dataset_dir=data, output_dir=out, **overrides)


def test_probe_does_not_change_pretraining_and_records_curve(tmp_path, synthetic_raw_dataset):
    probe_set = _probe_set(tmp_path / "probe.pt")
    plain = _run(synthetic_raw_dataset, tmp_path / "plain")
    handler = {"_target_": "monai_ssl_plugin.engine.handlers.OnlineProbeHandler", "backbone": "@network",
               "probe_set": str(probe_set), "every_n": 2, "output_dir": "@output_dir",
               "log_dir": "$os.path.join(@output_dir, 'tensorboard')"}
    probed = _run(synthetic_raw_dataset, tmp_path / "probed", handler)

    loss_plain = read_scalars(tmp_path / "plain" / "tensorboard")["loss"]
    loss_probed = read_scalars(tmp_path / "probed" / "tensorboard")["loss"]
    assert len(loss_plain) == 6 and loss_plain == loss_probed  # same RNG stream, same gradients
    a, b = safe_load(plain)["network"], safe_load(probed)["network"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    curve = json.loads((tmp_path / "probed" / "online_probe.json").read_text())
    assert [c["iteration"] for c in curve] == [2, 4, 6]
    for c in curve:
        assert 0.0 <= c["knn_accuracy"] <= 1.0 and 0.0 <= c["linear_auc"] <= 1.0
    scalars = read_scalars(tmp_path / "probed" / "tensorboard", "probe/")
    assert [s for s, _ in scalars["probe/knn_accuracy"]] == [2, 4, 6]


def test_probe_restores_modes_and_rng(tmp_path):
    from monai_ssl_plugin.backbones import create_backbone

    net = create_backbone("nnunet_plain_tiny")
    net.train()
    net.network.decoder.eval()  # a mixed state must come back as it was
    modes = [m.training for m in net.modules()]
    handler = OnlineProbeHandler(net, _probe_set(tmp_path / "p.pt"), every_n=1)
    state = torch.get_rng_state()
    metrics = handler.probe()
    assert torch.equal(torch.get_rng_state(), state)
    assert [m.training for m in net.modules()] == modes
    assert set(metrics) == {"knn_accuracy", "knn_auc", "linear_accuracy", "linear_auc"}
    # even a random network separates this set: brightness survives the pooled embedding
    assert metrics["linear_accuracy"] >= 0.5

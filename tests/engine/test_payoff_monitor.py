"""Pay-off monitor: leaves the pretraining bit-identical, writes its curve, and its Dice rises when the
encoder is better than its random initialisation."""

import csv
import json

import pytest
import torch
from ignite.engine import Engine

from monai_ssl_plugin.checkpoint import safe_load
from monai_ssl_plugin.engine.handlers.payoff import PayoffMonitor, fixed_crop
from monai_ssl_plugin.engine.run import pretrain
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.evaluation.runner import read_scalars


def _run(data, out, **payoff):
    overrides = {"backbone": "nnunet_plain_tiny", "patch_size": [32, 32, 32], "batch_size": 2, "device": "cpu",
                 "seed": 3, "quiet": True, "train#trainer#max_epochs": 1, "train#epoch_length": 6,
                 "train#num_workers": 0}
    return pretrain("simclr_ssl_pretraining", dataset_dir=data, output_dir=out, **overrides, **payoff)


def test_monitor_does_not_change_pretraining_and_writes_its_curve(tmp_path, synthetic_raw_dataset):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({f"case_{i:03d}": {"group": i % 2} for i in range(4)}))
    plain = _run(synthetic_raw_dataset, tmp_path / "plain")  # the bundles' default: monitor off
    assert not (tmp_path / "plain" / "payoff.csv").exists()
    # switched on through the shared base config's ids
    monitored = _run(synthetic_raw_dataset, tmp_path / "monitored", payoff_labels=str(synthetic_raw_dataset),
                     payoff_every=3, payoff_cases=2, payoff_score_cases=2, payoff_class_labels=str(classes),
                     payoff_class_key="group")

    loss_plain = read_scalars(tmp_path / "plain" / "tensorboard")["loss"]
    assert len(loss_plain) == 6 and loss_plain == read_scalars(tmp_path / "monitored" / "tensorboard")["loss"]
    a, b = safe_load(plain)["network"], safe_load(monitored)["network"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same weights, bit for bit

    rows = list(csv.DictReader((tmp_path / "monitored" / "payoff.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [0, 3, 6]
    assert rows[0]["status"] == "baseline" and float(rows[0]["gain"]) == 0.0
    for r in rows:
        assert 0.0 <= float(r["seg_dice"]) <= 1.0 and 0.0 <= float(r["knn_accuracy"]) <= 1.0
        assert r["status"] in ("baseline", "not yet", "paying", "plateau")
    assert abs(float(rows[2]["gain"]) - (float(rows[2]["seg_dice"]) - float(rows[0]["seg_dice"]))) < 1e-9
    scalars = read_scalars(tmp_path / "monitored" / "tensorboard", "payoff/")
    assert [s for s, _ in scalars["payoff/seg_dice"]] == [0, 3, 6] and "payoff/linear_auc" in scalars


def _supervised_encoder(monitor: PayoffMonitor, steps: int = 15):
    """The same architecture trained on the fitting cases' labels: an encoder better than random."""
    from monai.losses import DiceCELoss

    from monai_ssl_plugin.backbones import create_backbone

    torch.manual_seed(0)
    net = create_backbone("nnunet_plain_tiny", out_channels=monitor.n_classes)
    opt = torch.optim.Adam(net.parameters(), 2e-2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x = torch.stack([c[0] for c in monitor.crops[:monitor.n_fit]])
    y = torch.stack([c[1] for c in monitor.crops[:monitor.n_fit]])[:, None]
    for _ in range(steps):
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.fixture(scope="module")
def six_labelled(tmp_path_factory):
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("payoff_raw")
    make_synthetic_dataset(root, dataset_id=993, name="Payoff", n_labelled=6, n_unlabelled=1, n_test=0,
                           shape=(24, 24, 24), spacing=(2.0, 2.0, 2.0), seed=0)
    return root / "Dataset993_Payoff"


def test_monitor_dice_rises_when_the_encoder_is_better_than_random(six_labelled):
    from monai_ssl_plugin.backbones import create_backbone

    torch.manual_seed(0)
    monitor = PayoffMonitor(create_backbone("nnunet_plain_tiny"), six_labelled, n_fit=3, n_score=3,
                            patch_size=[16, 16, 16])
    random_init = monitor.measure()
    monitor.backbone = _supervised_encoder(monitor)
    trained = monitor.measure()
    assert trained["seg_dice"] > random_init["seg_dice"] + 0.05, (random_init, trained)
    assert monitor.measure()["seg_dice"] == trained["seg_dice"]  # deterministic: the curve moves only with the encoder


def test_status_says_baseline_paying_and_plateau(six_labelled):
    from monai_ssl_plugin.backbones import create_backbone

    monitor = PayoffMonitor(create_backbone("nnunet_plain_tiny"), six_labelled, n_fit=3, n_score=3,
                            patch_size=[16, 16, 16], patience=2, min_gain=0.01)
    engine = Engine(lambda e, b: None)
    dice = iter([0.40, 0.405, 0.50, 0.60, 0.605, 0.60])
    monitor.measure = lambda: {"seg_dice": next(dice), "seconds": 0.0}
    statuses = []
    for iteration in (0, 10, 20, 30, 40, 50):
        engine.state.iteration = iteration
        monitor.check(engine)
        statuses.append(monitor.rows[-1]["status"])
    assert statuses == ["baseline", "not yet", "paying", "paying", "paying", "plateau"]
    assert engine.state.metrics["payoff/status"] == "plateau" and engine.state.metrics["payoff/gain"] == pytest.approx(0.2)


def test_measure_restores_modes_and_rng(six_labelled):
    from monai_ssl_plugin.backbones import create_backbone

    net = create_backbone("nnunet_plain_tiny")
    net.train()
    net.network.decoder.eval()  # a mixed state must come back as it was
    modes = [m.training for m in net.modules()]
    monitor = PayoffMonitor(net, six_labelled, n_fit=3, n_score=3, patch_size=[16, 16, 16])
    state = torch.get_rng_state()
    monitor.measure()
    assert torch.equal(torch.get_rng_state(), state)
    assert [m.training for m in net.modules()] == modes
    assert all(p.grad is None for p in net.parameters())


def test_off_without_labels_and_one_line_errors(six_labelled):
    from monai_ssl_plugin.backbones import create_backbone

    net = create_backbone("nnunet_plain_tiny")
    engine = Engine(lambda e, b: None)
    before = {e: len(h) for e, h in engine._event_handlers.items()}
    PayoffMonitor(net, None).attach(engine)
    assert {e: len(h) for e, h in engine._event_handlers.items()} == before
    with pytest.raises(PluginError, match="needs 8 labelled cases .* has 6"):
        PayoffMonitor(net, six_labelled, n_fit=4, n_score=4)
    with pytest.raises(PluginError, match="does not exist"):
        PayoffMonitor(net, six_labelled / "nowhere")


def test_fixed_crop_centres_on_the_foreground_and_pads_to_the_divisor():
    import numpy as np

    image = np.arange(20 * 30 * 10, dtype=np.float32).reshape(1, 20, 30, 10)
    label = np.zeros((20, 30, 10), dtype=np.uint8)
    label[15:19, 2:6, 4:6] = 1
    x, y = fixed_crop(image, label, [8, 8, 12], [4, 4, 4])
    assert x.shape == (1, 8, 8, 12) and y.shape == (8, 8, 12)  # the 10-voxel axis padded to 12
    assert int(y.sum()) == int(label.sum())  # the whole structure is in the crop
    assert float(x[0, 0, 0, 0]) == float(image[0, 12, 0, 0])  # centred (clamped at the far end)

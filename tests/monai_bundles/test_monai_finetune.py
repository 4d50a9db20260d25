"""Fine-tuning controls: frozen for N epochs then trainable, lower LR for pretrained parameters, linear probe."""

from __future__ import annotations

import pytest
import torch
from monai_ssl_helpers import densenet, resnet, retinanet, save_checkpoint, snapshot

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.monai_bundles import Freezer, SSLInitHandler, linear_probe, param_groups


def _data(n=4):
    torch.manual_seed(0)
    return [{"image": torch.randn(1, 32, 32, 32), "label": torch.tensor(i % 2)} for i in range(n)]


def _trainer(net, handlers, epochs, opt=None):
    from monai.data import DataLoader
    from monai.engines import SupervisedTrainer

    opt = opt or torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    return SupervisedTrainer(device=torch.device("cpu"), max_epochs=epochs,
                             train_data_loader=DataLoader(_data(), batch_size=2),
                             network=net, optimizer=opt, loss_function=torch.nn.CrossEntropyLoss(),
                             train_handlers=handlers)


def test_param_groups_lower_lr_for_pretrained_part():
    net = retinanet(seed=1)
    groups = param_groups(net, lr=0.01, pretrained_lr_mult=0.1)
    opt = torch.optim.SGD(groups, lr=0.01)
    pre, new = opt.param_groups
    assert (pre["name"], new["name"]) == ("pretrained", "new")
    assert pre["lr"] == pytest.approx(0.001) and new["lr"] == 0.01
    body = {id(p) for p in net.feature_extractor.body.parameters()}
    assert {id(p) for p in pre["params"]} == body
    assert not body & {id(p) for p in new["params"]}
    assert len(pre["params"]) + len(new["params"]) == len(list(net.parameters()))
    # schedulers see both groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(), sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0005, 0.005])
    with pytest.raises(PluginError, match="needs the optimizer's lr"):
        param_groups(net)


def test_freezer_freezes_params_and_norm_statistics_then_restores():
    net = resnet(seed=1)
    f = Freezer(net)  # auto: everything but fc
    assert f.freeze() > 0 and f.frozen
    assert not net.conv1.weight.requires_grad and net.fc.weight.requires_grad
    before = snapshot(net)
    net.train()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    torch.nn.functional.cross_entropy(net(torch.randn(2, 1, 24, 24, 24)), torch.tensor([0, 1])).backward()
    opt.step()
    assert torch.equal(net.bn1.running_mean, before["bn1.running_mean"])  # statistics kept
    assert torch.equal(net.conv1.weight, before["conv1.weight"])
    assert not torch.equal(net.fc.weight, before["fc.weight"])
    f.unfreeze()
    assert net.conv1.weight.requires_grad and net.bn1.training and not f.frozen
    net(torch.randn(2, 1, 24, 24, 24))
    assert not torch.equal(net.bn1.running_mean, before["bn1.running_mean"])  # statistics update again


def test_freezer_leaves_already_frozen_parameters_frozen():
    net = resnet(seed=1)
    net.layer1.requires_grad_(False)  # e.g. trainable_backbone_layers < 5
    f = Freezer(net)
    f.freeze(), f.unfreeze()
    assert not any(p.requires_grad for p in net.layer1.parameters()) and net.conv1.weight.requires_grad


def test_handler_freezes_for_n_epochs_then_trains(tmp_path, capsys):
    ssl = resnet(seed=1)
    ckpt = save_checkpoint(tmp_path / "r.pt", ssl, "monai.ResNet")
    net = resnet(seed=2)
    seen = {}
    handler = SSLInitHandler(str(ckpt), net, freeze_epochs=1)
    trainer = _trainer(net, [handler], epochs=2)
    from ignite.engine import Events

    @trainer.on(Events.EPOCH_COMPLETED)
    def _record(engine):  # runs after the handler's own EPOCH_COMPLETED (registered earlier)
        seen[engine.state.epoch] = (torch.equal(net.conv1.weight, ssl.conv1.weight), net.conv1.weight.requires_grad)

    assert torch.equal(net.conv1.weight, ssl.conv1.weight)  # loaded when attached, before any event
    trainer.run()
    assert seen[1] == (True, False)  # epoch 1 trained with the pretrained part frozen
    assert seen[2] == (False, True)  # unfrozen when epoch 2 started: it changed
    assert trainer.state.ssl_init["loaded_fraction"] == 1.0
    out = capsys.readouterr().out
    assert "froze" in out and "unfroze" in out and "loaded" in out


def test_resumed_run_past_freeze_epochs_trains_unfrozen(tmp_path):
    from ignite.engine import Events

    ckpt = save_checkpoint(tmp_path / "r.pt", resnet(seed=1), "monai.ResNet")
    net = resnet(seed=2)
    trainer = _trainer(net, [SSLInitHandler(str(ckpt), net, freeze_epochs=1)], epochs=3)
    trainer.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 2))  # what CheckpointLoader does
    grads = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: grads.append(net.conv1.weight.requires_grad))
    trainer.run()
    assert grads == [True]  # only epoch 3 ran, unfrozen


def test_linear_probe_only_the_head_trains(tmp_path):
    ssl = densenet(seed=1)
    ckpt = save_checkpoint(tmp_path / "d.pt", ssl, "monai.DenseNet121")
    net = densenet(seed=2)
    head = snapshot(net.class_layers)
    trainer = _trainer(net, [SSLInitHandler(str(ckpt), net, linear_probe=True)], epochs=1)
    trainer.run()
    for k, v in net.state_dict().items():
        if k.startswith("features."):
            assert torch.equal(v, ssl.state_dict()[k]), k  # weights and BN statistics untouched
    assert any(not torch.equal(v, head[k]) for k, v in net.class_layers.state_dict().items())
    lp = linear_probe(densenet(seed=3))
    assert lp.frozen


def test_handler_failure_stops_before_training(tmp_path):
    ckpt = save_checkpoint(tmp_path / "r.pt", resnet(in_channels=2, seed=1), "monai.ResNet", in_channels=2)
    net = resnet(seed=2)
    with pytest.raises(PluginError, match="2 input channel"):
        _trainer(net, [SSLInitHandler(str(ckpt), net)], epochs=1)

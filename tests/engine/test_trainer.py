import torch
from ignite.engine import Events

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.engine import SSLTrainer
from monai_ssl_plugin.pretext import create_pretext


def test_trainer_runs_pretext_and_lowers_loss():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    mae = create_pretext("mae", backbone=create_backbone("nnunet_plain_tiny"), block_size=4, mask_ratio=0.5)
    x = torch.linspace(0, 1, 16).view(1, 1, 16, 1, 1).expand(2, 1, 16, 16, 16).contiguous()
    data = [{"image": x}] * 10
    losses = []
    trainer = SSLTrainer("cpu", 3, data, mae, torch.optim.Adam(mae.parameters(), 3e-3))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.run()
    assert len(losses) == 30 and set(trainer.state.output) == {"loss", "reconstruction"}
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_pretrain_refuses_unknown_override_ids(tmp_path):
    import pytest

    from monai_ssl_plugin.engine.run import pretrain
    from monai_ssl_plugin.errors import PluginError

    with pytest.raises(PluginError, match="no config id 'epoch_length'.*train#epoch_length"):
        pretrain("mae_ssl_pretraining", dataset_dir=tmp_path, output_dir=tmp_path / "out", epoch_length=4)
    assert not (tmp_path / "out").exists()

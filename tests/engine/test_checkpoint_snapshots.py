"""``keep_steps``: snapshots of one run at chosen iterations (the pay-off curve fine-tunes from them)."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.checkpoint import safe_load
from monai_ssl_plugin.engine import SSLTrainer
from monai_ssl_plugin.engine.handlers import SSLCheckpointHandler
from monai_ssl_plugin.engine.run import record_factory
from monai_ssl_plugin.engine.settings import check_overrides
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext import create_pretext

INFO = {"kind": "test", "axis_order": "nnunet", "spacing": [1.0, 1.0, 1.0], "normalization": ["ZScoreNormalization"],
        "in_channels": 1, "spatial_dims": 3}


def _run(out, keep_steps, max_epochs=2):
    torch.manual_seed(0)
    x = torch.rand(4, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(x), batch_size=2, collate_fn=lambda b: {"image": torch.stack([t[0] for t in b])})
    mae = create_pretext("mae", backbone=create_backbone("nnunet_plain_tiny"), block_size=4, mask_ratio=0.5)
    init = {k: v.clone() for k, v in mae.backbone.network.state_dict().items()}
    opt = torch.optim.SGD(mae.parameters(), lr=0.05, momentum=0.9)
    ckpt = SSLCheckpointHandler(out, mae, opt, None, record_factory(mae, INFO, [16, 16, 16]), 0, keep_steps=keep_steps)
    SSLTrainer("cpu", max_epochs, loader, mae, opt, epoch_length=2, train_handlers=[ckpt]).run()
    return ckpt, init, mae


def test_snapshots_hold_the_network_at_their_step(tmp_path):
    torch.set_num_threads(1)
    ckpt, init, mae = _run(tmp_path, keep_steps=[0, 1, 3])
    kept = sorted(p.name for p in ckpt.checkpoint_dir.glob("step_*.pt"))
    assert kept == ["step_000000.pt", "step_000001.pt", "step_000003.pt"]
    step0 = safe_load(ckpt.snapshot_path(0))
    assert step0["record"]["steps"] == 0 and step0["engine"]["iteration"] == 0
    assert all(torch.equal(step0["network"][k], v) for k, v in init.items())  # untrained
    step3 = safe_load(ckpt.snapshot_path(3))
    final = safe_load(ckpt.final_path)
    assert step3["record"]["steps"] == 3 and final["record"]["steps"] == 4
    assert any(not torch.equal(step3["network"][k], final["network"][k]) for k in init)  # one more step changed it
    assert any(not torch.equal(step0["network"][k], step3["network"][k]) for k in init)


def test_negative_step_is_refused(tmp_path):
    with pytest.raises(PluginError, match="keep_steps"):
        _run(tmp_path, keep_steps=[-1])
    with pytest.raises(PluginError, match="keep_steps"):
        check_overrides({"keep_steps": [0, -5]})
    check_overrides({"keep_steps": [0, 100]})

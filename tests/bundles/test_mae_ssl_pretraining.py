"""The MAE bundle end to end on tiny synthetic data: `python -m monai.bundle run`, then a resume via `pretrain()`."""

import pytest
import torch
from bundle_cli import monai_bundle_run

from monai_ssl_plugin.checkpoint import CHECKPOINT_KEYS, safe_load
from monai_ssl_plugin.engine.run import bundle_dir, pretrain

BUNDLE = bundle_dir("mae_ssl_pretraining")
FAST = {"backbone": "nnunet_plain_tiny", "patch_size": [32, 32, 32], "batch_size": 2, "train#epoch_length": 8,
        "train#num_workers": 0, "quiet": True}


def _losses(tensorboard_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tensorboard_dir))
    acc.Reload()
    return [e.value for e in acc.Scalars("loss")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    raw = tmp_path_factory.mktemp("raw")
    return make_synthetic_dataset(raw, 990, "Synthetic", n_labelled=2, n_unlabelled=4, shape=(40, 40, 40),
                                  spacing=(1.0, 1.0, 1.0), seed=0)


def test_bundle_run_lowers_the_loss_and_resumes(dataset, tmp_path):
    out = tmp_path / "run"
    configs = BUNDLE / "configs"
    overrides = {"dataset_dir": str(dataset), "output_dir": str(out), "train#trainer#max_epochs": 1, **FAST}
    proc = monai_bundle_run(configs, overrides, tmp_path)  # any cwd works
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    first = safe_load(out / "checkpoints" / "final.pt")
    assert set(CHECKPOINT_KEYS) <= set(first) and first["engine"]["iteration"] == 8
    record = first["record"]
    assert record["pretext"] == "mae" and record["patch_size"] == [32, 32, 32] and record["axis_order"] == "nnunet"
    assert record["pretext_settings"]["block_size"] == 4 and record["pretext_settings"]["mask_ratio"] == 0.75
    assert record["data"]["kind"] == "nnunet_raw" and record["steps"] == 8

    # the same run continued in-process for 8 more iterations (what `monai-ssl pretrain --resume` does)
    torch.set_num_threads(1)
    final = pretrain("mae_ssl_pretraining", dataset, out, resume=True, **{"train#trainer#max_epochs": 2}, **FAST)
    assert final == out / "checkpoints" / "final.pt"
    state = safe_load(final)
    assert state["engine"]["iteration"] == 16 and state["record"]["steps"] == 16
    key = "encoder.stages.0.0.convs.0.conv.weight"
    assert not torch.equal(state["network"][key], first["network"][key])  # the resumed part trained

    losses = _losses(out / "tensorboard")
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    rows = (out / "timing.csv").read_text().splitlines()
    assert rows[0] == "iteration,wait_s,step_s" and [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 17))

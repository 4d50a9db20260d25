"""The contrastive and non-contrastive pretraining bundles end to end on tiny synthetic data.

Each bundle runs with ``python -m monai.bundle run`` (tiny network, heads and patches, ~32 steps),
then the test checks the checkpoint (record, teachers, queue / centre) and that training lowered
the loss. Joint-embedding losses jump from step to step with the random patches and views (2-4
volumes, 1-3 negatives), so "lowered" is measured on fixed evaluation batches with fixed views:
the trained pretext (loaded from ``final.pt``) against a freshly initialised one, both in training
mode (running statistics, centre and queue behave as during training). MoCo's InfoNCE rises while
its queue fills with real keys instead of random vectors, so for MoCo the term is the query/key
alignment, which must rise.
"""

import pytest
import torch
from bundle_cli import monai_bundle_run
from learning_check import fixed_draw_means, fresh_pretext

from monai_ssl_plugin.checkpoint import CHECKPOINT_KEYS, safe_load
from monai_ssl_plugin.engine.run import bundle_dir

ITERATIONS = 32
FAST = {"backbone": "nnunet_plain_tiny", "patch_size": [32, 32, 32], "batch_size": 2, "train#epoch_length": ITERATIONS,
        "train#trainer#max_epochs": 1, "train#num_workers": 0, "quiet": True, "learning_rate": 1e-3,
        "collapse_every_n": 8, "pretext#hidden_dim": 64}
# per bundle: tiny heads, and what the method needs (VoCo: 4 base crops per grid axis; Barlow Twins: >= 3 volumes;
# SimCLR: 4 volumes so each step has 6 negatives instead of 2; MoCo: momentum 0.99, the low end of the published
# range, so that the key encoder moves within 32 steps)
EXTRA = {
    "simclr": {"batch_size": 4},
    "moco": {"pretext#queue_size": 8, "pretext#momentum": 0.99},
    "voco": {"pretext#out_dim": 64, "patch_size": [16, 64, 64]},
    "byol": {"pretext#projection_dim": 32},
    "simsiam": {"pretext#projection_dim": 64, "pretext#predictor_dim": 16},
    "barlow_twins": {"pretext#projection_dim": 64, "batch_size": 4},
    "vicreg": {"pretext#projection_dim": 64},
    "dino": {"pretext#out_dim": 256, "pretext#bottleneck_dim": 32, "pretext#n_local": 2},
}
STATE_KEYS = {  # what must be in the checkpoint's pretext state besides the online network
    "moco": ["criterion.queue.queue", "criterion.queue.ptr", "key_backbone.network.", "key_projector."],
    "voco": ["teacher_backbone.network.", "teacher_head."],
    "byol": ["target_backbone.network.", "target_projector."],
    "dino": ["criterion.center", "step", "teacher_backbone.network.", "teacher_head."],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    raw = tmp_path_factory.mktemp("raw")
    return make_synthetic_dataset(raw, 990, "Synthetic", n_labelled=2, n_unlabelled=4, shape=(40, 40, 40),
                                  spacing=(1.0, 1.0, 1.0), seed=0)


def _overrides(method, dataset, out):
    return {"dataset_dir": str(dataset), "output_dir": str(out), **FAST, **EXTRA[method]}


def _losses(tensorboard_dir, tag="loss"):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tensorboard_dir))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


@pytest.mark.parametrize("method", sorted(EXTRA))
def test_bundle_run_trains_and_checkpoints(method, dataset, tmp_path):
    bundle = bundle_dir(f"{method}_ssl_pretraining")
    configs = bundle / "configs"
    out = tmp_path / "run"
    overrides = _overrides(method, dataset, out)
    proc = monai_bundle_run(configs, overrides, tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "collapse check at iteration 8" in proc.stdout + proc.stderr

    ckpt = safe_load(out / "checkpoints" / "final.pt")
    assert set(CHECKPOINT_KEYS) <= set(ckpt) and ckpt["engine"]["iteration"] == ITERATIONS
    record = ckpt["record"]
    assert record["pretext"] == method and record["pretrained_parts"] == ["stem", "encoder"]
    assert record["patch_size"] == overrides["patch_size"] and record["pretext_settings"]
    for key in STATE_KEYS.get(method, []):
        assert any(k == key or k.startswith(key) for k in ckpt["pretext"]), f"{key} not in the pretext state"
    assert len(_losses(out / "tensorboard")) == ITERATIONS
    assert len(_losses(out / "tensorboard", "collapse/embedding_std_ratio")) == ITERATIONS // 8

    # training lowered the loss: fixed batches and views, trained vs freshly initialised pretext
    pretext, batches = fresh_pretext(configs.parent, overrides, 6, int(overrides["batch_size"]))
    key = "alignment" if method == "moco" else "loss"
    (before,) = fixed_draw_means(pretext, batches, [key])
    pretext.load_state_dict(ckpt["pretext"])
    (after,) = fixed_draw_means(pretext, batches, [key])
    print(f"{method}: {key} on fixed views {before:.4f} -> {after:.4f}")
    if key == "alignment":
        assert after > before, (before, after)
    else:
        assert after < before, (before, after)


@pytest.mark.parametrize("method", ["moco", "dino"])
def test_resume_continues_teacher_queue_and_centre(method, dataset, tmp_path):
    """What only these pretexts keep (momentum encoder + queue, teacher + centre + step) survives a resume."""
    from monai_ssl_plugin.engine.run import pretrain

    torch.set_num_threads(1)
    out = tmp_path / "run"
    fast = {**FAST, **EXTRA[method], "train#epoch_length": 4}
    first = safe_load(pretrain(f"{method}_ssl_pretraining", dataset, out, **fast))
    final = safe_load(pretrain(f"{method}_ssl_pretraining", dataset, out, resume=True,
                               **{**fast, "train#trainer#max_epochs": 2}))
    assert first["engine"]["iteration"] == 4 and final["engine"]["iteration"] == 8
    teacher = "key_backbone." if method == "moco" else "teacher_backbone."
    key = next(k for k in final["pretext"] if k.startswith(teacher) and k.endswith("weight"))
    assert not torch.equal(first["pretext"][key], final["pretext"][key])  # the teacher kept moving
    if method == "moco":  # batch 2, queue 8: 4 more steps wrote 8 more keys, so the pointer came round again
        assert int(final["pretext"]["criterion.queue.ptr"]) == (8 * 2) % 8
        assert not torch.equal(first["pretext"]["criterion.queue.queue"], final["pretext"]["criterion.queue.queue"])
    else:
        assert int(first["pretext"]["step"]) == 4 and int(final["pretext"]["step"]) == 8
        assert not torch.equal(first["pretext"]["criterion.center"], final["pretext"]["criterion.center"])

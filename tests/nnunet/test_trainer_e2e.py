"""End to end with nnU-Net's real commands on a tiny synthetic dataset (CPU, a few minutes).

raw dataset -> nnUNetv2_plan_and_preprocess -> plans variant with a tiny network (so CPU runs are
quick; also exercises ``-p``) -> MAE pretraining on the preprocessed data with those plans ->
export to the dataset -> nnUNetv2_train -tr nnUNetTrainerSSL_short -> nnUNetv2_predict -> Dice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.checkpoint import atomic_save, build_record
from monai_ssl_plugin.data.synthetic import make_synthetic_dataset
from monai_ssl_plugin.engine import SSLTrainer
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.nnunet import export_nnunet
from monai_ssl_plugin.nnunet.plans import write_plans_variant
from monai_ssl_plugin.pretext.generative.mae import MaskedImageModelling
from monai_ssl_plugin.workflows.nnunet_commands import run_nnunet

from nnunet_helpers import plans_copy, tiny_plans, write_checkpoint

pytestmark = pytest.mark.e2e

DATASET_ID, NAME, CONFIGURATION, TRAINER = 951, "SSLE2E", "3d_fullres", "nnUNetTrainerSSL_short"
PLANS = "nnUNetPlans_nnunet_plain_tiny"  # written by write_plans_variant(backbone="nnunet_plain_tiny")


def pretrain_mae(preprocessed_dataset: Path, configuration: str, plans_identifier: str, checkpoint: Path,
                 iterations: int = 4, batch_size: int = 2, seed: int = 0) -> Path:
    """The pretraining step: MAE on the dataset's preprocessed data with the dataset's own plans.

    In-process with the plugin's SSLTrainer; writes a checkpoint in the CHECKPOINT_KEYS layout.
    (To be replaced by the bundle route, ``python -m monai.bundle run``, once it lands.)
    """
    from monai_ssl_plugin.data.sources import NnUNetPreprocessedSource

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    source = NnUNetPreprocessedSource(preprocessed_dataset, configuration, plans_identifier)
    backbone = NnUNetBackbone.from_plans(preprocessed_dataset / f"{plans_identifier}.json", configuration)
    patch = source.info["patch_size"]
    pretext = MaskedImageModelling(backbone, mask_ratio=0.75, block_size=max(1, min(patch) // 4))

    def crop(image: np.ndarray) -> torch.Tensor:  # random patch, zero-padded where the volume is smaller
        pad = [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(patch, image.shape[1:])]
        image = np.pad(image, pad)
        start = [rng.integers(0, s - p + 1) for p, s in zip(patch, image.shape[1:])]
        return torch.from_numpy(image[(slice(None),) + tuple(slice(a, a + p) for a, p in zip(start, patch))].copy())

    volumes = [source.load(i) for i in range(len(source))]
    batches = [{"image": torch.stack([crop(volumes[j]) for j in rng.integers(0, len(volumes), batch_size)])}
               for _ in range(iterations)]
    optimizer = torch.optim.AdamW(pretext.parameters(), lr=1e-3)
    SSLTrainer("cpu", max_epochs=1, train_data_loader=batches, pretext=pretext, optimizer=optimizer,
               epoch_length=iterations).run()
    record = build_record(backbone, pretext, source.info, patch, steps=iterations).to_dict()
    atomic_save({"network": backbone.network.state_dict(), "pretext": pretext.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": {}, "engine": {"iteration": iterations, "epoch": 1},
                 "rng": {}, "record": json.loads(json.dumps(record))}, checkpoint)
    return checkpoint


def dice_per_label(prediction: np.ndarray, reference: np.ndarray, labels: list[int]) -> dict[int, float]:
    """Dice per foreground label (1.0 when both are empty)."""
    out = {}
    for label in labels:
        p, r = prediction == label, reference == label
        denom = p.sum() + r.sum()
        out[label] = 1.0 if denom == 0 else float(2 * np.logical_and(p, r).sum() / denom)
    return out


@pytest.fixture(scope="module")
def pipeline(module_nnunet_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    work = tmp_path_factory.mktemp("e2e")
    env = dict(os.environ, **module_nnunet_env)  # PATH keeps the venv's nnUNetv2_* scripts
    log = work / "nnunet_commands.log"
    times = {}

    t = time.time()
    raw = make_synthetic_dataset(env["nnUNet_raw"], DATASET_ID, NAME, n_labelled=6, n_unlabelled=0,
                                 shape=(32, 32, 32), n_test=1)
    # planning sets torch threads to nnUNet_n_proc_DA, which must not be 0 there
    plan_env = {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}
    run_nnunet(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", CONFIGURATION, "-np", "1"], plan_env, log)
    write_plans_variant(DATASET_ID, backbone="nnunet_plain_tiny", configuration=CONFIGURATION)
    times["plan"] = time.time() - t

    t = time.time()
    preprocessed = Path(env["nnUNet_preprocessed"]) / raw.name
    checkpoint = pretrain_mae(preprocessed, CONFIGURATION, PLANS, work / "pretraining" / "final.pt")
    exported = export_nnunet(checkpoint, dataset=DATASET_ID, configuration=CONFIGURATION, plans_identifier=PLANS)
    times["pretrain+export"] = time.time() - t

    t = time.time()
    train_output = run_nnunet(["nnUNetv2_train", DATASET_ID, CONFIGURATION, "0", "-tr", TRAINER, "-p", PLANS,
                               "-device", "cpu"], env, log)
    times["train"] = time.time() - t

    t = time.time()
    predictions = work / "predictions"
    run_nnunet(["nnUNetv2_predict", "-i", raw / "imagesTs", "-o", predictions, "-d", DATASET_ID, "-c", CONFIGURATION,
                "-f", "0", "-tr", TRAINER, "-p", PLANS, "-device", "cpu", "-npp", "1", "-nps", "1",
                "--disable_progress_bar"],
               env, log)
    times["predict"] = time.time() - t
    print("e2e timings (s):", {k: round(v, 1) for k, v in times.items()})
    model = Path(env["nnUNet_results"]) / raw.name / f"{TRAINER}__{PLANS}__{CONFIGURATION}"
    return SimpleNamespace(env=env, log=log, raw=raw, preprocessed=preprocessed, checkpoint=checkpoint,
                           exported=exported, train_output=train_output, model=model, predictions=predictions,
                           work=work)


def test_training_log_shows_the_load_report(pipeline):
    assert pipeline.exported == pipeline.preprocessed / "ssl_pretrained" / f"{PLANS}__{CONFIGURATION}.pth"
    log = next((pipeline.model / "fold_0").glob("training_log_*.txt")).read_text()
    assert "[monai-ssl] loading pretrained stem + encoder + decoder" in log
    assert "[monai-ssl] loaded" in log and "100.0%" in log and "0 missing" in log
    assert "LR schedule: linear warm-up to 0.001" in log and "Epoch 1" in log
    assert (pipeline.model / "fold_0" / "checkpoint_final.pth").is_file()
    assert "[monai-ssl] loaded" in pipeline.train_output  # also on the console


def test_finetuning_starts_from_the_pretrained_weights(pipeline):
    """Initialise the trainer in-process on the same dataset: before any step, weights are the pretrained ones."""
    from monai_ssl_plugin.nnunet import nnUNetTrainerSSL_short

    plans = json.loads((pipeline.preprocessed / f"{PLANS}.json").read_text())
    dataset_json = json.loads((pipeline.preprocessed / "dataset.json").read_text())
    trainer = nnUNetTrainerSSL_short(plans_copy(plans), CONFIGURATION, 4, dataset_json, torch.device("cpu"))
    trainer.initialize()
    pretrained = torch.load(pipeline.checkpoint, weights_only=True)["network"]
    state = trainer.network.state_dict()
    encoder = [k for k in state if k.startswith("encoder.")]
    assert encoder and all(torch.equal(state[k], pretrained[k]) for k in encoder)
    assert all(torch.equal(state[k], pretrained[k]) for k in state if k.startswith("decoder.stages."))
    # and training moved them (the final checkpoint is not the pretrained network)
    final = torch.load(pipeline.model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert not all(torch.equal(final["network_weights"][k], pretrained[k]) for k in encoder)


def test_prediction_has_a_valid_dice(pipeline):
    import nibabel as nib

    labels = [v for k, v in json.loads((pipeline.raw / "dataset.json").read_text())["labels"].items() if v != 0]
    refs = sorted((pipeline.raw / "labelsTs").glob("*.nii.gz"))
    assert refs
    for ref in refs:
        prediction = np.asarray(nib.load(pipeline.predictions / ref.name).dataobj)
        reference = np.asarray(nib.load(ref).dataobj)
        assert prediction.shape == reference.shape
        dice = float(np.mean(list(dice_per_label(prediction, reference, labels).values())))
        assert np.isfinite(dice) and 0.0 <= dice <= 1.0


def test_validation_only_run_does_not_need_the_pretrained_file(pipeline):
    env = dict(pipeline.env, nnUNet_SSL_pretrained=str(pipeline.work / "does_not_exist.pth"))
    out = run_nnunet(["nnUNetv2_train", DATASET_ID, CONFIGURATION, "0", "-tr", TRAINER, "-p", PLANS, "-device", "cpu",
                      "--val"], env, pipeline.log)
    assert "[monai-ssl] loaded" not in out and "Mean Validation Dice" in out


def test_pretrained_weights_of_another_architecture_fail_before_training(pipeline):
    # same network family and depth, wider first stage: the dataset's plans build 8 features there
    other = write_checkpoint(pipeline.work / "other.pt", NnUNetBackbone.from_plans(tiny_plans(features=(16, 16, 32))),
                             spacing=[2.0, 2.0, 2.0])
    env = dict(pipeline.env, nnUNet_SSL_pretrained=str(export_nnunet(other, pipeline.work / "other.pth")))
    log = pipeline.work / "mismatch.log"
    with pytest.raises(PluginError, match=r"first mismatching layer encoder\.stages\.0\.0\.convs\.0\.conv\.weight "
                                          r"\(encoder stage 0\): checkpoint 16 out / 1 in channels, kernel 3x3x3 vs "
                                          r"network 8 out / 1 in channels.*features_per_stage at stage 0: 16 vs 8"):
        run_nnunet(["nnUNetv2_train", DATASET_ID, CONFIGURATION, "1", "-tr", TRAINER, "-p", PLANS, "-device", "cpu"],
                   env, log)
    fold = pipeline.model / "fold_1"
    assert not list(fold.glob("checkpoint_*.pth"))
    assert "Epoch 0" not in log.read_text()

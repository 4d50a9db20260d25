"""nnU-Net route of the evaluation: the real ``nnUNetv2_train`` / ``nnUNetv2_predict`` per cell.

Given a raw dataset (planned and preprocessed once), a plans variant with the pretrained
architecture and, for the pretrained arm, exported weights, a cell

1. writes its split as ``splits_final.json`` fold 0 (train = the budget's cases, val = the first
   ``n_val`` held-out test cases: nnU-Net needs a validation set; the final checkpoint is used, so
   nothing is selected on it);
2. runs ``nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainerSSL_5epochs`` (pretrained, weights via
   ``nnUNet_SSL_pretrained``; ``nnUNetTrainerSSLSawtooth_5epochs`` with ``nnunet.schedule: sawtooth``) or
   ``nnUNetTrainerScratch_5epochs`` with the budget in ``nnUNet_SSL_epochs`` / ``_iterations`` / ``_lr`` /
   ``_scratch_lr`` / ``_warmup_epochs`` (same numbers for both arms);
3. predicts the held-out test images with ``nnUNetv2_predict`` and scores Dice.

Each cell has its own ``nnUNet_results`` folder, so cells never overwrite each other's models. The
split file lives in the shared preprocessed folder: cells of one dataset run one at a time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from monai_ssl_plugin.checkpoint import atomic_write_text
from monai_ssl_plugin.engine.probes import dice_scores, mean_dice
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.evaluation.cases import N_CLASSES, LabelledCases
from monai_ssl_plugin.evaluation.guard import SCHEDULE_TRAINERS, SCRATCH_TRAINER
from monai_ssl_plugin.evaluation.protocol import NnUNetRouteSpec
from monai_ssl_plugin.export.nnunet import export_nnunet
from monai_ssl_plugin.nnunet.plans import write_plans_variant
from monai_ssl_plugin.nnunet_paths import RESULTS, environment, preprocessed_dataset_dir
from monai_ssl_plugin.workflows.nnunet_commands import run_nnunet

CONFIGURATION = "3d_fullres"


def prepare_plans(dataset_id: int, env: dict[str, str], backbone: str, patch_size: Sequence[int], batch_size: int,
                  log_file: Path) -> str:
    """Plan and preprocess (once) and write the plans variant of ``backbone``; returns its identifier."""
    with environment(env):  # the plans writer resolves the dataset through these
        try:
            planned = (preprocessed_dataset_dir(dataset_id) / "nnUNetPlans.json").is_file()
        except PluginError:  # not preprocessed yet
            planned = False
        if not planned:
            run_nnunet(["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", CONFIGURATION, "-np", "1", "-npfp", "1",
                        "--verify_dataset_integrity"], env, log_file)
        plans = write_plans_variant(dataset_id, backbone=backbone, configuration=CONFIGURATION,
                                    patch_size=list(patch_size), batch_size=batch_size, log=None)
    return plans.stem


def export_weights(checkpoint: Path, dataset_id: int, plans_id: str, env: dict[str, str], output_file: Path) -> Path:
    """The nnU-Net weights file of ``checkpoint`` for the plans variant (written once, reused)."""
    if output_file.is_file():
        return output_file
    with environment(env):
        return export_nnunet(checkpoint, output_file, dataset=dataset_id, configuration=CONFIGURATION,
                             plans_identifier=plans_id)


def cell_environment(env: dict[str, str], spec: NnUNetRouteSpec, weights: Path | None, cell_dir: Path
                     ) -> dict[str, str]:
    """The cell's environment: its own results folder and the budget, the same numbers for both arms."""
    cell_env = dict(env)
    cell_env[RESULTS] = str(cell_dir / RESULTS)
    cell_env.update({"nnUNet_SSL_epochs": str(spec.epochs), "nnUNet_SSL_iterations": str(spec.iterations),
                     "nnUNet_SSL_lr": str(spec.lr), "nnUNet_SSL_scratch_lr": str(spec.lr),
                     # one process for augmentation and for validation export: nnU-Net's defaults spawn
                     # many workers, which on a small shared CPU cost minutes of start-up per cell
                     "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"})
    for name, value in (("nnUNet_SSL_warmup_epochs", spec.warmup_epochs),
                        ("nnUNet_SSL_decoder_epochs", spec.decoder_epochs)):
        if value is None:
            cell_env.pop(name, None)
        else:
            cell_env[name] = str(value)
    if weights is not None:
        cell_env["nnUNet_SSL_pretrained"] = str(weights)
    else:
        cell_env.pop("nnUNet_SSL_pretrained", None)
    return cell_env


def _link_test_images(raw: Path, test: Sequence[str], inputs: Path) -> str:
    """Links to the held-out images in a folder of their own; returns the dataset's file ending."""
    ending = json.loads((raw / "dataset.json").read_text()).get("file_ending", ".nii.gz")
    inputs.mkdir(parents=True, exist_ok=True)
    for c in test:
        link = inputs / f"{c}_0000{ending}"
        if not link.exists():
            link.symlink_to((raw / "imagesTr" / f"{c}_0000{ending}").resolve())
    return ending


def _score_predictions(cases: LabelledCases, task: str, test: Sequence[str], pred_dir: Path, ending: str
                       ) -> dict[str, Any]:
    """Dice of nnU-Net's predictions against the cases' targets (mean per case, then per class)."""
    n = N_CLASSES[task]
    per_case = []
    for c in test:
        # read like the cases (nnU-Net's reader: z, y, x); the cases are padded at the far end of each axis
        seg, _ = SimpleITKIO().read_seg(str(pred_dir / f"{c}{ending}"))
        pred = torch.from_numpy(np.asarray(seg[0]))
        ref = cases.segmentation_target(task, c)
        full = torch.zeros_like(ref)
        full[tuple(slice(0, s) for s in pred.shape)] = pred.long()
        pred_task = LabelledCases([c], {}, {c: full.to(torch.uint8)}, {}).segmentation_target(task, c)
        per_case.append(dice_scores(pred_task, ref, n))
    per_class = [[row[k] for row in per_case if row[k] == row[k]] for k in range(n - 1)]
    return {"dice": mean_dice(per_case), "dice_per_class": [float(sum(v) / len(v)) if v else float("nan") for v in per_class],
            "n_test_scored": len(per_case)}


def run_cell(cases: LabelledCases, task: str, raw: Path, dataset_id: int, plans_id: str, env: dict[str, str],
             train: Sequence[str], test: Sequence[str], spec: NnUNetRouteSpec, weights: Path | None, cell_dir: Path,
             log_file: Path) -> dict[str, Any]:
    """Train (one arm), predict the test cases, return Dice. ``weights`` None = from scratch; the
    pretrained arm runs the trainer of ``spec.schedule``."""
    t0 = time.time()
    trainer = SCRATCH_TRAINER if weights is None else SCHEDULE_TRAINERS[spec.schedule]
    cell_env = cell_environment(env, spec, weights, cell_dir)
    with environment(env):
        pre = preprocessed_dataset_dir(dataset_id)
    split = [{"train": sorted(train), "val": sorted(test)[:max(1, spec.n_val)]}]
    atomic_write_text(json.dumps(split, indent=2), pre / "splits_final.json")
    run_nnunet(["nnUNetv2_train", dataset_id, CONFIGURATION, "0", "-tr", trainer, "-p", plans_id, "-device", "cpu"],
               cell_env, log_file)
    inputs, pred_dir = cell_dir / "test_images", cell_dir / "predictions"
    ending = _link_test_images(raw, test, inputs)
    run_nnunet(["nnUNetv2_predict", "-i", inputs, "-o", pred_dir, "-d", dataset_id, "-c", CONFIGURATION, "-f", "0",
                "-tr", trainer, "-p", plans_id, "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"],
               cell_env, log_file)
    return {**_score_predictions(cases, task, test, pred_dir, ending), "trainer": trainer, "plans": plans_id,
            "init": str(weights) if weights else "random",
            "budget": {"epochs": spec.epochs, "iterations_per_epoch": spec.iterations, "peak_lr": spec.lr},
            "seconds": round(time.time() - t0, 1)}

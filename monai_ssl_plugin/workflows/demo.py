"""The README's main job: from an embedded cohort to an nnU-Net model fine-tuned from SSL weights.

Steps (each prints where its artifacts went):
  1. write the MNI152-based demo cohort as an nnU-Net raw dataset (no download);
  2. ``nnUNetv2_plan_and_preprocess``, then a plans variant with a CPU-sized architecture;
  3. masked-image-modelling pretraining with the ``mae_ssl_pretraining`` bundle on every image
     (labelled + unlabelled), preprocessed on the fly with the variant's plans;
  4. export to the place the plugin's nnU-Net trainers look;
  5. fine-tune with few labels (``-tr nnUNetTrainerSSL_5epochs``, budget set by ``finetune_epochs``
     × ``finetune_iterations``) and, on the same plans, split and budget, the from-scratch twin
     (``-tr nnUNetTrainerScratch_5epochs``);
  6. ``nnUNetv2_predict`` on the held-out test subjects and Dice against their labels.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from monai_ssl_plugin.workflows.nnunet_commands import nnunet_environment, run_nnunet

DATASET_ID = 501
CONFIGURATION = "3d_fullres"
BACKBONE = "nnunet_plain_small"


def few_label_split(case_ids: list[str], n_train: int, n_val: int, seed: int) -> list[dict[str, list[str]]]:
    """One nnU-Net fold that trains on ``n_train`` labelled cases (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    order = [case_ids[i] for i in rng.permutation(len(case_ids))]
    return [{"train": sorted(order[:n_train]), "val": sorted(order[n_train:n_train + n_val])}]


def dice_per_class(pred: np.ndarray, ref: np.ndarray, labels: list[int]) -> dict[int, float]:
    out = {}
    for c in labels:
        p, r = pred == c, ref == c
        denom = p.sum() + r.sum()
        out[c] = float(2 * np.logical_and(p, r).sum() / denom) if denom else float("nan")
    return out


def mean_dice(pred_dir: Path, label_dir: Path, labels: list[int]) -> float:
    import nibabel as nib

    scores = []
    for ref_file in sorted(label_dir.glob("*.nii.gz")):
        pred = np.asarray(nib.load(pred_dir / ref_file.name).dataobj)
        ref = np.asarray(nib.load(ref_file).dataobj)
        scores.append(np.nanmean(list(dice_per_class(pred, ref, labels).values())))
    return float(np.mean(scores))


def run_demo(output_dir: str | Path = "demo_output", device: str = "auto", seed: int = 0, n_train_labels: int = 4,
             pretrain_epochs: int = 3, pretrain_epoch_length: int = 40, patch_size: int = 48,
             finetune_epochs: int = 4, finetune_iterations: int = 40, finetune_lr: float = 1e-2,
             trainers: tuple[str, str] = ("nnUNetTrainerSSL_5epochs", "nnUNetTrainerScratch_5epochs")) -> dict:
    """Run the whole demo; returns (and writes ``summary.json``) the artifact paths and Dice scores."""
    import os

    import torch

    from monai_ssl_plugin.data.demo_cohort import make_demo_dataset
    from monai_ssl_plugin.engine.run import auto_device, pretrain
    from monai_ssl_plugin.export.nnunet import export_nnunet
    from monai_ssl_plugin.nnunet.plans import write_plans_variant

    t_start = time.time()
    out = Path(output_dir).resolve()
    env = nnunet_environment(out)
    # fine-tuning budget and peak lr for both arms (the trainers read these; same numbers => the twins differ
    # only in their initialisation). The published 1e-3 for pretrained weights assumes 1000 epochs; a few
    # epochs on a CPU need nnU-Net's 1e-2 to move at all.
    env.update({"nnUNet_SSL_epochs": str(finetune_epochs), "nnUNet_SSL_iterations": str(finetune_iterations),
                "nnUNet_SSL_lr": str(finetune_lr), "nnUNet_SSL_scratch_lr": str(finetune_lr)})
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")})
    dev = auto_device(None if device == "auto" else device)
    log = out / "logs" / "nnunet_commands.log"
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.time() - t0, 1)
        print(f"[demo] {name} done in {timings[name]:.0f} s (total {time.time() - t_start:.0f} s)", flush=True)

    print(f"[demo] output in {out}; device {dev}; nnU-Net commands logged to {log}", flush=True)
    t0 = time.time()
    raw = make_demo_dataset(env["nnUNet_raw"], dataset_id=DATASET_ID, seed=seed)
    step("1 demo cohort", t0)

    t0 = time.time()
    pre = Path(env["nnUNet_preprocessed"]) / raw.name
    if not (pre / "nnUNetPlans.json").is_file():
        run_nnunet(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", CONFIGURATION, "-np", "2",
                    "--verify_dataset_integrity"], env, log)
    plans_file = write_plans_variant(DATASET_ID, backbone=BACKBONE, configuration=CONFIGURATION,
                                     patch_size=[patch_size] * 3, batch_size=2)
    plans_id = plans_file.stem
    step("2 plan and preprocess", t0)

    t0 = time.time()
    ckpt_dir = out / "pretraining"
    ckpt = pretrain("mae_ssl_pretraining", dataset_dir=raw, output_dir=ckpt_dir, plans=str(plans_file),
                    configuration=CONFIGURATION, patch_size=[patch_size] * 3, batch_size=2,
                    **{"train#trainer#max_epochs": pretrain_epochs, "train#epoch_length": pretrain_epoch_length,
                       "device": str(dev), "seed": seed})
    step("3 pretraining", t0)

    t0 = time.time()
    exported = export_nnunet(ckpt, None, dataset=DATASET_ID, configuration=CONFIGURATION, plans_identifier=plans_id)
    step("4 export", t0)

    t0 = time.time()
    labelled = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    split = few_label_split(labelled, n_train_labels, n_val=2, seed=seed)
    (pre / "splits_final.json").write_text(json.dumps(split, indent=2))
    labels = [int(v) for k, v in json.loads((raw / "dataset.json").read_text())["labels"].items() if k != "background"]
    results: dict[str, dict] = {}
    nn_device = "cuda" if dev.type == "cuda" else "cpu"
    for trainer in trainers:
        t1 = time.time()
        run_nnunet(["nnUNetv2_train", DATASET_ID, CONFIGURATION, "0", "-tr", trainer, "-p", plans_id,
                    "-device", nn_device], env, log)
        pred_dir = out / "predictions" / trainer
        run_nnunet(["nnUNetv2_predict", "-i", raw / "imagesTs", "-o", pred_dir, "-d", DATASET_ID, "-c", CONFIGURATION,
                    "-f", "0", "-tr", trainer, "-p", plans_id, "-device", nn_device, "-npp", "1", "-nps", "1"], env, log)
        results[trainer] = {"dice": mean_dice(pred_dir, raw / "labelsTs", labels), "predictions": str(pred_dir),
                            "model": str(Path(env["nnUNet_results"]) / raw.name / f"{trainer}__{plans_id}__{CONFIGURATION}"),
                            "minutes": round((time.time() - t1) / 60, 1)}
        print(f"[demo] {trainer}: mean Dice on {len(list((raw / 'labelsTs').glob('*.nii.gz')))} test subjects = "
              f"{results[trainer]['dice']:.3f}", flush=True)
    step("5-6 fine-tune, predict, Dice", t0)

    summary = {"dataset": str(raw), "preprocessed": str(pre), "plans": str(plans_file), "pretraining_run": str(ckpt_dir),
               "checkpoint": str(ckpt), "nnunet_weights": str(exported), "labelled_cases_used": n_train_labels,
               "finetune_budget": {"epochs": finetune_epochs, "iterations_per_epoch": finetune_iterations,
                                   "peak_lr": finetune_lr},
               "results": results, "timings_s": timings, "total_minutes": round((time.time() - t_start) / 60, 1),
               "device": str(dev), "torch": torch.__version__}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    ssl, scratch = (results[t]["dice"] for t in trainers)
    print("\n[demo] artifacts")
    for key in ("dataset", "preprocessed", "plans", "pretraining_run", "checkpoint", "nnunet_weights"):
        print(f"  {key:16s} {summary[key]}")
    for t in trainers:
        print(f"  {t:16s} {results[t]['model']}")
    print(f"  summary          {out / 'summary.json'}")
    print(f"\n[demo] {n_train_labels} labelled training cases: Dice SSL {ssl:.3f} vs scratch {scratch:.3f} "
          f"({summary['total_minutes']} min in total)")
    return summary

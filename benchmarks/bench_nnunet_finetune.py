"""Pretrained vs from-scratch twin in nnU-Net on the demo cohort: same plans, same budget, several seeds.

    python benchmarks/bench_nnunet_finetune.py --output_dir bench_out                # 2 seeds, 3 epochs x 50 its
    python benchmarks/bench_nnunet_finetune.py --seeds 0 1 2 --epochs 3 --n_train_labels 4 --lr 1e-2

Steps (the real nnU-Net commands, run as subprocesses; everything logged to ``<output>/logs``):

1. the demo cohort (MNI152-based brain T1, 12 labelled + 24 unlabelled + 4 test subjects at 2 mm;
   ``monai_ssl_plugin.data.demo_cohort.make_demo_dataset``) as ``Dataset501_MNIBrainTissue``;
2. ``nnUNetv2_plan_and_preprocess``, then a plans variant with ``nnunet_plain_small`` at 48³ (batch 2);
3. route (a): the ``mae_ssl_pretraining`` bundle on every image (labelled + unlabelled, preprocessed on
   the fly with the variant's plans), once, then export to the dataset;
4. per seed s: fold s of ``splits_final.json`` trains on ``--n_train_labels`` labelled cases (validation
   on 2 others; a different random choice per seed), then both arms on that fold with the same plans
   (``-p`` identical), the same number of epochs and iterations:
   ``nnUNetTrainerSSL_5epochs`` (pretrained) and ``nnUNetTrainerScratch_5epochs`` (random init), with
   ``nnUNet_SSL_epochs`` = ``--epochs`` and the same peak lr ``--lr`` for both (``nnUNet_SSL_lr`` =
   ``nnUNet_SSL_scratch_lr``; default 1e-2: the published 1e-3 for pretrained weights assumes 1000
   epochs, and a few epochs need nnU-Net's 1e-2 to move at all; ``--lr 0`` keeps the trainers' defaults);
5. ``nnUNetv2_predict`` on the 4 held-out test subjects, mean Dice (grey + white matter) per arm.

Writes ``<output>/bench_nnunet_finetune.json`` and prints a markdown table (per seed; mean ± sd of each
arm and of the paired difference) with the wall time of each step and each run's training time (sum of nnU-Net's epoch
times). The same plans for both arms are asserted from the two model folders' ``plans.json``
(``assert_twin_plans``). Resumable: finished steps (plans, pretraining, trained folds, their predictions) are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

DATASET_ID, CONFIGURATION, BACKBONE = 501, "3d_fullres", "nnunet_plain_small"
ARMS = {"pretrained": "nnUNetTrainerSSL_5epochs", "scratch": "nnUNetTrainerScratch_5epochs"}


def epoch_seconds(fold_dir: Path) -> float:
    """Sum of nnU-Net's ``Epoch time: X s`` lines over the fold's training logs (training, not validation)."""
    total = 0.0
    for log_file in fold_dir.glob("training_log_*.txt"):
        for line in log_file.read_text().splitlines():
            if "Epoch time:" in line:
                total += float(line.split("Epoch time:")[1].split("s")[0])
    return total


def predictions_current(pred_dir: Path, label_dir: Path, checkpoint: Path) -> bool:
    """True when every test case has a prediction written after the model's final checkpoint (resumable runs)."""
    if not checkpoint.is_file():
        return False
    files = [pred_dir / ref.name for ref in label_dir.glob("*.nii.gz")]
    return bool(files) and all(f.is_file() and f.stat().st_mtime > checkpoint.stat().st_mtime for f in files)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="bench_nnunet_finetune_out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of both arms (nnUNet_SSL_epochs)")
    parser.add_argument("--iterations", type=int, default=50, help="iterations per epoch (nnUNet_SSL_iterations)")
    parser.add_argument("--n_train_labels", type=int, default=4)
    parser.add_argument("--patch_size", type=int, default=48)
    parser.add_argument("--pretrain_epochs", type=int, default=3)
    parser.add_argument("--pretrain_epoch_length", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-2,
                        help="peak lr of both arms (0: the trainers' defaults, 1e-3 pretrained / 1e-2 scratch)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch

    from monai_ssl_plugin.checkpoint import atomic_write_text
    from monai_ssl_plugin.data.demo_cohort import make_demo_dataset
    from monai_ssl_plugin.engine.run import pretrain
    from monai_ssl_plugin.export.nnunet import export_nnunet
    from monai_ssl_plugin.nnunet.plans import assert_twin_plans, plans_fingerprint, write_plans_variant
    from monai_ssl_plugin.workflows.demo import few_label_split, mean_dice
    from monai_ssl_plugin.workflows.nnunet_commands import nnunet_environment, run_nnunet

    t_start = time.time()
    out = Path(args.output_dir).resolve()
    env = nnunet_environment(out)
    env.update({"nnUNet_SSL_epochs": str(args.epochs), "nnUNet_SSL_iterations": str(args.iterations),
                "OMP_WAIT_POLICY": env.get("OMP_WAIT_POLICY", "PASSIVE")})  # idle threads yield on a shared CPU
    if args.lr > 0:  # same peak lr for both arms: the twins then differ only in their initialisation
        env.update({"nnUNet_SSL_lr": str(args.lr), "nnUNet_SSL_scratch_lr": str(args.lr)})
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")})
    log = out / "logs" / "nnunet_commands.log"
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.time() - t0, 1)
        print(f"[bench] {name}: {timings[name]:.0f} s (total {(time.time() - t_start) / 60:.1f} min)", flush=True)

    t0 = time.time()
    raw = make_demo_dataset(env["nnUNet_raw"], dataset_id=DATASET_ID, seed=0)
    pre = Path(env["nnUNet_preprocessed"]) / raw.name
    if not (pre / "nnUNetPlans.json").is_file():
        run_nnunet(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", CONFIGURATION, "-np", "2"], env, log)
    plans_file = write_plans_variant(DATASET_ID, backbone=BACKBONE, configuration=CONFIGURATION,
                                     patch_size=[args.patch_size] * 3, batch_size=2, log=None)
    plans_id = plans_file.stem
    step("cohort + plan + preprocess", t0)

    t0 = time.time()
    ckpt = out / "pretraining" / "checkpoints" / "final.pt"
    if not ckpt.is_file():
        ckpt = pretrain("mae_ssl_pretraining", dataset_dir=raw, output_dir=out / "pretraining", plans=str(plans_file),
                        configuration=CONFIGURATION, patch_size=[args.patch_size] * 3, batch_size=2,
                        **{"train#trainer#max_epochs": args.pretrain_epochs,
                           "train#epoch_length": args.pretrain_epoch_length, "device": args.device, "seed": 0,
                           "quiet": True})
    export_nnunet(ckpt, dataset=DATASET_ID, configuration=CONFIGURATION, plans_identifier=plans_id)
    step("pretraining + export", t0)

    labelled = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    splits = [few_label_split(labelled, args.n_train_labels, n_val=2, seed=s)[0] for s in args.seeds]
    atomic_write_text(json.dumps(splits, indent=2), pre / "splits_final.json")
    labels = [int(v) for k, v in json.loads((raw / "dataset.json").read_text())["labels"].items() if k != "background"]
    rows = []
    for fold, seed in enumerate(args.seeds):
        row = {"seed": seed, "fold": fold, "train_cases": splits[fold]["train"]}
        for arm, trainer in ARMS.items():
            t0 = time.time()
            device = "cpu" if args.device == "cpu" else "cuda"
            model = Path(env["nnUNet_results"]) / raw.name / f"{trainer}__{plans_id}__{CONFIGURATION}"
            fold_dir = model / f"fold_{fold}"
            # resumable: a finished run is kept; a run that trained but did not validate only validates
            if not (fold_dir / "validation" / "summary.json").is_file():
                extra = ["--val"] if (fold_dir / "checkpoint_final.pth").is_file() else []
                run_nnunet(["nnUNetv2_train", DATASET_ID, CONFIGURATION, fold, "-tr", trainer, "-p", plans_id,
                            "-device", device, *extra], env, log)
            pred_dir = out / "predictions" / f"{arm}_seed{seed}"
            if not predictions_current(pred_dir, raw / "labelsTs", fold_dir / "checkpoint_final.pth"):
                run_nnunet(["nnUNetv2_predict", "-i", raw / "imagesTs", "-o", pred_dir, "-d", DATASET_ID, "-c",
                            CONFIGURATION, "-f", fold, "-tr", trainer, "-p", plans_id, "-device", device, "-npp",
                            "1", "-nps", "1", "--disable_progress_bar"], env, log)
            row[arm] = mean_dice(pred_dir, raw / "labelsTs", labels)
            row[f"{arm}_train_min"] = round(epoch_seconds(fold_dir) / 60, 1)  # from nnU-Net's own log
            step(f"seed {seed} {arm}: Dice {row[arm]:.3f} ({row[f'{arm}_train_min']} min of training epochs)", t0)
        rows.append(row)

    models = {arm: Path(env["nnUNet_results"]) / raw.name / f"{trainer}__{plans_id}__{CONFIGURATION}"
              for arm, trainer in ARMS.items()}
    assert_twin_plans(models["pretrained"] / "plans.json", models["scratch"] / "plans.json")
    diffs = [r["pretrained"] - r["scratch"] for r in rows]
    summary = {
        "setup": {"dataset": raw.name, "plans": plans_id, "plans_fingerprint": plans_fingerprint(plans_file),
                  "patch_size": [args.patch_size] * 3, "fine_tuning": f"{args.epochs} epochs x {args.iterations} "
                  f"iterations, batch 2", "peak_lr": args.lr if args.lr > 0 else "trainer defaults",
                  "train_labels": args.n_train_labels, "test_subjects": 4,
                  "pretraining": f"MAE, {args.pretrain_epochs} x {args.pretrain_epoch_length} iterations, batch 2, "
                                 "all 36 training images", "arms": ARMS, "device": args.device,
                  "cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
        "rows": rows, "mean": {arm: statistics.mean(r[arm] for r in rows) for arm in ARMS},
        "sd": {arm: statistics.stdev(r[arm] for r in rows) if len(rows) > 1 else None for arm in ARMS},
        "mean_difference": statistics.mean(diffs), "sd_difference": statistics.stdev(diffs) if len(diffs) > 1 else None,
        "timings_s": timings, "total_min": round((time.time() - t_start) / 60, 1),
        "command": "python benchmarks/bench_nnunet_finetune.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    atomic_write_text(json.dumps(summary, indent=2), out / "bench_nnunet_finetune.json")
    print("\n| seed | labelled training cases | pretrained Dice | scratch Dice | difference |")
    print("| --- | --- | --- | --- | --- |")
    for r, d in zip(rows, diffs):
        cases = ", ".join(r["train_cases"])
        print(f"| {r['seed']} | {cases} | {r['pretrained']:.3f} | {r['scratch']:.3f} | {d:+.3f} |")
    def pm(mean: float, sd: float | None, fmt: str = ".3f") -> str:
        return f"{mean:{fmt}}" + (f" ± {sd:.3f}" if sd is not None else "")

    print(f"| mean ± sd | | {pm(summary['mean']['pretrained'], summary['sd']['pretrained'])} | "
          f"{pm(summary['mean']['scratch'], summary['sd']['scratch'])} | "
          f"{pm(summary['mean_difference'], summary['sd_difference'], '+.3f')} |")
    print(f"\n{summary['total_min']} min in total; {json.dumps(timings)}")
    return summary


if __name__ == "__main__":
    main()

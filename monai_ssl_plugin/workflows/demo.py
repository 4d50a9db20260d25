"""The README's main job: SSL weights make a few-label nnU-Net model better, shown on an embedded cohort.

Steps (each prints where its artifacts went):
  1. write the demo cohort (MNI152-based brain MRI with T1/T2/FLAIR-like contrasts and thick
     slices; no download) as an nnU-Net raw dataset;
  2. ``nnUNetv2_plan_and_preprocess``, then a plans variant with a CPU-sized architecture;
  3. a short live pretraining with the recommended pretext's bundle for this problem
     (``monai-ssl recommend --modality MRI --task segmentation --n_labelled 4 --n_unlabelled 40``:
     Models Genesis, whose non-linear intensity corruption teaches exactly the contrast changes
     this cohort has); it shows the bundle running on these scans, but a minute of CPU cannot
     make weights worth fine-tuning;
  4. the bundle's shipped weights (``models/model.pt``: the same bundle run long on the same
     cohort by :func:`make_demo_weights`, sha256-verified) exported to where the plugin's nnU-Net
     trainers look;
  5. few-label fine-tuning at each label budget, the SSL arm and its from-scratch twin on the same
     plans, cases, budget and seed (``nnUNet_SSL_seed``); the twins differ only in initialisation
     and in the fine-tuning recipe each initialisation is meant for (:data:`FINETUNE`);
  6. ``nnUNetv2_predict`` on the held-out test subjects and Dice against their labels.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from monai_ssl_plugin.data.demo_cohort import make_demo_dataset
from monai_ssl_plugin.data.synthetic import make_synthetic_dataset
from monai_ssl_plugin.engine.run import auto_device, bundle_dir, pretrain
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.nnunet import export_nnunet
from monai_ssl_plugin.nnunet.env import ENV_EXT_TRAINER
from monai_ssl_plugin.nnunet.plans import write_plans_variant
from monai_ssl_plugin.nnunet_paths import PATH_VARS, PREPROCESSED, RAW, dataset_folder, env_root
from monai_ssl_plugin.workflows.few_label import (CONFIGURATION, RunResult, as_records, finetune_and_score,
                                                  label_budget_folds, paired_gains, write_splits)
from monai_ssl_plugin.workflows.nnunet_commands import nnunet_environment, run_nnunet
from monai_ssl_plugin.workflows.shipped_weights import verified_model_file, write_shipped_weights

DATASET_ID = 501
BUNDLE = "models_genesis_ssl_pretraining"  # the recommender's first choice for this cohort (see above)
# The protocol, fixed before any fine-tuning setting was chosen (docs/payoff.md says which runs chose them).
DEMO_COHORT = dict(dataset_id=DATASET_ID, n_labelled=12, n_unlabelled=40, n_test=8, spacing=2.0, seed=0,
                   contrasts=("T1", "T2", "FLAIR"), thick_slice_fraction=0.3)
# The second cohort, run with the same protocol and not tuned on (docs/payoff.md): the synthetic CT generator's
# ellipsoid organs and bone in Hounsfield units, so nnU-Net plans CT normalisation.
CT_COHORT = dict(dataset_id=502, name="SyntheticCT", n_labelled=12, n_unlabelled=40, n_test=8, shape=(64, 64, 64),
                 spacing=(2.0, 2.0, 2.0), modality="CT", seed=0)
COHORTS = {"mri": DEMO_COHORT, "ct": CT_COHORT}
PLANS = dict(backbone="nnunet_plain_small", patch_size=[48, 48, 48], batch_size=2)
N_VAL = 4  # per seed, labelled cases outside every budget's training set: nnU-Net's validation (and tuning) cases
TRAINERS = ("nnUNetTrainerSSL_5epochs", "nnUNetTrainerScratch_5epochs")
PROTOCOL_BUDGETS, PROTOCOL_SEEDS = (4, 1), (0, 1, 2)  # the demo runs seed 0; bench_payoff.py all three
# Fine-tuning budget and recipe (environment variables the plugin's trainers read): the same budget and
# peak rate for both arms; the SSL arm loads the pretrained stem + encoder only, its decoder starts fresh
# like the scratch arm's (as nnssl and nnU-Net's PretrainedTrainer do; docs/payoff.md has the run that chose it).
FINETUNE = {"nnUNet_SSL_epochs": "4", "nnUNet_SSL_iterations": "40", "nnUNet_SSL_lr": "1e-2",
            "nnUNet_SSL_scratch_lr": "1e-2", "nnUNet_SSL_load": "encoder", "nnUNet_n_proc_DA": "0"}


def _step(timings: dict, name: str, t0: float, t_start: float) -> None:
    timings[name] = round(time.time() - t0, 1)
    print(f"[demo] {name} done in {timings[name]:.0f} s (total {time.time() - t_start:.0f} s)", flush=True)


def write_cohort(raw_root: str | Path, cohort: str = "mri") -> Path:
    """The raw dataset of ``cohort`` (``mri``: the demo cohort; ``ct``: :data:`CT_COHORT`)."""
    if cohort not in COHORTS:
        raise PluginError(f"cohort {cohort!r} is not a choice.", f"Use one of: {', '.join(COHORTS)}.")
    if cohort == "ct":
        return make_synthetic_dataset(raw_root, **CT_COHORT)
    return make_demo_dataset(raw_root, **DEMO_COHORT)


def prepare_dataset(env: dict, log: Path, cohort: str = "mri") -> tuple[Path, Path]:
    """Cohort (step 1) and plans (step 2); returns the raw dataset folder and the plans variant file."""
    raw = write_cohort(env_root(RAW, env), cohort)
    dataset_id = COHORTS[cohort]["dataset_id"]
    if not (dataset_folder(PREPROCESSED, raw.name, env) / "nnUNetPlans.json").is_file():
        plan_env = {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}  # planning sets torch threads to it
        run_nnunet(["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", CONFIGURATION, "-np", "2",
                    "--verify_dataset_integrity"], plan_env, log)
    plans = write_plans_variant(dataset_id, configuration=CONFIGURATION, **PLANS)
    return raw, plans


def pretrain_ssl(raw: Path, plans: Path, output_dir: Path, steps: int, device: str, seed: int = 0,
                 steps_per_epoch: int = 100) -> Path:
    """The demo's bundle on every imagesTr + imagesUnlabelled scan, preprocessed with ``plans`` and cropped at
    the plans' patch size and batch (so the network is exactly the one nnU-Net fine-tunes); returns final.pt."""
    per_epoch = min(steps, steps_per_epoch)
    return pretrain(BUNDLE, dataset_dir=raw, output_dir=output_dir, plans=str(plans), configuration=CONFIGURATION,
                    patch_size=PLANS["patch_size"], batch_size=PLANS["batch_size"], quiet=True,
                    **{"train#trainer#max_epochs": max(1, steps // per_epoch), "train#epoch_length": per_epoch,
                       "device": device, "seed": seed})


def make_demo_weights(output_dir: str | Path = "runs/demo_weights", steps: int = 1200, device: str = "auto",
                      bundle: str | Path | None = None) -> Path:
    """Pretrain the demo's shipped weights: cohort + plans as the demo makes them, ``steps`` pretraining steps,
    then ``<bundle>/models/model.pt`` with the command and data in its record (``large_files.yml`` updated)."""
    out = Path(output_dir).resolve()
    env = _activate(nnunet_environment(out))
    raw, plans = prepare_dataset(env, out / "logs" / "nnunet_commands.log")
    dev = str(auto_device(None if device == "auto" else device))
    final = pretrain_ssl(raw, plans, out / "pretraining", steps, dev)
    provenance = {"command": f"monai-ssl demo-weights --steps {steps}", "steps": steps,
                  "cohort": {k: list(v) if isinstance(v, tuple) else v for k, v in DEMO_COHORT.items()},
                  "pretrained_on": "imagesTr + imagesUnlabelled (never imagesTs)", "plans": PLANS, "device": dev}
    return write_shipped_weights(final, bundle_dir(bundle or BUNDLE), provenance)


def _activate(env: dict) -> dict:
    os.environ.update({k: env[k] for k in (*PATH_VARS, ENV_EXT_TRAINER)})
    return env


def export_weights(checkpoint: Path, plans: Path, env: dict, dest: Path, dataset_id: int = DATASET_ID) -> Path:
    """Export a checkpoint for the plans variant and point the SSL trainers at it (``nnUNet_SSL_pretrained``)."""
    exported = export_nnunet(checkpoint, dest, dataset=dataset_id, configuration=CONFIGURATION,
                             plans_identifier=plans.stem)
    env["nnUNet_SSL_pretrained"] = str(exported)
    return exported


def run_arms(env: dict, raw: Path, plans: Path, budgets: list[int], seeds: list[int], out: Path, device: str,
             log: Path, trainers: tuple[str, ...] = TRAINERS) -> list[RunResult]:
    """Every trainer at every (budget, seed) fold, scored on the test subjects; printed as they finish."""
    labelled = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    # the fold table always holds the protocol's folds, so runs of other seeds in parallel write the same file
    folds = label_budget_folds(labelled, budgets=sorted(set(budgets) | set(PROTOCOL_BUDGETS)),
                               seeds=sorted(set(seeds) | set(PROTOCOL_SEEDS)), n_val=N_VAL)
    write_splits(dataset_folder(PREPROCESSED, raw.name, env), folds)
    folds = [f for f in folds if f.budget in budgets and f.seed in seeds]
    labels = [int(v) for k, v in json.loads((raw / "dataset.json").read_text())["labels"].items() if k != "background"]
    results = []
    for fold in sorted(folds, key=lambda f: (f.seed, -f.budget)):
        for trainer in trainers:
            r = finetune_and_score(env, raw, plans.stem, trainer, fold, labels, out, device, log)
            results.append(r)
            print(f"[demo] {trainer}, {fold.budget} labelled case(s), seed {fold.seed}: test Dice "
                  f"{r.test_dice:.3f} ({r.minutes:.1f} min)", flush=True)
    return results


def run_demo(output_dir: str | Path = "demo_output", device: str = "auto", seed: int = 0,
             budgets: tuple[int, ...] = PROTOCOL_BUDGETS, live_pretraining_steps: int = 40, weights: str = "shipped") -> dict:
    """Run the whole demo; returns (and writes ``summary.json``) the artifact paths and Dice scores.

    ``weights``: ``shipped`` (the bundle's verified ``models/model.pt``) or ``live`` (fine-tune from
    this run's short pretraining, which shows how little a few CPU minutes of pretraining give).
    """
    if weights not in ("shipped", "live"):
        raise PluginError(f"weights={weights!r} is not a choice.", "Use --weights shipped or --weights live.")
    t_start, timings = time.time(), {}
    out = Path(output_dir).resolve()
    # the demo scores the test subjects only: nnU-Net's validation of the val cases would add a minute a run
    env = _activate({**nnunet_environment(out), **FINETUNE, "nnUNet_SSL_final_validation": "0"})
    dev = auto_device(None if device == "auto" else device)
    log = out / "logs" / "nnunet_commands.log"
    print(f"[demo] output in {out}; device {dev}; nnU-Net commands logged to {log}", flush=True)
    shipped = verified_model_file(bundle_dir(BUNDLE)) if weights == "shipped" else None  # refuse early

    t0 = time.time()
    raw, plans = prepare_dataset(env, log)
    _step(timings, "1-2 cohort, plan and preprocess", t0, t_start)
    t0 = time.time()
    live = pretrain_ssl(raw, plans, out / "pretraining", live_pretraining_steps, str(dev), seed)
    _step(timings, f"3 live pretraining ({live_pretraining_steps} steps)", t0, t_start)
    t0 = time.time()
    exported = export_weights(shipped or live, plans, env, out / "ssl_weights.pth")
    _step(timings, "4 export", t0, t_start)
    t0 = time.time()
    nn_device = "cuda" if dev.type == "cuda" else "cpu"
    results = run_arms(env, raw, plans, list(budgets), [seed], out, nn_device, log)
    _step(timings, "5-6 fine-tune, predict, Dice", t0, t_start)
    return _summarise(out, raw, plans, live, shipped, exported, results, timings, t_start, str(dev))


def _summarise(out: Path, raw: Path, plans: Path, live: Path, shipped: Path | None, exported: Path,
               results: list[RunResult], timings: dict, t_start: float, device: str) -> dict:
    """Write summary.json and print the artifacts and the paired verdict per budget."""
    gains = paired_gains(results, *TRAINERS)
    summary = {"dataset": str(raw), "plans": str(plans), "live_pretraining": str(live),
               "fine_tuned_from": str(shipped or live), "nnunet_weights": str(exported), "finetune_budget": FINETUNE,
               "results": as_records(results), "ssl_minus_scratch": {str(b): g for b, g in gains.items()},
               "timings_s": timings, "total_minutes": round((time.time() - t_start) / 60, 1), "device": device,
               "torch": torch.__version__}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n[demo] artifacts")
    for key in ("dataset", "plans", "live_pretraining", "fine_tuned_from", "nnunet_weights"):
        print(f"  {key:18s} {summary[key]}")
    print(f"  {'summary':18s} {out / 'summary.json'}\n")
    by = {(r.trainer, r.budget): r.test_dice for r in results}
    for budget in sorted(gains, reverse=True):
        ssl, scratch = by[(TRAINERS[0], budget)], by[(TRAINERS[1], budget)]
        verdict = "SSL better" if ssl > scratch else "SSL NOT better in this run"
        print(f"[demo] {budget} labelled case(s): Dice SSL {ssl:.3f} vs scratch {scratch:.3f} "
              f"({ssl - scratch:+.3f}: {verdict})")
    print(f"[demo] {summary['total_minutes']} min in total")
    return summary

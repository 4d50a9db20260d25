"""Does SSL pay off? The demo's protocol over several seeds: SSL arm vs from-scratch twin, paired by seed.

    python benchmarks/bench_payoff.py --output_dir runs/payoff                       # seeds 0 1 2, budgets 4 1
    python benchmarks/bench_payoff.py --weights runs/demo_weights/pretraining/checkpoints/final.pt --seeds 0 1 2 3

Same cohort, plans, budgets, fine-tuning recipe and trainers as ``monai-ssl demo``
(``monai_ssl_plugin.workflows.demo``); the pretrained arm starts from the demo bundle's (Models Genesis) shipped,
sha256-verified ``models/model.pt`` unless ``--weights`` names another checkpoint (e.g. a snapshot
of a longer or shorter pretraining, for the pay-off curve). Per (budget, seed): one fold of
``splits_final.json`` (the seed draws the training cases; budgets nested), both arms with
``nnUNet_SSL_seed`` = seed, then Dice on the 8 held-out test subjects.

Writes ``<output>/bench_payoff.json`` (every run, the paired gains, the command) and prints a
Markdown table. Resumable per run: nnU-Net's finished folds are not retrained (their final
checkpoint exists), so a killed benchmark continues where it stopped; use a new ``--output_dir``
for other ``--weights``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from monai_ssl_plugin.checkpoint import atomic_write_text
from monai_ssl_plugin.nnunet.env import ENV_EXT_TRAINER
from monai_ssl_plugin.nnunet_paths import PATH_VARS


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", default="runs/payoff")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", type=int, nargs="+", default=[4, 1])
    p.add_argument("--weights", default=None, help="checkpoint for the SSL arm (default: the shipped weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cohort", default="mri", choices=["mri", "ct"],
                   help="ct: the second cohort (synthetic CT); its SSL weights are pretrained here, the same bundle "
                        "and steps as the shipped MRI weights, unless --weights is given")
    p.add_argument("--pretrain_steps", type=int, default=1200, help="steps of that pretraining (as demo-weights)")
    return p.parse_args(argv)


def table(results: list, gains: dict[int, list[float]]) -> str:
    """Markdown: per budget, each seed's two Dice scores and the mean ± sd of the paired gain."""
    from monai_ssl_plugin.workflows.demo import TRAINERS

    by = {(r.trainer, r.budget, r.seed): r.test_dice for r in results}
    rows = ["| labelled cases | seed | SSL Dice | scratch Dice | SSL − scratch |", "| --- | --- | --- | --- | --- |"]
    for budget in sorted(gains, reverse=True):
        seeds = sorted(s for (t, b, s) in by if t == TRAINERS[0] and b == budget and (TRAINERS[1], b, s) in by)
        for seed, gain in zip(seeds, gains[budget]):
            rows.append(f"| {budget} | {seed} | {by[TRAINERS[0], budget, seed]:.3f} | "
                        f"{by[TRAINERS[1], budget, seed]:.3f} | {gain:+.3f} |")
        sd = statistics.stdev(gains[budget]) if len(gains[budget]) > 1 else 0.0
        rows.append(f"| {budget} | mean ± sd | | | **{statistics.mean(gains[budget]):+.3f} ± {sd:.3f}** "
                    f"({sum(g > 0 for g in gains[budget])}/{len(gains[budget])} positive) |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    from monai_ssl_plugin.engine.run import bundle_dir
    from monai_ssl_plugin.workflows import demo
    from monai_ssl_plugin.workflows.few_label import as_records, paired_gains
    from monai_ssl_plugin.workflows.nnunet_commands import nnunet_environment
    from monai_ssl_plugin.workflows.shipped_weights import verified_model_file

    args, t0 = parse(argv), time.time()
    out = Path(args.output_dir).resolve()
    env = {**nnunet_environment(out), **demo.FINETUNE}
    os.environ.update({k: env[k] for k in (*PATH_VARS, ENV_EXT_TRAINER)})
    log = out / "logs" / "nnunet_commands.log"
    raw, plans = demo.prepare_dataset(env, log, args.cohort)
    weights = Path(args.weights) if args.weights else None
    if weights is None and args.cohort == "mri":
        weights = verified_model_file(bundle_dir(demo.BUNDLE))
    elif weights is None:  # pretrained once on this cohort's imagesTr + imagesUnlabelled, reused when present
        weights = out / "pretraining" / "checkpoints" / "final.pt"
        if not weights.is_file():
            weights = demo.pretrain_ssl(raw, plans, out / "pretraining", args.pretrain_steps, args.device)
    demo.export_weights(weights, plans, env, out / "ssl_weights.pth", demo.COHORTS[args.cohort]["dataset_id"])
    results = demo.run_arms(env, raw, plans, args.budgets, args.seeds, out, args.device, log)
    gains = paired_gains(results, *demo.TRAINERS)
    summary = {"command": "python benchmarks/bench_payoff.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "weights": str(weights), "cohort": {k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in demo.COHORTS[args.cohort].items()},
               "finetune": demo.FINETUNE, "results": as_records(results),
               "ssl_minus_scratch": {str(b): g for b, g in gains.items()}, "minutes": round((time.time() - t0) / 60, 1),
               "load_average_at_end": os.getloadavg()}
    atomic_write_text(json.dumps(summary, indent=2), out / "bench_payoff.json")
    print(table(results, gains))
    print(f"\n{summary['minutes']} min; load average at the end {summary['load_average_at_end']}")
    return summary


if __name__ == "__main__":
    main()

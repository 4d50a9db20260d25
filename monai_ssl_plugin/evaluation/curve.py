"""The pay-off curve: SSL − scratch against pretraining steps and labelled cases, per pretext.

One pretraining run per pretext keeps snapshots at the requested steps (``keep_steps``; step 0 is
the untrained network, so its "gain" shows how far two random initialisations alone move the
score). Every snapshot and the from-scratch twin are fine-tuned on the MONAI route at every label
budget and seed of the protocol (:mod:`monai_ssl_plugin.evaluation.monai_route`), on the same
splits, and scored on the protocol's fixed held-out cases. The result is paired by seed.

It reuses the evaluation runner's dataset, splits, resumable cells and cell locks: a cell's
pretext is named ``<pretext>@<step>``. Layout of ``output_dir`` as in
:mod:`monai_ssl_plugin.evaluation.runner`, plus ``curve.json``, ``curve.md`` and
``images/curve_<task>_*.png``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from monai_ssl_plugin.checkpoint import atomic_write_text
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.evaluation.protocol import SEGMENTATION_TASKS, Protocol, load_protocol
from monai_ssl_plugin.evaluation.report import mean_std
from monai_ssl_plugin.evaluation.runner import (Cell, cached_cells, pretraining_data, prepare_run, run_cells,
                                                pretrain_once)

METRIC = {"seg": "dice", "cls": "auc"}


def metric_of(task: str) -> str:
    return METRIC["seg" if task in SEGMENTATION_TASKS else "cls"]


def curve_protocol(config: str | Path, steps: list[int]) -> Protocol:
    """The protocol with its pretraining as long as the last step and snapshots kept at every step."""
    steps = sorted(set(int(s) for s in steps))
    if len(steps) < 2 or steps[0] != 0 or steps[-1] < 1:
        raise PluginError(f"steps {steps} do not start at 0 and reach a positive step.",
                          "Pass e.g. --steps 0 100 300 900 (0 is the untrained network).")
    p = load_protocol(config)
    p.routes = ["monai"]
    p.pretraining.iterations = steps[-1]
    for spec in p.pretexts:
        spec.overrides = {**spec.overrides, "keep_steps": steps}
    return p


def snapshots(p: Protocol, out: Path, data: Path, steps: list[int]) -> dict[str, Path]:
    """``{"<pretext>@<step>": snapshot file}`` for every pretext, pretraining (or resuming) as needed."""
    found: dict[str, Path] = {}
    for spec in p.pretexts:
        final = pretrain_once(p, spec.name, data, out, None)
        for step in steps:
            path = final.parent / f"step_{step:06d}.pt"
            if not path.is_file():
                raise PluginError(f"{final.parent} has no snapshot for step {step} (an earlier run kept other steps).",
                                  "Use a new --output_dir, or delete that pretraining folder to pretrain again.")
            found[f"{spec.name}@{step}"] = path
    return found


def plan_curve_cells(p: Protocol, budgets: list[int], arms: list[str]) -> list[Cell]:
    """Every (task, arm, budget, seed) fine-tuning cell, scratch included."""
    return [Cell("monai", t, a, b, s) for t in p.tasks for s in p.seeds for b in budgets for a in [*arms, "scratch"]]


def paired_gains(results: dict[str, dict[str, Any]], task: str, arm: str, budget: int, seeds: list[int]
                 ) -> list[float]:
    """SSL − scratch of ``metric_of(task)`` per seed where both cells have a finite value."""
    metric = metric_of(task)
    gains = []
    for s in seeds:
        ssl = results.get(Cell("monai", task, arm, budget, s).id, {}).get("metrics", {}).get(metric)
        ref = results.get(Cell("monai", task, "scratch", budget, s).id, {}).get("metrics", {}).get(metric)
        if ssl is not None and ref is not None and ssl == ssl and ref == ref:
            gains.append(float(ssl) - float(ref))
    return gains


def summarise_curve(p: Protocol, results: dict[str, dict[str, Any]], budgets: list[int], steps: list[int]
                    ) -> dict[str, Any]:
    """``{task: {"metric", "scratch": {budget: [m, sd, n]}, "gain": {pretext: {step: {budget: {...}}}}}}``."""
    curve: dict[str, Any] = {}
    for task in p.tasks:
        metric = metric_of(task)
        scratch = {b: [results.get(Cell("monai", task, "scratch", b, s).id, {}).get("metrics", {}).get(metric, float("nan"))
                       for s in p.seeds] for b in budgets}
        gain: dict[str, Any] = {}
        for spec in p.pretexts:
            gain[spec.name] = {}
            for step in steps:
                gain[spec.name][step] = {}
                for b in budgets:
                    g = paired_gains(results, task, f"{spec.name}@{step}", b, list(p.seeds))
                    m, sd, n = mean_std(g)
                    gain[spec.name][step][b] = {"mean": m, "sd": sd, "n": n, "positive": sum(x > 0 for x in g),
                                                "per_seed": g}
        curve[task] = {"metric": metric, "scratch": {b: list(mean_std(v)) for b, v in scratch.items()}, "gain": gain}
    return curve


def _cell(g: dict[str, Any]) -> str:
    if g["n"] == 0:
        return "–"
    return f"{g['mean']:+.3f} ± {g['sd']:.3f} ({g['positive']}/{g['n']})"


def curve_markdown(p: Protocol, curve: dict[str, Any], budgets: list[int], steps: list[int]) -> str:
    """One table per task: rows pretext × step, columns label budgets; SSL − scratch mean ± sd (positive/seeds)."""
    paradigm = {x.name: x.paradigm for x in p.pretexts}
    lines = [f"# Pay-off curve: {p.name}", "",
             "SSL − scratch, mean ± sd over seeds (seeds where SSL was ahead / seeds), paired by seed; "
             "step 0 is the untrained network (the spread two random initialisations give).", ""]
    for task, c in curve.items():
        lines += [f"## {task} ({c['metric']})", "",
                  "| pretext (paradigm) | pretraining steps | " + " | ".join(f"{b} labelled" for b in budgets) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in budgets) + " |"]
        lines.append("| scratch (absolute) | – | " + " | ".join(
            f"{m:.3f} ± {sd:.3f}" if n else "–" for m, sd, n in (c["scratch"][b] for b in budgets)) + " |")
        for name, by_step in c["gain"].items():
            for step in steps:
                lines.append(f"| {name} ({paradigm[name]}) | {step} | "
                             + " | ".join(_cell(by_step[step][b]) for b in budgets) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_curve(curve: dict[str, Any], budgets: list[int], steps: list[int], images: Path) -> list[Path]:
    """Per task: gain against pretraining steps (one panel per budget) and against labelled cases (last step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images.mkdir(parents=True, exist_ok=True)
    written = []
    for task, c in curve.items():
        fig, axes = plt.subplots(1, len(budgets), figsize=(3.2 * len(budgets), 3.0), sharey=True, squeeze=False)
        for ax, b in zip(axes[0], budgets):
            for name, by_step in c["gain"].items():
                ax.errorbar(steps, [by_step[s][b]["mean"] for s in steps], yerr=[by_step[s][b]["sd"] for s in steps],
                            marker="o", capsize=3, label=name)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_title(f"{b} labelled")
            ax.set_xlabel("pretraining steps")
        axes[0][0].set_ylabel(f"SSL − scratch ({c['metric']})")
        axes[0][-1].legend(fontsize=7)
        written.append(_save(fig, images / f"curve_{task}_steps.png"))
        fig, ax = plt.subplots(figsize=(4.2, 3.0))
        for name, by_step in c["gain"].items():
            g = by_step[steps[-1]]
            ax.errorbar(budgets, [g[b]["mean"] for b in budgets], yerr=[g[b]["sd"] for b in budgets], marker="o",
                        capsize=3, label=name)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel("labelled cases")
        ax.set_ylabel(f"SSL − scratch ({c['metric']}), {steps[-1]} steps")
        ax.legend(fontsize=7)
        written.append(_save(fig, images / f"curve_{task}_labels.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)  # nothing half-written under the final name
    return path


def payoff_curve(config: str | Path, output_dir: str | Path, steps: list[int]) -> dict[str, Any]:
    """Run (or continue) the pay-off curve of the protocol in ``config``; write curve.json, curve.md and plots."""
    t0 = time.time()
    steps = sorted(set(int(s) for s in steps))
    p = curve_protocol(config, steps)
    out = Path(output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({**p.to_dict(), "curve_steps": steps}, indent=1), out / "protocol.json")
    run = prepare_run(p, out, allow_unfair=False)
    found = snapshots(p, out, pretraining_data(run.raw, run.splits, out), steps)
    cells = plan_curve_cells(p, run.budgets, list(found))
    results = cached_cells(run, cells)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(os.environ.get("MONAI_SSL_EVAL_THREADS", "1"))))
    try:
        run_cells(run, cells, results, found, None)
    finally:
        torch.set_num_threads(threads)
    curve = summarise_curve(p, results, run.budgets, steps)
    record = {"protocol": p.to_dict(), "steps": steps, "budgets": run.budgets, "seeds": list(p.seeds),
              "test_cases": list(run.splits.test), "curve": curve, "cells_done": len(results), "cells": len(cells),
              "wall_seconds_this_call": round(time.time() - t0, 1)}
    atomic_write_text(json.dumps(record, indent=1, default=str), out / "curve.json")
    atomic_write_text(curve_markdown(p, curve, run.budgets, steps), out / "curve.md")
    record["images"] = [str(x) for x in plot_curve(curve, run.budgets, steps, out / "images")]
    return record

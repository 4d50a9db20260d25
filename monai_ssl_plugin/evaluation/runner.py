"""Run an evaluation protocol, resumably: one JSON file per finished cell.

A cell is (route, task, pretext, budget, seed); its arm is ``ssl`` for a pretext and ``scratch``
for the from-scratch twin (named ``scratch``: it does not depend on the pretext, so one scratch cell
serves every pretext's SSL - scratch delta). Routes: ``monai`` (fine-tuning), ``probe`` (frozen
features, when ``probes`` are on) and ``nnunet`` (real nnU-Net commands, segmentation tasks).

Layout of ``output_dir``::

    protocol.json  splits.json  record.json  report.md  images/*.png
    nnUNet_raw/ nnUNet_preprocessed/        the dataset (demo cohort written here)
    pretraining/<pretext>/                  the bundle's run dir (checkpoints/, tensorboard/, online_probe.json)
    cells/<cell id>.json                    one result per cell, written atomically
    cells/<cell id>.lock                    while a process computes the cell (holds its pid)
    nnunet_cells/<cell id>/                 per-cell nnUNet_results, test links, predictions
    logs/<cell id>.log                      load reports and nnU-Net output

Re-running with the same ``output_dir`` skips finished cells, resumes an interrupted pretraining
from its ``latest.pt`` and reuses finished checkpoints (shared by every cell of a pretext). A cell
interrupted mid-way left no result and is computed again from its start. Several processes may
work on one ``output_dir`` once the pretraining is done: a cell is claimed with a lock file
(created exclusively, holding the process id; a dead holder's lock is taken over), so no cell is
computed twice; a last call assembles the whole record.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.bundles import train_configs
from monai_ssl_plugin.checkpoint import atomic_save, atomic_write_text, software_versions
from monai_ssl_plugin.data.demo_cohort import make_demo_dataset
from monai_ssl_plugin.engine.run import pretrain
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.evaluation import monai_route as m
from monai_ssl_plugin.evaluation import nnunet_route
from monai_ssl_plugin.evaluation.cases import load_labelled_cases
from monai_ssl_plugin.evaluation.guard import Flag, cell_budget, enforce, pairing_flags, schedule_flags, stale_flags
from monai_ssl_plugin.evaluation.protocol import SEGMENTATION_TASKS, Protocol, load_protocol
from monai_ssl_plugin.evaluation.report import write_report
from monai_ssl_plugin.evaluation.splits import Splits, make_splits
from monai_ssl_plugin.nnunet_paths import RAW, env_root
from monai_ssl_plugin.workflows.nnunet_commands import nnunet_environment

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    route: str  # monai | probe | nnunet
    task: str
    pretext: str  # a pretext name, or "scratch"
    budget: int
    seed: int

    @property
    def arm(self) -> str:
        return "scratch" if self.pretext == "scratch" else "ssl"

    @property
    def id(self) -> str:
        return f"{self.route}__{self.task}__{self.pretext}__n{self.budget}__s{self.seed}"


def plan_cells(p: Protocol, budgets: list[int]) -> list[Cell]:
    """Every cell of the protocol, in run order (MONAI fine-tuning, probes, nnU-Net)."""
    arms = [x.name for x in p.pretexts] + ["scratch"]
    cells: list[Cell] = []
    if "monai" in p.routes:
        routes = ["monai"] + (["probe"] if (p.probes.linear or p.probes.knn or p.probes.segmentation_head) else [])
        for route in routes:
            for task in p.tasks:
                if route == "probe" and task in SEGMENTATION_TASKS and not p.probes.segmentation_head:
                    continue
                if route == "probe" and task not in SEGMENTATION_TASKS and not (p.probes.linear or p.probes.knn):
                    continue
                cells += [Cell(route, task, a, b, s) for s in p.seeds for b in budgets for a in arms]
    if "nnunet" in p.routes:
        seeds = p.nnunet.seeds if p.nnunet.seeds is not None else p.seeds
        nn_arms = [a for a in arms if p.nnunet.pretexts is None or a in p.nnunet.pretexts or a == "scratch"]
        cells += [Cell("nnunet", t, a, b, s) for t in p.nnunet.tasks if t in p.tasks for s in seeds for b in budgets
                  for a in nn_arms]
    return cells


class _CellLog:
    """Appends a cell's messages (load reports, nnU-Net output) to ``logs/<cell id>.log``."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        with open(self.path, "a") as f:
            f.write(message.rstrip() + "\n")


def prepare_dataset(p: Protocol, raw_root: Path) -> Path:
    """The raw dataset folder: the demo cohort written under ``raw_root``, or the given one linked there."""
    ds = p.dataset
    if ds.demo is not None:
        d = ds.demo
        return make_demo_dataset(raw_root, dataset_id=ds.dataset_id, name=ds.name, n_labelled=d.n_labelled,
                                 n_unlabelled=d.n_unlabelled, spacing=d.spacing, seed=d.seed, n_test=0,
                                 atrophy_fraction=d.atrophy_fraction, lesion_fraction=d.lesion_fraction,
                                 contrasts=tuple(d.contrasts), thick_slice_fraction=d.thick_slice_fraction)
    src = Path(str(ds.raw)).expanduser().resolve()
    link = raw_root / src.name
    if not link.exists():
        link.symlink_to(src, target_is_directory=True)
    return link


def pretraining_data(raw: Path, splits: Splits, out: Path) -> Path:
    """Unlabelled images for pretraining: ``imagesUnlabelled`` if the dataset has it, else links to the
    training pool's images. Test images are never pretrained on."""
    if (raw / "imagesUnlabelled").is_dir() and any((raw / "imagesUnlabelled").iterdir()):
        return raw / "imagesUnlabelled"
    folder = out / "pretraining_images"
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted((raw / "imagesTr").iterdir()):
        case = f.name.split("_0000")[0]
        if case in splits.pool and not (folder / f.name).exists():
            (folder / f.name).symlink_to(f.resolve())
    return folder


def _online_probe_handler(p: Protocol, cases: Any, splits: Splits, run_dir: Path) -> dict[str, Any] | None:
    """Config of the online probe handler over a few labelled *training-pool* cases (atrophy labels)."""
    n = min(p.pretraining.online_probe_cases, len(splits.pool))
    if p.pretraining.online_probe_every <= 0 or n < 4:
        return None
    ids = list(splits.pool[:n])
    try:
        labels = [cases.class_label("atrophy_classification", c) for c in ids]
    except PluginError:
        return None  # no attribute to probe
    probe_file = run_dir / "online_probe_set.pt"
    if not probe_file.is_file():
        atomic_save({"case_ids": ids, "images": [cases.images[c] for c in ids], "labels": torch.tensor(labels)},
                    probe_file)
    return {"_target_": "monai_ssl_plugin.engine.handlers.OnlineProbeHandler", "backbone": "@network",
            "probe_set": str(probe_file), "every_n": int(p.pretraining.online_probe_every),
            "output_dir": "@output_dir", "log_dir": "$os.path.join(@output_dir, 'tensorboard')"}


def pretrain_once(p: Protocol, name: str, data: Path, out: Path, handler: dict[str, Any] | None) -> Path:
    """The final checkpoint of pretext ``name``: reused if finished, resumed if interrupted.

    One pretraining per pretext, seeded with ``dataset.split_seed``; the run seeds vary the training
    subsets and the fine-tuning, not the pretrained weights."""
    spec = next(x for x in p.pretexts if x.name == name)
    run_dir = out / "pretraining" / name
    final = run_dir / "checkpoints" / "final.pt"
    if final.is_file():
        return final
    overrides: dict[str, Any] = {"backbone": p.backbone, "patch_size": list(p.patch_size),
                                 "batch_size": p.pretraining.batch_size, "device": p.device, "seed": p.dataset.split_seed,
                                 "quiet": True, "train#trainer#max_epochs": 1,
                                 "train#epoch_length": p.pretraining.iterations, "train#num_workers": 0}
    overrides.update({k.replace("::", "#"): v for k, v in spec.overrides.items()})
    if handler is not None:  # the bundle's own handlers plus the online probe
        parser = ConfigParser()
        parser.read_config(train_configs(spec.bundle))
        overrides["train#handlers"] = list(parser.get("train#handlers")) + [handler]
    resume = (run_dir / "checkpoints" / "latest.pt").is_file()
    logger.info("Pretraining %s (%s) -> %s%s", name, spec.bundle, run_dir, " (resuming)" if resume else "")
    return pretrain(spec.bundle, dataset_dir=data, output_dir=run_dir, resume=resume, **overrides)


def run_monai_cell(p: Protocol, cell: Cell, cases: Any, train: list[str], test: list[str], ckpt: Path | None,
                   log: Callable[[str], None]) -> dict[str, Any]:
    common = dict(backbone=p.backbone, checkpoint=ckpt, seed=cell.seed, log=log)
    seg = cell.task in SEGMENTATION_TASKS
    if cell.route == "monai" and seg:
        return m.finetune_segmentation(cases, cell.task, train, test, patch=p.patch_size, iterations=p.monai.iterations,
                                       batch_size=p.monai.batch_size, lr=p.monai.lr, **common)
    if cell.route == "monai":
        return m.finetune_classification(cases, cell.task, train, test, patch=p.patch_size,
                                         iterations=p.monai.classification_iterations, batch_size=p.monai.batch_size,
                                         lr=p.monai.lr, **common)
    if seg:
        return m.probe_segmentation(cases, cell.task, train, test, patch=p.patch_size, iterations=p.probes.head_iterations,
                                    batch_size=p.monai.batch_size, lr=p.monai.lr, **common)
    return m.probe_classification(cases, cell.task, train, test, knn_k=p.probes.knn_k, linear=p.probes.linear,
                                  knn=p.probes.knn, **common)


def _claim(lock: Path) -> bool:
    """Create ``lock`` holding this process id; False when a live process holds it (a lock left by
    a dead process is taken over). Lets several processes share one ``output_dir``."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
                os.kill(pid, 0)
                return False  # alive (or not ours to signal): someone is computing this cell
            except ProcessLookupError:
                lock.unlink(missing_ok=True)  # its process died mid-cell: compute it again
                continue
            except (ValueError, PermissionError, FileNotFoundError):
                return False
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def read_scalars(tensorboard_dir: Path, prefix: str = "") -> dict[str, list[list[float]]]:
    """``{tag: [[step, value], ...]}`` from a TensorBoard folder (tags starting with ``prefix``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tensorboard_dir.is_dir():
        return {}
    acc = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [[int(e.step), float(e.value)] for e in acc.Scalars(t)] for t in acc.Tags().get("scalars", [])
            if t.startswith(prefix)}


@dataclass
class RunState:
    """What every step of one ``evaluate`` call shares."""

    p: Protocol
    out: Path
    env: dict[str, str]
    raw: Path
    cases: Any
    budgets: list[int]
    splits: Splits
    allow_unfair: bool
    flags: list[Flag] = field(default_factory=list)


def prepare_run(p: Protocol, out: Path, allow_unfair: bool) -> RunState:
    """The dataset, the labelled cases, the budgets and the splits (``splits.json``)."""
    env = nnunet_environment(out)
    raw = prepare_dataset(p, env_root(RAW, env))
    cases = load_labelled_cases(raw, create_backbone(p.backbone).divisor())
    groups = cases.groups(p.dataset.patient_key)
    budgets = p.budget_counts(len(cases.case_ids) - p.dataset.n_test)
    seeds = p.seeds
    if "nnunet" in p.routes and p.nnunet.seeds:
        seeds = sorted(set(p.seeds) | set(p.nnunet.seeds))
    splits = make_splits(cases.case_ids, p.dataset.n_test, budgets, seeds, p.dataset.split_seed, groups)
    atomic_write_text(json.dumps({"test": list(splits.test), "pool": list(splits.pool),
                                  "train": {f"n{b}_s{s}": list(v) for (s, b), v in splits.train.items()}},
                                 indent=1), out / "splits.json")
    return RunState(p, out, env, raw, cases, budgets, splits, allow_unfair)


def _pretrain_all(run: RunState) -> dict[str, Path]:
    """Every pretext's final checkpoint (pretrained, resumed or reused); times new runs."""
    data = pretraining_data(run.raw, run.splits, run.out)
    checkpoints: dict[str, Path] = {}
    for spec in run.p.pretexts:
        run_dir = run.out / "pretraining" / spec.name
        run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        was_done = (run_dir / "checkpoints" / "final.pt").is_file()
        handler = _online_probe_handler(run.p, run.cases, run.splits, run_dir)
        checkpoints[spec.name] = pretrain_once(run.p, spec.name, data, run.out, handler)
        if not was_done:
            atomic_write_text(json.dumps({"seconds": round(time.time() - t0, 1)}), run_dir / "pretrain_time.json")
    return checkpoints


def cached_cells(run: RunState, cells: list[Cell]) -> dict[str, dict[str, Any]]:
    """The finished cells among ``cells`` (read from ``cells/<id>.json``)."""
    found = {}
    for cell in cells:
        path = run.out / "cells" / f"{cell.id}.json"
        if path.is_file():
            found[cell.id] = json.loads(path.read_text())
    return found


def _compute_cell(run: RunState, cell: Cell, checkpoints: dict[str, Path], nn_state: dict[str, Any]) -> dict[str, Any]:
    """One cell's result (the metrics of its route, the training cases, the budget it ran with)."""
    train = run.splits.training(cell.seed, cell.budget)
    ckpt = checkpoints.get(cell.pretext)
    log = _CellLog(run.out / "logs" / f"{cell.id}.log")
    test = list(run.splits.test)
    logger.info("Cell %s (%d training cases)", cell.id, len(train))
    if cell.route == "nnunet":
        metrics = _run_nnunet_cell(run.p, cell, run.cases, run.raw, run.env, train, test, ckpt, run.out, nn_state, log)
    else:
        metrics = run_monai_cell(run.p, cell, run.cases, train, test, ckpt, log)
    return {"cell": cell.id, "route": cell.route, "task": cell.task, "pretext": cell.pretext, "arm": cell.arm,
            "budget": cell.budget, "seed": cell.seed, "train_cases": train,
            "budget_settings": cell_budget(run.p, cell.route, cell.task), "metrics": metrics}


def run_cells(run: RunState, cells: list[Cell], results: dict[str, dict[str, Any]], checkpoints: dict[str, Path],
               on_cell_done: Callable[[Cell], None] | None) -> None:
    """Compute the cells not in ``results`` (each claimed with a lock, written atomically) into ``results``."""
    nn_state: dict[str, Any] = {}
    for cell in cells:
        path = run.out / "cells" / f"{cell.id}.json"
        if cell.id in results:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_suffix(".lock")
        if not _claim(lock):
            logger.info("Cell %s is being computed by another process; skipped here", cell.id)
            continue
        try:
            if path.is_file():  # finished by another process since it was looked for
                results[cell.id] = json.loads(path.read_text())
                continue
            result = _compute_cell(run, cell, checkpoints, nn_state)
            atomic_write_text(json.dumps(result, indent=1), path)
        finally:
            lock.unlink(missing_ok=True)
        results[cell.id] = result
        if on_cell_done is not None:
            on_cell_done(cell)


def _assemble_record(run: RunState, checkpoints: dict[str, Path], results: dict[str, dict[str, Any]],
                     t_start: float) -> dict[str, Any]:
    """The whole record: protocol, cells, pretraining curves, fairness flags, software versions."""
    record = {"protocol": run.p.to_dict(), "output_dir": str(run.out), "dataset": str(run.raw),
              "splits": {"test": list(run.splits.test)}, "budgets": run.budgets, "cells": results, "pretraining": {},
              "fairness": {"allow_unfair": run.allow_unfair, "flags": [f.to_dict() for f in run.flags]},
              "software": _versions()}
    for spec in run.p.pretexts:
        run_dir = run.out / "pretraining" / spec.name
        probe_file = run_dir / "online_probe.json"
        timing = run_dir / "pretrain_time.json"
        record["pretraining"][spec.name] = {
            "bundle": spec.bundle, "paradigm": spec.paradigm, "checkpoint": str(checkpoints[spec.name]),
            "loss": read_scalars(run_dir / "tensorboard", "loss").get("loss", []),
            "online_probe": json.loads(probe_file.read_text()) if probe_file.is_file() else [],
            "seconds": json.loads(timing.read_text())["seconds"] if timing.is_file() else None}
    record["wall_seconds_this_call"] = round(time.time() - t_start, 1)
    return record


def _flag(run: RunState, flags: list[Flag]) -> None:
    """Keep ``flags`` (without repeats) and refuse unless the run allows unfair comparisons."""
    run.flags += [f for f in flags if f not in run.flags]
    enforce(flags, run.allow_unfair)
    for f in flags:
        logger.warning("Not a meaningful comparison (%s route, run anyway with --allow_unfair): %s", f.route, f.reason)


def evaluate(config: str | Path, output_dir: str | Path, *, on_cell_done: Callable[[Cell], None] | None = None,
             report: bool = True, routes: list[str] | None = None, allow_unfair: bool = False) -> dict[str, Any]:
    """Run (or continue) the protocol in ``config``; write the record, the report and the plots.

    ``on_cell_done`` is called after each cell that was computed in this call (not for skipped ones).
    ``routes`` (e.g. ``["nnunet"]``; ``monai``, ``probe``, ``nnunet``) restricts this call to those
    routes' cells: calls on disjoint routes can share ``output_dir`` once the pretraining is done
    (run them one after the other, or in parallel processes), and a last call without ``routes``
    assembles the full record.
    A comparison that cannot be meaningful (see :mod:`monai_ssl_plugin.evaluation.guard`) is refused
    with a ``PluginError`` before anything runs, or, with ``allow_unfair``, run and marked in the report.
    Returns the record.
    """
    t_start = time.time()
    p = load_protocol(config)
    run_flags = schedule_flags(p)
    enforce(run_flags, allow_unfair)  # before anything is written or run
    out = Path(output_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(p.to_dict(), indent=1), out / "protocol.json")
    threads = torch.get_num_threads()
    try:
        run = prepare_run(p, out, allow_unfair)
        _flag(run, run_flags)
        cells = [c for c in plan_cells(p, run.budgets) if routes is None or c.route in routes]
        results = cached_cells(run, cells)
        _flag(run, stale_flags(p, results, run.splits.training))
        checkpoints = _pretrain_all(run)
        torch.set_num_threads(max(1, int(os.environ.get("MONAI_SSL_EVAL_THREADS", "1"))))
        run_cells(run, cells, results, checkpoints, on_cell_done)
        _flag(run, pairing_flags(results))
    finally:
        torch.set_num_threads(threads)
    record = _assemble_record(run, checkpoints, results, t_start)
    atomic_write_text(json.dumps(record, indent=1), out / "record.json")
    if report:
        write_report(record, out)
    return record


def _run_nnunet_cell(p: Protocol, cell: Cell, cases: Any, raw: Path, env: dict[str, str], train: list[str],
                     test: list[str], ckpt: Path | None, out: Path, state: dict[str, Any], log: _CellLog
                     ) -> dict[str, Any]:
    if "plans_id" not in state:
        state["plans_id"] = nnunet_route.prepare_plans(p.dataset.dataset_id, env, p.backbone, p.patch_size,
                                                       p.pretraining.batch_size, out / "logs" / "nnunet_plan.log")
    plans_id = state["plans_id"]
    weights = None
    if ckpt is not None:
        weights = nnunet_route.export_weights(ckpt, p.dataset.dataset_id, plans_id, env,
                                              out / "pretraining" / cell.pretext / f"nnunet_{plans_id}.pth")
    return nnunet_route.run_cell(cases, cell.task, raw, p.dataset.dataset_id, plans_id, env, train, test, p.nnunet,
                                 weights, out / "nnunet_cells" / cell.id, log.path)


def _versions() -> dict[str, str]:
    return software_versions()

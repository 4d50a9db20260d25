"""Pretraining checkpoints: ``latest.pt`` every N iterations and at the end, ``final.pt`` at the end, and resume.

The file holds :data:`monai_ssl_plugin.checkpoint.CHECKPOINT_KEYS` (network, pretext, optimizer,
scheduler, engine position, RNG states, record), all plain tensors and containers, so it loads
with ``weights_only=True``. Writes are atomic (temporary file + rename): a crash mid-save leaves
the previous ``latest.pt`` intact.

Resume semantics (``resume=True``), checked against ignite 0.5's run loop: at ``Events.STARTED``
the handler restores every state and sets ``engine.state.iteration`` (and ``epoch = iteration //
epoch_length``). Ignite then starts epoch ``epoch + 1`` with its in-epoch counter at
``iteration % epoch_length``, so a checkpoint taken mid-epoch runs only the rest of that epoch and
the run ends at exactly ``max_epochs * epoch_length`` iterations. The learning-rate schedule,
optimiser moments, EMA teachers and RNG streams continue where they stopped.

The data continue too: when the loader's dataset is a :class:`ResumableDataset` over an
index-pure dataset (``RandomPatchDataset``: item ``i`` is a function of ``(seed, i)``, read in
order), the handler starts it at sample ``iteration * batch_size``, so the resumed run reads
exactly the patches an uninterrupted run would, mid-epoch included. Other loaders are simply
re-iterated; with the RNG restored that is still exact at epoch boundaries for loaders whose
length is the epoch length (shuffling draws from the restored torch RNG).

Under DDP every rank draws its own masks and views from its own generators, so the file holds
every rank's RNG state (``rng_per_rank``, gathered when rank 0 saves) and each rank restores its
own: a resumed N-process run continues every rank's streams exactly. A crash during a save can
leave a hidden temporary file (``.latest.pt.*.tmp``); it is never read, and the start of the next
run removes it with a warning naming it.

Every file is sealed with a checksum of its content (:func:`~monai_ssl_plugin.checkpoint.seal`), and
the generation before ``latest.pt`` is kept as ``previous.pt``. Resume checks the checksum: a damaged
``latest.pt`` (a flipped byte loads silently otherwise) stops the run with one line naming the newest
intact generation (``previous.pt`` or ``final.pt``); ``--resume last_good`` takes it instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from torch import nn
from torch.utils.data import Dataset

from monai_ssl_plugin.checkpoint import CheckpointRecord, atomic_save, load_checked, seal
from monai_ssl_plugin.distributed import is_distributed, is_main_process, rank, unwrap, world_size
from monai_ssl_plugin.errors import PluginError

logger = logging.getLogger(__name__)

RecordFn = Callable[[int], "CheckpointRecord | dict[str, Any]"]


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as tensors and plain types (``weights_only``-loadable)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(np_kind), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, in rank order (a collective under DDP: all ranks must call it)."""
    if not is_distributed():
        return [rng_state()]
    states: list[Any] = [None] * world_size()
    dist.all_gather_object(states, rng_state())
    return states


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the hidden ``.<name>.*.tmp`` files an interrupted :func:`atomic_save` left in ``folder``."""
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for tmp in stale:
        logger.warning("Removing %s: a checkpoint write interrupted by a crash (%d bytes, never used).", tmp,
                       tmp.stat().st_size)
        tmp.unlink(missing_ok=True)
    return stale


RESUME_LAST_GOOD = "last_good"


def resume_mode(value: Any) -> bool | str:
    """``resume`` as given on the command line: true/false, or ``last_good`` (take the newest intact
    checkpoint when ``latest.pt`` is damaged, instead of stopping to ask)."""
    if isinstance(value, str) and value.strip().lower() == RESUME_LAST_GOOD:
        return RESUME_LAST_GOOD
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", "",
                                                              "none", "null"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(value, (bool, int)) or value is None:
        return bool(value)
    raise PluginError(f"resume={value!r} is not true, false or {RESUME_LAST_GOOD}.",
                      f"Pass --resume true, --resume false or --resume {RESUME_LAST_GOOD}.")


def _steps(keep_steps: Sequence[int] | None) -> tuple[int, ...]:
    steps = tuple(int(s) for s in (keep_steps or ()))
    if any(s < 0 for s in steps):
        raise PluginError(f"keep_steps={list(steps)} has a negative step.",
                          "Pass iteration counts >= 0 (0 keeps the untrained network).")
    return tuple(sorted(set(steps)))


def keep_previous(latest: Path, previous: Path) -> None:
    """Make ``previous`` the current ``latest`` (a hard link, else a copy; renamed into place), so a
    damaged newest file always has an older intact generation beside it."""
    if not latest.is_file():
        return
    tmp = previous.with_name(f".{previous.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(latest, tmp)
    except OSError:
        shutil.copy2(latest, tmp)
    os.replace(tmp, previous)


class ResumableDataset(Dataset):
    """A view of an index-pure dataset that can start at any sample (see the module docstring).

    Only valid for datasets whose item ``i`` does not depend on what was read before and that the
    loader reads in order (no shuffling sampler), like ``RandomPatchDataset``.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.start = 0

    def resume_at(self, sample: int) -> None:
        """Make item 0 the dataset's item ``sample`` (set before the loader's workers start)."""
        self.start = max(0, int(sample))

    def __len__(self) -> int:
        return max(0, len(self.dataset) - self.start)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index + self.start]


class SSLCheckpointHandler:
    """Atomic ``latest.pt`` / ``final.pt`` writer and ``--resume`` loader for the SSL trainer.

    Args:
        output_dir: run folder; files go to ``output_dir/checkpoints/``.
        pretext: the pretext module (``pretext.backbone.network`` is the downstream network).
        optimizer: its state is saved and restored.
        lr_scheduler: an iteration-level scheduler (or ``None``).
        record_fn: ``steps -> CheckpointRecord | dict`` (see :func:`monai_ssl_plugin.checkpoint.build_record`).
        save_every_n_iters: period of ``latest.pt`` writes; ``0``/``None`` writes only at the end.
        resume: load ``latest.pt`` at start and continue; without a file the run starts fresh.
        keep_steps: iterations after which a snapshot ``step_<N>.pt`` is kept for good (``0``: the
            untrained network, before the first step), e.g. to fine-tune from several points of one
            run and see when pretraining starts to pay.

    Only rank 0 writes under DDP; every rank reads on resume. The save handlers are registered
    when the run starts, i.e. after every handler attached before it, so a checkpoint always
    holds the state after this iteration's scheduler step, EMA update and NaN check.
    """

    def __init__(self, output_dir: str | Path, pretext: nn.Module, optimizer: torch.optim.Optimizer,
                 lr_scheduler: Any | None, record_fn: RecordFn, save_every_n_iters: int | None = 500,
                 resume: bool = False, keep_steps: Sequence[int] | None = None):
        self.checkpoint_dir = Path(output_dir) / "checkpoints"
        self.pretext = pretext
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.record_fn = record_fn
        self.save_every = int(save_every_n_iters or 0)
        if self.save_every < 0:
            raise PluginError(f"save_every_n_iters={save_every_n_iters} is negative.",
                              "Pass a positive period, or 0 to save only at the end.")
        self.resume = resume_mode(resume)
        self.keep_steps = _steps(keep_steps)
        self._last_saved_iteration = -1
        self._registered = False

    @property
    def latest_path(self) -> Path:
        return self.checkpoint_dir / "latest.pt"

    @property
    def final_path(self) -> Path:
        return self.checkpoint_dir / "final.pt"

    def snapshot_path(self, step: int) -> Path:
        """The snapshot kept after ``step`` iterations (see ``keep_steps``)."""
        return self.checkpoint_dir / f"step_{int(step):06d}.pt"

    @property
    def previous_path(self) -> Path:
        """The generation before ``latest.pt`` (kept so a damaged newest file is never the only one)."""
        return self.checkpoint_dir / "previous.pt"

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)

    # -- events ---------------------------------------------------------------------------
    def _started(self, engine: Engine) -> None:
        if is_main_process():
            remove_stale_temporaries(self.checkpoint_dir)
        if self.resume:
            self.load(engine)
        if not self._registered:  # registered now, so they run after every handler attached earlier
            if self.save_every > 0:
                engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_every), self._save_latest)
            engine.add_event_handler(Events.COMPLETED, self._completed)
            if self.keep_steps:
                steps = set(self.keep_steps)
                engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=lambda _, i: i in steps),
                                         self._save_snapshot)
            self._registered = True
        if 0 in self.keep_steps and engine.state.iteration == 0:
            self._save_snapshot(engine)

    def _save_snapshot(self, engine: Engine) -> None:
        rng_per_rank = gather_rng_states()  # every rank takes part, rank 0 writes
        path = self.snapshot_path(engine.state.iteration)
        if is_main_process() and not path.is_file():
            atomic_save(seal(self.state(engine, rng_per_rank)), path)
            logger.info("Kept %s.", path)

    def _save_latest(self, engine: Engine) -> None:
        if engine.state.iteration != self._last_saved_iteration:
            self.save(engine, final=False)

    def _completed(self, engine: Engine) -> None:
        self.save(engine, final=True)

    # -- state ----------------------------------------------------------------------------
    def state(self, engine: Engine, rng_per_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint dict (CHECKPOINT_KEYS) for the engine's current position.

        ``rng_per_rank``: every rank's RNG state (:func:`gather_rng_states`), stored under DDP.
        """
        pretext = unwrap(self.pretext)
        record = self.record_fn(int(engine.state.iteration))
        record = record.to_dict() if hasattr(record, "to_dict") else dict(record)
        # plain JSON types only: e.g. torch.__version__ is a TorchVersion, which weights_only refuses
        record = json.loads(json.dumps(record, default=str))
        state = {
            "network": pretext.backbone.network.state_dict(),
            "pretext": pretext.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "engine": {"iteration": int(engine.state.iteration), "epoch": int(engine.state.epoch),
                       "epoch_length": engine.state.epoch_length, "max_epochs": engine.state.max_epochs},
            "rng": rng_state(),
            "record": record,
        }
        if rng_per_rank is not None and len(rng_per_rank) > 1:
            state["rng_per_rank"] = rng_per_rank
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and hasattr(scaler, "state_dict"):
            state["grad_scaler"] = scaler.state_dict()
        return state

    def save(self, engine: Engine, final: bool = False) -> Path | None:
        """Write ``latest.pt`` (and ``final.pt`` when ``final``); rank 0 only. Returns the latest path.

        Under DDP every rank must call it (it gathers the ranks' RNG states); the save events fire
        on all ranks at the same iterations.
        """
        rng_per_rank = gather_rng_states()
        if not is_main_process():
            self._last_saved_iteration = engine.state.iteration
            return None
        output = engine.state.output
        if isinstance(output, dict) and not all(math.isfinite(float(v)) for v in output.values()
                                                if isinstance(v, (int, float))):
            logger.warning("Not saving a checkpoint at iteration %d: the loss is not finite.", engine.state.iteration)
            return None
        state = seal(self.state(engine, rng_per_rank))
        if engine.state.iteration != self._last_saved_iteration:  # the final save repeats the last periodic one
            keep_previous(self.latest_path, self.previous_path)
        atomic_save(state, self.latest_path)
        self._last_saved_iteration = engine.state.iteration
        if final:
            atomic_save(state, self.final_path)
            logger.info("Saved %s (iteration %d).", self.final_path, engine.state.iteration)
        else:
            logger.debug("Saved %s (iteration %d).", self.latest_path, engine.state.iteration)
        return self.latest_path

    def _restore_rng(self, ckpt: dict[str, Any]) -> None:
        """This rank's own RNG state; a run resumed on a different number of processes keeps fresh
        streams on the ranks the file has no state for (and says so)."""
        per_rank = ckpt.get("rng_per_rank") or [ckpt["rng"]]
        if len(per_rank) == world_size():
            set_rng_state(per_rank[rank()])
            return
        if rank() == 0:
            set_rng_state(per_rank[0])
        logger.warning("%s holds RNG states of %d process(es), this run has %d: %s.", self.latest_path,
                       len(per_rank), world_size(),
                       "rank 0 continues its stream" + (", the others start fresh ones" if world_size() > 1 else ""))

    def _intact(self) -> tuple[Path, dict[str, Any]]:
        """The checkpoint to resume from: ``latest.pt`` when intact; else, per ``resume``, the newest
        intact older generation (``previous.pt``, ``final.pt``) or a one-line error offering it."""
        try:
            return self.latest_path, load_checked(self.latest_path, map_location="cpu")
        except PluginError as e:
            damage = e.problem
        good = []
        for path in (self.previous_path, self.final_path):
            try:
                ckpt = load_checked(path, map_location="cpu") if path.is_file() else None
            except PluginError:
                ckpt = None
            if ckpt is not None and "engine" in ckpt:
                good.append((int(ckpt["engine"]["iteration"]), path, ckpt))
        if not good:
            raise PluginError(f"{damage} No intact older checkpoint is beside it.",
                              "Start afresh in a new --output_dir (or delete the damaged file and pass --resume false).")
        iteration, path, ckpt = max(good, key=lambda g: g[0])
        if self.resume != RESUME_LAST_GOOD:
            raise PluginError(f"{damage} {path.name} beside it is intact (iteration {iteration}).",
                              f"Resume from it with --resume {RESUME_LAST_GOOD}, or move {self.latest_path.name} away.")
        logger.warning("%s Resuming from %s (iteration %d) as --resume %s asks.", damage, path, iteration,
                       RESUME_LAST_GOOD)
        return path, ckpt

    def load(self, engine: Engine) -> bool:
        """Restore everything from ``latest.pt`` (see :meth:`_intact`); ``False`` (and a log line) when there is none."""
        if not self.latest_path.is_file():
            logger.info("Resume requested but %s does not exist: starting a fresh run.", self.latest_path)
            return False
        source, ckpt = self._intact()
        missing = [k for k in ("pretext", "optimizer", "engine", "rng") if k not in ckpt]
        if missing:
            raise PluginError(f"{source} lacks {', '.join(missing)} and cannot resume a run.",
                              "Resume only from <output_dir>/checkpoints/latest.pt written by monai-ssl pretrain.")
        pretext = unwrap(self.pretext)
        try:
            pretext.load_state_dict(ckpt["pretext"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0]
            raise PluginError(f"{source} was written by a different network or pretext ({first[:200]}).",
                              "Resume with the same backbone and pretext settings, or use a new --output_dir.") from None
        if self.lr_scheduler is not None and ckpt.get("scheduler") is not None:
            self.lr_scheduler.load_state_dict(ckpt["scheduler"])
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and ckpt.get("grad_scaler") is not None:
            scaler.load_state_dict(ckpt["grad_scaler"])
        self._restore_rng(ckpt)
        saved = ckpt["engine"]
        iteration = int(saved["iteration"])
        length = engine.state.epoch_length
        if length:
            if saved.get("epoch_length") not in (None, length):
                logger.warning("epoch_length changed from %s to %s: epochs are renumbered from iteration %d.",
                               saved.get("epoch_length"), length, iteration)
            epoch = iteration // length
        else:
            epoch = int(saved["epoch"])
        engine.state.iteration, engine.state.epoch = iteration, epoch
        loader = getattr(engine, "data_loader", None)
        dataset = getattr(loader, "dataset", None)
        if isinstance(dataset, ResumableDataset) and getattr(loader, "batch_size", None):
            dataset.resume_at(iteration * loader.batch_size)
            logger.info("Data resume at sample %d.", dataset.start)
        self._last_saved_iteration = iteration
        total = (engine.state.max_epochs or 0) * (length or 0)
        if total and iteration >= total:
            logger.info("Resumed from %s at iteration %d: the run (%d iterations) is already complete.",
                        source, iteration, total)
        else:
            logger.info("Resumed from %s at iteration %d (epoch %d).", source, iteration, epoch)
        return True

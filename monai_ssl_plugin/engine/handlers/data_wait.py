"""How long each step waits for data, against how long the whole step takes.

Ignite fires ``GET_BATCH_STARTED`` / ``GET_BATCH_COMPLETED`` around ``next(loader)``: the time
between them is the wait. A step runs from its ``GET_BATCH_STARTED`` to the next one (or to the
end of the epoch), so it includes the forward/backward pass and every handler. A share of wait
above ~10 % means the loader is the bottleneck (more workers, prefetching, cached data).

Results: ``output_dir/timing.csv`` (``iteration,wait_s,step_s``; appended at every epoch end, so
a crashed run keeps its rows; a resumed run keeps the rows up to where it resumed),
``output_dir/timing_summary.json`` at the end, and ``engine.state.data_timing`` (the summary of
this run so far, updated every step).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from monai_ssl_plugin.checkpoint import atomic_write_text
from monai_ssl_plugin.distributed import is_main_process

logger = logging.getLogger(__name__)


class DataWaitHandler:
    """Per-step data-wait and step time.

    Args:
        output_dir: where ``timing.csv`` and ``timing_summary.json`` go (``None``: keep in memory only).
        skip_first: steps excluded from the steady-state share (the first step pays worker start-up).
    """

    def __init__(self, output_dir: str | Path | None = None, skip_first: int = 1):
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.skip_first = int(skip_first)
        self.rows: list[tuple[int, float, float]] = []  # iteration, wait_s, step_s
        self._t_start: float | None = None
        self._wait: float = 0.0
        self._iteration: int | None = None
        self._totals = (0.0, 0.0)  # wait, step seconds over all rows of this run
        self._steady = (0.0, 0.0)  # the same without the first ``skip_first`` rows
        self._written = 0  # rows already appended to timing.csv
        self._csv_ready = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._batch_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._batch_completed)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    # -- events ---------------------------------------------------------------------------
    def _batch_started(self, engine: Engine) -> None:
        if not self._csv_ready:  # first batch of the run: the (possibly resumed) iteration is known now
            self._start_csv(int(engine.state.iteration))
        now = time.perf_counter()
        self._close(engine, now)
        self._t_start = now

    def _batch_completed(self, engine: Engine) -> None:
        if self._t_start is not None:
            self._wait = time.perf_counter() - self._t_start

    def _iteration_started(self, engine: Engine) -> None:
        self._iteration = engine.state.iteration

    def _close(self, engine: Engine, now: float) -> None:
        if self._t_start is None or self._iteration is None:
            return
        step = now - self._t_start
        self.rows.append((self._iteration, self._wait, step))
        self._totals = (self._totals[0] + self._wait, self._totals[1] + step)
        if len(self.rows) > self.skip_first:
            self._steady = (self._steady[0] + self._wait, self._steady[1] + step)
        self._t_start, self._iteration, self._wait = None, None, 0.0
        engine.state.data_timing = self.summary()

    def _epoch_completed(self, engine: Engine) -> None:
        self._close(engine, time.perf_counter())
        self.write()

    def _completed(self, engine: Engine) -> None:
        self._close(engine, time.perf_counter())
        summary = self.summary()
        engine.state.data_timing = summary
        self.write()
        self._write_summary()
        if summary["steps"]:
            logger.info("Data wait: %.1f%% of step time (%.3f s wait of %.3f s per step, %d steps; steady state %.1f%%).",
                        100 * summary["wait_share"], summary["mean_wait_s"], summary["mean_step_s"], summary["steps"],
                        100 * summary["wait_share_steady"])

    # -- results --------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Steps, mean wait and step seconds, wait share overall and after the first ``skip_first`` steps."""
        n, (wait, step), (s_wait, s_step) = len(self.rows), self._totals, self._steady
        if n <= self.skip_first:
            s_wait, s_step = wait, step
        return {"steps": n, "mean_wait_s": wait / n if n else 0.0, "mean_step_s": step / n if n else 0.0,
                "wait_share": wait / step if step > 0 else 0.0,
                "wait_share_steady": s_wait / s_step if s_step > 0 else 0.0}

    @property
    def csv_path(self) -> Path | None:
        return None if self.output_dir is None else self.output_dir / "timing.csv"

    def _start_csv(self, start_iteration: int) -> None:
        """Fresh run: new file. Resumed run: keep the earlier rows up to ``start_iteration``."""
        self._csv_ready = True
        if self.csv_path is None or not is_main_process():
            return
        kept = []
        if start_iteration > 0 and self.csv_path.is_file():
            for line in self.csv_path.read_text().splitlines()[1:]:
                parts = line.split(",")
                if len(parts) == 3 and parts[0].isdigit() and int(parts[0]) <= start_iteration:
                    kept.append(line)
        atomic_write_text("\n".join(["iteration,wait_s,step_s"] + kept) + "\n", self.csv_path)

    def write(self) -> None:
        """Append the new rows to ``timing.csv`` (rank 0)."""
        if self.csv_path is None or not is_main_process() or not self._csv_ready:
            return
        new = self.rows[self._written:]
        if new:
            with open(self.csv_path, "a") as f:
                f.writelines(f"{i},{w:.6f},{s:.6f}\n" for i, w, s in new)
            self._written = len(self.rows)

    def _write_summary(self) -> None:
        if self.output_dir is not None and is_main_process():
            atomic_write_text(json.dumps(self.summary(), indent=2) + "\n", self.output_dir / "timing_summary.json")

"""Console progress: a tqdm bar with ETA, the loss terms, the learning rate and the data-wait share
(and, when the pay-off monitor runs, its latest segmentation Dice, gain and status).

The bar shows on interactive terminals (tqdm disables itself when stderr is not a TTY); every
epoch also ends with one log line (epoch, iteration, mean losses, lr, data wait, ETA), so runs
logged to a file report progress too. ``quiet=True`` drops the bar and logs epochs at DEBUG.
The data-wait share comes from :class:`~monai_ssl_plugin.engine.handlers.data_wait.DataWaitHandler`
when it is attached (``engine.state.data_timing``).
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from ignite.engine import Engine, Events
from tqdm.auto import tqdm

from monai_ssl_plugin.distributed import is_main_process

logger = logging.getLogger(__name__)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _payoff(metrics: dict[str, Any]) -> dict[str, str]:
    """The pay-off monitor's latest figures (``payoff/*``), shortened for the progress line."""
    out = {}
    if "payoff/seg_dice" in metrics:
        out["seg_dice"] = f"{metrics['payoff/seg_dice']:.3f}"
        gain = metrics.get("payoff/gain")
        if isinstance(gain, float) and gain == gain:
            out["gain"] = f"{gain:+.3f}"
        out["payoff"] = str(metrics.get("payoff/status", ""))
    return out


class ProgressHandler:
    """Progress bar and per-epoch log line.

    Args:
        quiet: no bar; epoch lines at DEBUG instead of INFO.
        mininterval: least seconds between bar refreshes.
    """

    def __init__(self, quiet: bool = False, mininterval: float = 1.0):
        self.quiet = bool(quiet)
        self.mininterval = float(mininterval)
        self._bar: Any = None
        self._sums: dict[str, float] = {}
        self._count = 0
        self._t0: float | None = None
        self._start_iteration = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        # no EXCEPTION_RAISED handler: registering one would make ignite stop re-raising errors
        for event in (Events.COMPLETED, Events.TERMINATE):
            engine.add_event_handler(event, self._close)

    @staticmethod
    def _total(engine: Engine) -> int:
        return int((engine.state.max_epochs or 0) * (engine.state.epoch_length or 0))

    def _eta(self, engine: Engine) -> str:
        done = engine.state.iteration - self._start_iteration
        if self._t0 is None or done <= 0:
            return "?"
        left = max(0, self._total(engine) - engine.state.iteration) * (time.perf_counter() - self._t0) / done
        return str(datetime.timedelta(seconds=round(left)))

    def _epoch_started(self, engine: Engine) -> None:
        if self._t0 is None:  # first epoch of this run; a resume has already set the iteration
            self._t0 = time.perf_counter()
            self._start_iteration = engine.state.iteration
            if not self.quiet and is_main_process():
                self._bar = tqdm(total=self._total(engine), initial=engine.state.iteration, unit="it",
                                 desc="pretraining", mininterval=self.mininterval, disable=None, dynamic_ncols=True)
        self._sums, self._count = {}, 0

    def _postfix(self, engine: Engine, losses: dict[str, float]) -> dict[str, str]:
        post = {k: _fmt(v) for k, v in losses.items()}
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None:
            post["lr"] = f"{optimizer.param_groups[0]['lr']:.2e}"
        timing = getattr(engine.state, "data_timing", None)
        if timing and timing.get("steps"):
            post["data_wait"] = f"{100 * timing['wait_share']:.0f}%"
        post.update(_payoff(engine.state.metrics))
        return post

    def _iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output if isinstance(engine.state.output, dict) else {"loss": engine.state.output}
        for k, v in output.items():
            if isinstance(v, (int, float)):
                self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1
        if self._bar is not None:
            self._bar.update(engine.state.iteration - self._bar.n)
            self._bar.set_postfix(self._postfix(engine, {k: float(v) for k, v in output.items()
                                                         if isinstance(v, (int, float))}), refresh=False)

    def _epoch_completed(self, engine: Engine) -> None:
        if not is_main_process():
            return
        means = {k: v / max(1, self._count) for k, v in self._sums.items()}
        post = self._postfix(engine, means)
        text = " ".join(f"{k} {v}" for k, v in post.items())
        level = logging.DEBUG if self.quiet else logging.INFO
        logger.log(level, "epoch %d/%s iteration %d/%d | %s | ETA %s", engine.state.epoch, engine.state.max_epochs,
                   engine.state.iteration, self._total(engine), text, self._eta(engine))

    def _close(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

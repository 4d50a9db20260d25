"""Watch for representation collapse during pretraining: log the metrics, warn, optionally stop.

Every iteration the handler copies the embeddings the pretext exposes (``pretext.last_embeddings``,
(N, D), and for DINO ``pretext.last_teacher_probs``, (N, K)) to the CPU -- a few kilobytes. Every
``every_n`` iterations it hands the rows gathered since the last check to one
:class:`~monai_ssl_plugin.pretext.collapse.CollapseMonitor`, which keeps a window of recent rows
(the effective rank needs more rows than a 3D batch has) and computes the per-dimension std of the
L2-normalised embeddings (about 1/sqrt(D) healthy, 0 collapsed), their effective rank and, for
DINO, the teacher entropy and prototype usage.

Results go to ``engine.state.metrics`` (``collapse/<metric>``), to the log (one INFO line per
check), optionally to TensorBoard (``log_dir``), and to ``engine.state.collapse`` (the last
:class:`~monai_ssl_plugin.pretext.collapse.CollapseReport`). A collapsed check logs a WARNING that
names the failed checks and what to change; with ``stop_on_collapse`` the run stops with a
one-line :class:`PluginError` after ``patience`` collapsed checks in a row (the last periodic
checkpoint is kept, as with the NaN guard). Pretexts that expose nothing are skipped silently.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_ssl_plugin.distributed import is_distributed, is_main_process, unwrap
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext.collapse import CollapseMonitor, CollapseReport

logger = logging.getLogger(__name__)

_FIX = ("Strengthen the augmentation or the crops, lower the learning rate, check that the views differ; "
        "SimSiam collapses most easily (prefer BYOL's EMA target); for DINO adjust teacher_temp and the centring.")


class CollapseHandler:
    """Runs a :class:`CollapseMonitor` every ``every_n`` iterations on what the pretext exposes.

    Args:
        pretext: the pretext module; ``None`` takes ``engine.pretext`` (the SSL trainer's) or
            ``engine.network``.
        every_n: iterations between checks.
        warmup_iterations: checks before this iteration log their metrics but never warn or stop
            (random initialisation can look collapsed for a few steps).
        stop_on_collapse: stop the run after ``patience`` collapsed checks in a row.
        patience: consecutive collapsed checks that stop the run.
        log_dir: TensorBoard folder for ``collapse/*`` scalars (``None``: no TensorBoard).
        window, min_std_ratio, min_effective_rank, max_teacher_entropy_ratio,
        min_teacher_usage_ratio: passed to :class:`CollapseMonitor` (``None`` disables a check).
    """

    def __init__(self, pretext: nn.Module | None = None, every_n: int = 50, warmup_iterations: int = 0,
                 stop_on_collapse: bool = False, patience: int = 3, log_dir: str | None = None, window: int = 256,
                 min_std_ratio: float | None = 0.1, min_effective_rank: float | None = 2.0,
                 max_teacher_entropy_ratio: float | None = 0.99, min_teacher_usage_ratio: float | None = 0.05):
        if int(every_n) < 1:
            raise ValueError(f"every_n must be >= 1, got {every_n}")
        self.pretext = pretext
        self.every_n = int(every_n)
        self.warmup_iterations = int(warmup_iterations)
        self.stop_on_collapse = bool(stop_on_collapse)
        self.patience = max(1, int(patience))
        self.log_dir = log_dir
        self.monitor = CollapseMonitor(window, min_std_ratio, min_effective_rank, max_teacher_entropy_ratio,
                                       min_teacher_usage_ratio)
        self.window = int(window)
        self.collapsed_in_a_row = 0
        self.last_report: CollapseReport | None = None
        self._embeddings: list[torch.Tensor] = []
        self._probs: list[torch.Tensor] = []
        self._writer: Any = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        for event in (Events.COMPLETED, Events.TERMINATE):
            engine.add_event_handler(event, self._close)

    # -- collecting ------------------------------------------------------------------------
    def _source(self, engine: Engine) -> Any:
        pretext = self.pretext if self.pretext is not None else getattr(engine, "pretext",
                                                                        getattr(engine, "network", None))
        return unwrap(pretext)

    @staticmethod
    def _take(rows: list[torch.Tensor], value: Any, window: int) -> None:
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] > 0:
            rows.append(value.detach().float().reshape(value.shape[0], -1).cpu())
            while sum(r.shape[0] for r in rows) - rows[0].shape[0] >= window:  # keep about one window
                rows.pop(0)

    def __call__(self, engine: Engine) -> None:
        pretext = self._source(engine)
        if pretext is None:
            return
        self._take(self._embeddings, getattr(pretext, "last_embeddings", None), self.window)
        self._take(self._probs, getattr(pretext, "last_teacher_probs", None), self.window)
        if engine.state.iteration % self.every_n == 0:
            self.check(engine)

    # -- checking --------------------------------------------------------------------------
    def check(self, engine: Engine) -> CollapseReport | None:
        """Feed the rows gathered since the last check to the monitor; log, warn, maybe stop."""
        if not self._embeddings and not self._probs:
            return None
        emb = torch.cat(self._embeddings) if self._embeddings else None
        probs = torch.cat(self._probs) if self._probs else None
        self._embeddings, self._probs = [], []
        report = self.monitor.update(embeddings=emb, teacher_probs=probs)
        self.last_report = report
        engine.state.collapse = report
        iteration = engine.state.iteration
        for name, value in report.metrics.items():
            engine.state.metrics[f"collapse/{name}"] = value
        if is_main_process() and report.metrics:
            logger.info("collapse check at iteration %d: %s", iteration,
                        ", ".join(f"{k} {v:.4g}" for k, v in report.metrics.items()))
            self._tensorboard(report, iteration)
        collapsed = report.collapsed and iteration >= self.warmup_iterations
        if is_distributed():  # every process takes the same decision, or a stop would hang the others
            flag = torch.tensor(float(collapsed))
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            collapsed = bool(flag.item())
        if not collapsed:
            self.collapsed_in_a_row = 0
            return report
        self.collapsed_in_a_row += 1
        message = report.message or "another process reported collapse"
        if is_main_process():
            logger.warning("Representation collapse suspected at iteration %d (%d check(s) in a row): %s. Fix: %s",
                           iteration, self.collapsed_in_a_row, message, _FIX)
        if self.stop_on_collapse and self.collapsed_in_a_row >= self.patience:
            problem = (f"Representation collapse at iteration {iteration} ({message}), {self.collapsed_in_a_row} "
                       "checks in a row; the run was stopped and the last periodic checkpoint kept.")
            engine.terminate(skip_completed=True)
            raise PluginError(problem, _FIX)
        return report

    def _tensorboard(self, report: CollapseReport, iteration: int) -> None:
        if self.log_dir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        for name, value in report.metrics.items():
            self._writer.add_scalar(f"collapse/{name}", value, iteration)
        self._writer.flush()

    def _close(self, engine: Engine) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

"""Stop a run the moment a loss turns NaN or infinite, and say which term and when.

A non-finite loss has already poisoned the weights through the optimiser step, so the run is
terminated without ``Events.COMPLETED`` (no checkpoint of the broken state is written) and a
:class:`PluginError` names the iteration and the loss term. ``latest.pt`` keeps the last good state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from ignite.engine import Engine, Events

from monai_ssl_plugin.errors import PluginError

logger = logging.getLogger(__name__)


class NaNGuard:
    """Checks ``engine.state.output`` (``{name: float}``) after every iteration.

    Args:
        keys: loss terms to check; ``None`` checks every numeric entry.
    """

    def __init__(self, keys: Sequence[str] | None = None):
        self.keys = None if keys is None else list(keys)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        if not isinstance(output, dict):
            output = {"loss": output}
        for name, value in output.items():
            if self.keys is not None and name not in self.keys:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                problem = (f"Loss term {name!r} became {value} at iteration {engine.state.iteration} "
                           f"(epoch {engine.state.epoch}); the run was stopped and the last good checkpoint kept.")
                fix = ("Lower the learning rate or lengthen the warm-up, keep gradient clipping on, or disable float16 AMP; "
                       "then continue from checkpoints/latest.pt with --resume.")
                logger.error("%s Fix: %s", problem, fix)
                engine.terminate(skip_completed=True)
                raise PluginError(problem, fix)

"""The SSL trainer: a ``monai.engines.Trainer`` whose step is "pretext(batch) -> losses -> update".

MONAI's ``SupervisedTrainer`` assumes (image, label) pairs and a loss of (prediction, label); SSL
steps have several views and losses computed inside the pretext, so the step is the pretext's
business and the trainer only moves data, runs mixed precision, clips and steps the optimiser.
Everything else (checkpoints, schedules, logging, guards) is an ignite handler.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.workflow import Workflow
from torch import nn
from torch.utils.data import DataLoader


def _to_device(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: _to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device, non_blocking) for v in batch)
    return batch


class SSLTrainer(Trainer):
    """Runs a pretext for ``max_epochs`` × ``epoch_length`` iterations.

    Args:
        device: training device ("cpu", "cuda", "cuda:1"...).
        max_epochs: epochs to run (an epoch is ``epoch_length`` iterations).
        train_data_loader: yields dict batches, e.g. ``{"image": (B, C, *spatial)}``.
        pretext: module whose ``forward(batch)`` returns a dict of scalar losses incl. ``"loss"``.
        optimizer: over ``pretext.parameters()``.
        epoch_length: iterations per epoch (default: ``len(loader)``).
        train_handlers: ignite handlers (``attach(engine)``) attached in order.
        amp: mixed precision; ``amp_dtype`` "bfloat16" (CPU and recent GPUs) or "float16"
            (GPU, with a gradient scaler).
        grad_clip: max gradient norm (nnssl uses 12); ``None`` disables clipping.

    ``engine.state.output`` after each step: ``{name: float}`` for every loss the pretext returned.
    """

    def __init__(self, device: str | torch.device, max_epochs: int, train_data_loader: Iterable | DataLoader,
                 pretext: nn.Module, optimizer: torch.optim.Optimizer, epoch_length: int | None = None,
                 train_handlers: Sequence | None = None, amp: bool = False, amp_dtype: str = "bfloat16",
                 grad_clip: float | None = 12.0, non_blocking: bool = True):
        device = torch.device(device)
        super().__init__(device=device, max_epochs=max_epochs, data_loader=train_data_loader,
                         epoch_length=epoch_length, non_blocking=non_blocking, handlers=train_handlers,
                         amp=amp, decollate=False)
        self.pretext = pretext
        self.network = pretext  # name MONAI handlers (e.g. CheckpointSaver configs) look for
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self.amp_dtype = getattr(torch, amp_dtype)
        use_scaler = amp and device.type == "cuda" and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def run(self) -> None:  # type: ignore[override]
        """Run, or continue, training. Skips ``monai.engines.Trainer.run``, which would replace the
        gradient scaler chosen above with a CUDA float16 scaler whenever ``amp`` is on."""
        Workflow.run(self)

    def _iteration(self, engine: "SSLTrainer", batchdata: Any) -> dict[str, float]:
        batch = _to_device(batchdata, engine.state.device, engine.non_blocking)
        engine.pretext.train()
        with torch.autocast(device_type=engine.state.device.type, dtype=engine.amp_dtype, enabled=engine.amp):
            losses = engine.pretext(batch)
        loss = losses["loss"]
        engine.optimizer.zero_grad(set_to_none=True)
        if engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.scaler.unscale_(engine.optimizer)
        else:
            loss.backward()
        if engine.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(engine.pretext.parameters(), engine.grad_clip)
        if engine.scaler is not None:
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            engine.optimizer.step()
        if hasattr(engine.pretext, "after_step"):  # EMA teachers, queues: updated after the optimiser
            engine.pretext.after_step(engine.state.iteration)
        return {k: float(v.detach()) for k, v in losses.items()}

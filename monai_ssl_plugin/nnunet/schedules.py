"""Fine-tuning LR schedules for nnU-Net trainers: linear warm-up then nnU-Net's poly decay, and the sawtooth.

The published fine-tuning recipe for pretrained CNNs (nnssl; Wald et al., CVPR 2025; OpenMind,
ICCV 2025): SGD (momentum 0.99, Nesterov), peak lr 1e-3, linear warm-up over the first 50 epochs,
then poly decay with exponent 0.9 over the remaining epochs. It is stepped once per epoch with the
epoch index, as nnU-Net steps its own ``PolyLRScheduler`` (``lr_scheduler.step(current_epoch)``),
so a continued run (``--c``) lands on the right rate without any scheduler state.

The sawtooth (OpenMind, ICCV 2025; best for pretrained CNNs there) runs that shape twice: first
over the decoder alone (encoder frozen: warm-up, then poly down), then over the whole network
(warm-up again, then poly to the end) — two teeth.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from monai_ssl_plugin.errors import PluginError


def warmup_poly_lr(epoch: int, peak_lr: float, num_epochs: int, warmup_epochs: int, exponent: float = 0.9) -> float:
    """The rate for ``epoch`` (0-based).

    Warm-up (``epoch < warmup_epochs``): ``peak_lr * (epoch + 1) / warmup_epochs`` — the first epoch
    already trains and the last warm-up epoch reaches the peak (nnU-Net's ``Lin_incr_LRScheduler``).
    Then ``peak_lr * (1 - (epoch - warmup_epochs) / (num_epochs - warmup_epochs)) ** exponent``
    (nnU-Net's ``PolyLRScheduler`` over the post-warm-up epochs). ``warmup_epochs = 0`` is plain poly.
    """
    if epoch < warmup_epochs:
        return peak_lr * (epoch + 1) / warmup_epochs
    span = max(1, num_epochs - warmup_epochs)
    progress = min(1.0, max(0.0, (epoch - warmup_epochs) / span))
    return peak_lr * (1.0 - progress) ** exponent


class WarmupPolyLRScheduler(LRScheduler):
    """Epoch-indexed warm-up + poly schedule (see :func:`warmup_poly_lr`).

    ``step(epoch)`` sets the rate of every parameter group for that epoch; ``step()`` without an
    argument advances an internal counter (the ``LRScheduler`` convention).
    """

    def __init__(self, optimizer: Optimizer, peak_lr: float, num_epochs: int, warmup_epochs: int,
                 exponent: float = 0.9, current_step: int | None = None):
        if num_epochs < 1:
            raise PluginError(f"num_epochs must be at least 1 (got {num_epochs}).", "Set nnUNet_SSL_epochs >= 1.")
        if not 0 <= warmup_epochs <= num_epochs:
            raise PluginError(f"warmup_epochs={warmup_epochs} is outside [0, num_epochs={num_epochs}].",
                              "Set nnUNet_SSL_warmup_epochs between 0 and the number of epochs.")
        if peak_lr <= 0:
            raise PluginError(f"The peak learning rate must be positive (got {peak_lr}).", "Set nnUNet_SSL_lr > 0.")
        self.peak_lr = float(peak_lr)
        self.num_epochs = int(num_epochs)
        self.warmup_epochs = int(warmup_epochs)
        self.exponent = float(exponent)
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def lr_at(self, epoch: int) -> float:
        return warmup_poly_lr(epoch, self.peak_lr, self.num_epochs, self.warmup_epochs, self.exponent)

    def step(self, current_step: int | None = None) -> None:  # type: ignore[override]
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(int(current_step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self._last_lr


def sawtooth_lr(epoch: int, peak_lr: float, num_epochs: int, warmup_epochs: int, decoder_epochs: int,
                exponent: float = 0.9) -> float:
    """The sawtooth rate for ``epoch`` (0-based).

    Phase 1, ``epoch < decoder_epochs`` (decoder only): :func:`warmup_poly_lr` over ``decoder_epochs``
    with ``min(warmup_epochs, decoder_epochs)`` warm-up epochs. Phase 2 (whole network): the same
    shape restarted over the remaining ``num_epochs - decoder_epochs`` epochs.
    """
    if epoch < decoder_epochs:
        return warmup_poly_lr(epoch, peak_lr, decoder_epochs, min(warmup_epochs, decoder_epochs), exponent)
    return warmup_poly_lr(epoch - decoder_epochs, peak_lr, num_epochs - decoder_epochs,
                          min(warmup_epochs, num_epochs - decoder_epochs), exponent)


class SawtoothLRScheduler(WarmupPolyLRScheduler):
    """Epoch-indexed sawtooth (see :func:`sawtooth_lr`); ``decoder_epochs`` is the first (decoder-only) tooth."""

    def __init__(self, optimizer: Optimizer, peak_lr: float, num_epochs: int, warmup_epochs: int,
                 decoder_epochs: int, exponent: float = 0.9, current_step: int | None = None):
        if not 0 < decoder_epochs < num_epochs:
            raise PluginError(f"decoder_epochs={decoder_epochs} is outside (0, num_epochs={num_epochs}).",
                              "Set nnUNet_SSL_decoder_epochs between 1 and the number of epochs - 1.")
        self.decoder_epochs = int(decoder_epochs)
        super().__init__(optimizer, peak_lr, num_epochs, min(warmup_epochs, num_epochs), exponent, current_step)

    def lr_at(self, epoch: int) -> float:
        return sawtooth_lr(epoch, self.peak_lr, self.num_epochs, self.warmup_epochs, self.decoder_epochs,
                           self.exponent)

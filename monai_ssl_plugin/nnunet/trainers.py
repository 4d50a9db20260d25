"""nnU-Net trainers for fine-tuning pretrained weights, and their from-scratch twins.

Selected with ``nnUNetv2_train D CONF FOLD -tr NAME`` once ``nnUNet_extTrainer`` points to
:func:`monai_ssl_plugin.nnunet.ext_trainer_dir` (``monai-ssl nnunet-env`` prints the line).

- :class:`nnUNetTrainerSSL` loads the pretrained weights itself right after ``initialize()``
  builds the network: from ``$nnUNet_SSL_pretrained`` or the conventional export location
  (``$nnUNet_preprocessed/<Dataset>/ssl_pretrained/<plans>__<configuration>.pth``), through the
  plugin's reported loader; stem + encoder, plus the decoder when the pretext trained it (MAE);
  never the seg layers. It refuses, before any training step, weights whose record contradicts
  the plans (axis order, normalisation) or whose architecture differs (first layer named).
  LR: SGD (momentum 0.99, Nesterov), linear warm-up to 1e-3 over 50 epochs, then poly.
- :class:`nnUNetTrainerScratch` is the same trainer without pretrained weights and with nnU-Net's
  default peak rate 1e-2: same plans, epochs and schedule shape, so the baseline is fair.

Numbers are class attributes, so a variant is one line (see the ``_short`` / ``_5epochs``
classes); ``build_network_architecture`` is nnU-Net's, so ``nnUNetv2_predict -tr`` works.

Environment variables (read when the trainer is created):
    nnUNet_SSL_pretrained         file to load instead of the conventional location
    nnUNet_SSL_lr                 peak lr of the SSL trainers (default 1e-3)
    nnUNet_SSL_scratch_lr         peak lr of the scratch trainers (default 1e-2)
    nnUNet_SSL_warmup_epochs      warm-up epochs of both (default: the class's, 50; 1 for _short)
    nnUNet_SSL_epochs             number of epochs of both (default: the class's, 1000)
    nnUNet_SSL_allow_normalization_mismatch=1   warn instead of refusing a normalisation mismatch
"""

from __future__ import annotations

import os
from typing import Union

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.export.loading import LoadReport
from monai_ssl_plugin.nnunet.pretrained import find_pretrained_file, load_pretrained_into
from monai_ssl_plugin.nnunet.schedules import WarmupPolyLRScheduler

ENV_LR = "nnUNet_SSL_lr"
ENV_SCRATCH_LR = "nnUNet_SSL_scratch_lr"
ENV_WARMUP = "nnUNet_SSL_warmup_epochs"
ENV_EPOCHS = "nnUNet_SSL_epochs"


def _env_number(name: str, default: float, kind: type) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(float(raw)) if kind is int else kind(raw)
    except ValueError:
        raise PluginError(f"{name}={raw!r} is not a number.",
                          f"Set {name} to a {kind.__name__}, or unset it.") from None
    if value < 0:
        raise PluginError(f"{name}={raw} is negative.", f"Set {name} to a positive {kind.__name__}.")
    return value


class nnUNetTrainerSSL(nnUNetTrainer):
    """Fine-tunes pretrained weights (see the module docstring for where they come from)."""

    # The published fine-tuning recipe (nnssl / OpenMind). Variants override these class attributes.
    initial_lr: float = 1e-3
    warmup_epochs: int = 50
    num_epochs: int = 1000
    num_iterations_per_epoch: int = 250
    num_val_iterations_per_epoch: int = 50
    save_every: int = 50
    load_pretrained: bool = True
    lr_env: str = ENV_LR

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        cls = type(self)
        # nnUNetTrainer.__init__ set its defaults on the instance; apply this class's numbers over them
        self.num_iterations_per_epoch = cls.num_iterations_per_epoch
        self.num_val_iterations_per_epoch = cls.num_val_iterations_per_epoch
        self.save_every = cls.save_every
        self.initial_lr = float(_env_number(cls.lr_env, cls.initial_lr, float))
        self.num_epochs = max(1, int(_env_number(ENV_EPOCHS, cls.num_epochs, int)))
        warmup = int(_env_number(ENV_WARMUP, cls.warmup_epochs, int))
        if not os.environ.get(ENV_WARMUP, "").strip() and warmup > self.num_epochs // 2:
            warmup = self.num_epochs // 2 if self.num_epochs > 1 else 0  # a shortened run keeps a decay phase
        self.warmup_epochs = warmup
        self.pretrained_report: LoadReport | None = None
        self._restoring_checkpoint = False

    def initialize(self) -> None:
        """nnU-Net's initialize, then the pretrained weights (unless a checkpoint is being restored)."""
        super().initialize()
        if self.load_pretrained and not self._restoring_checkpoint:
            self.load_pretrained_weights()

    def load_pretrained_weights(self) -> LoadReport:
        """Find, check and load the pretrained weights into ``self.network``; the report goes to the log."""
        pm, cm = self.plans_manager, self.configuration_manager
        path = find_pretrained_file(pm.dataset_name, self.configuration_name, pm.plans_name)
        self.pretrained_report = load_pretrained_into(
            self.network, path, normalization_schemes=cm.normalization_schemes, spacing=cm.spacing,
            what=f"{pm.dataset_name} {pm.plans_name} {self.configuration_name} "
                 f"({self.num_input_channels} input channel(s))",
            dataset_name=pm.dataset_name, configuration=self.configuration_name,
            plans_architecture=cm.configuration.get("architecture"), num_input_channels=self.num_input_channels,
            log=self.print_to_log_file)
        return self.pretrained_report

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        """Continuing (``--c``) or validating (``--val``): nnU-Net's own checkpoint wins, no pretrained load."""
        self._restoring_checkpoint = True
        try:
            super().load_checkpoint(filename_or_checkpoint)
        finally:
            self._restoring_checkpoint = False

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                    momentum=0.99, nesterov=True)
        scheduler = WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.warmup_epochs)
        self.print_to_log_file(f"[monai-ssl] LR schedule: linear warm-up to {self.initial_lr:g} over "
                               f"{self.warmup_epochs} epoch(s), then poly (0.9) to epoch {self.num_epochs}; "
                               f"{self.num_iterations_per_epoch} iterations/epoch")
        return optimizer, scheduler


class nnUNetTrainerScratch(nnUNetTrainerSSL):
    """The from-scratch twin: no pretrained weights, nnU-Net's default peak lr 1e-2, same everything else."""

    initial_lr = 1e-2
    load_pretrained = False
    lr_env = ENV_SCRATCH_LR


class ShortRun:
    """Numbers for tests and smoke runs: 2 epochs × 4 iterations, 2 validation iterations, 1 warm-up epoch."""

    num_epochs, num_iterations_per_epoch, num_val_iterations_per_epoch, warmup_epochs, save_every = 2, 4, 2, 1, 1


class FiveEpochs:
    """Numbers for the CPU demo: 5 epochs × 50 iterations, 10 validation iterations, 1 warm-up epoch."""

    num_epochs, num_iterations_per_epoch, num_val_iterations_per_epoch, warmup_epochs, save_every = 5, 50, 10, 1, 5


class nnUNetTrainerSSL_short(ShortRun, nnUNetTrainerSSL):
    """:class:`nnUNetTrainerSSL` with :class:`ShortRun`'s numbers."""


class nnUNetTrainerScratch_short(ShortRun, nnUNetTrainerScratch):
    """:class:`nnUNetTrainerScratch` with :class:`ShortRun`'s numbers."""


class nnUNetTrainerSSL_5epochs(FiveEpochs, nnUNetTrainerSSL):
    """:class:`nnUNetTrainerSSL` with :class:`FiveEpochs`' numbers."""


class nnUNetTrainerScratch_5epochs(FiveEpochs, nnUNetTrainerScratch):
    """:class:`nnUNetTrainerScratch` with :class:`FiveEpochs`' numbers."""


TRAINERS = (nnUNetTrainerSSL, nnUNetTrainerScratch, nnUNetTrainerSSL_short, nnUNetTrainerScratch_short,
            nnUNetTrainerSSL_5epochs, nnUNetTrainerScratch_5epochs)

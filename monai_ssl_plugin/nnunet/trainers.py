"""nnU-Net trainers for fine-tuning pretrained weights, and their from-scratch twins.

Selected with ``nnUNetv2_train D CONF FOLD -tr NAME`` once ``nnUNet_extTrainer`` points to
:func:`monai_ssl_plugin.nnunet.ext_trainer_dir` (``monai-ssl nnunet-env`` prints the line).

- :class:`nnUNetTrainerSSL` loads the pretrained weights itself right after ``initialize()``
  builds the network: from ``$nnUNet_SSL_pretrained`` or the conventional export location
  (``$nnUNet_preprocessed/<Dataset>/ssl_pretrained/<plans>__<configuration>.pth``), through the
  plugin's reported loader; stem + encoder, plus the decoder when the pretext trained it (MAE);
  never the seg layers. It refuses, before any training step, weights whose record contradicts
  the plans (axis order, normalisation) or whose architecture differs (first layer named, with
  the command that fixes it), unless an allowed adaptation fits (reported).
  LR: SGD (momentum 0.99, Nesterov), linear warm-up to 1e-3 over 50 epochs, then poly.
- :class:`nnUNetTrainerSSLSawtooth`: the OpenMind sawtooth — the decoder alone first (encoder
  frozen; 25 warm-up + 25 poly epochs), then the whole network (25 warm-up, then poly).
- :class:`nnUNetTrainerSSLFrozenEncoder`: a probe — the pretrained encoder is never trained.
- :class:`nnUNetTrainerScratch` is the same trainer without pretrained weights and with nnU-Net's
  default peak rate 1e-2: same plans, epochs and schedule shape, so the baseline is fair.
- :class:`nnUNetTrainerSSL_PretrainedTrainer` (and its twin :class:`nnUNetTrainerScratch_PretrainedTrainer`):
  nnU-Net master's ``PretrainedTrainer`` recipe on nnU-Net 2.8 — stem + encoder only, no deep
  supervision, batch size 2, the same lr and schedule (see the class).

Numbers are class attributes, so a variant is one line (see the ``_short`` / ``_5epochs``
classes); ``build_network_architecture`` is nnU-Net's, so ``nnUNetv2_predict -tr`` works (a
subclass may use nnU-Net's old static signature: nnU-Net's own code detects it; loading is
unaffected because it happens after the network is built).

Environment variables (read when the trainer is created):
    nnUNet_SSL_pretrained         file to load instead of the conventional location
    nnUNet_SSL_lr                 peak lr of the pretrained trainers (default 1e-3; probe 1e-2)
    nnUNet_SSL_scratch_lr         peak lr of the scratch trainers (default 1e-2)
    nnUNet_SSL_warmup_epochs      warm-up epochs (default: the class's, 50; sawtooth 25 per tooth)
    nnUNet_SSL_decoder_epochs     sawtooth: epochs of the decoder-only tooth (default 50)
    nnUNet_SSL_epochs             number of epochs (default: the class's, 1000)
    nnUNet_SSL_iterations         training iterations per epoch (default: the class's, 250)
    nnUNet_SSL_load               auto | encoder | encoder+decoder (default auto: what the pretext trained)
    nnUNet_SSL_adapt              allowed shape adaptations: channels,kernels,stages | all | none (default channels)
    nnUNet_SSL_min_loaded_fraction   with stage adaptation: refuse below this share loaded (default 0.5)
    nnUNet_SSL_allow_normalization_mismatch=1   warn instead of refusing a normalisation mismatch
    nnUNet_SSL_seed               seed for network init, sampling and augmentation (default: unseeded, as
                                  nnU-Net). Twins with the same seed differ only in their initialisation;
                                  on a CPU with nnUNet_n_proc_DA=0 a seeded run is bitwise reproducible
                                  (with augmentation workers each worker is seeded, but the order in which
                                  their batches arrive is not)
"""

from __future__ import annotations

import functools
import os
import random
from typing import Union

import numpy as np

import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as base
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from monai_ssl_plugin.distributed import unwrap
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet.plans import bottleneck_problem, plans_fingerprint, stride_divisor, valid_patch_size
from monai_ssl_plugin.nnunet.pretrained import LOAD_MODES, find_pretrained_file, load_pretrained_into
from monai_ssl_plugin.nnunet.schedules import SawtoothLRScheduler, WarmupPolyLRScheduler
from monai_ssl_plugin.transfer.adaptation import DEFAULT_ADAPTATIONS, parse_adaptations
from monai_ssl_plugin.transfer.loading import LoadReport
from monai_ssl_plugin.transfer.networks import deep_supervision_argument

ENV_LR = "nnUNet_SSL_lr"
ENV_SCRATCH_LR = "nnUNet_SSL_scratch_lr"
ENV_WARMUP = "nnUNet_SSL_warmup_epochs"
ENV_DECODER_EPOCHS = "nnUNet_SSL_decoder_epochs"
ENV_EPOCHS = "nnUNet_SSL_epochs"
ENV_ITERATIONS = "nnUNet_SSL_iterations"
ENV_LOAD = "nnUNet_SSL_load"
ENV_ADAPT = "nnUNet_SSL_adapt"
ENV_MIN_FRACTION = "nnUNet_SSL_min_loaded_fraction"
ENV_SEED = "nnUNet_SSL_seed"
ENV_FINAL_VALIDATION = "nnUNet_SSL_final_validation"  # "0": skip the val-case prediction after training


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


def _env_set(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())


def _final_validation() -> bool:
    raw = os.environ.get(ENV_FINAL_VALIDATION, "").strip()
    if raw not in ("", "0", "1"):
        raise PluginError(f"{ENV_FINAL_VALIDATION}={raw!r} is not 0 or 1.",
                          f"Set {ENV_FINAL_VALIDATION}=0 to skip nnU-Net's final validation, or unset it.")
    return raw != "0"


def _env_seed() -> int | None:
    """``nnUNet_SSL_seed`` as an int, or None when unset (nnU-Net's unseeded default)."""
    return int(_env_number(ENV_SEED, 0, int)) if _env_set(ENV_SEED) else None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): network init, patch sampling and augmentation draw from these."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seeded_augmenter(augmenter_cls: type, seed: int, *args, **kwargs):
    """nnU-Net's multi-process augmenter with one seed per worker derived from ``seed`` (nnU-Net passes None)."""
    num_processes = kwargs.get("num_processes", args[2] if len(args) > 2 else 1)
    kwargs["seeds"] = [seed * 1000 + i for i in range(num_processes)]
    return augmenter_cls(*args, **kwargs)


def sawtooth_lengths(num_epochs: int, reference_epochs: int, warmup_epochs: int, decoder_epochs: int
                     ) -> tuple[int, int]:
    """(warm-up, decoder tooth) epochs scaled from a ``reference_epochs``-long run to ``num_epochs``
    (at least 1 each; the decoder tooth at least as long as its warm-up; a whole-network phase left)."""
    factor = num_epochs / max(1, reference_epochs)
    warmup = max(1, round(warmup_epochs * factor))
    decoder = min(max(warmup, round(decoder_epochs * factor)), max(1, num_epochs - 1))
    return min(warmup, decoder), decoder


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
    # what to load and which shape differences to adapt (env: nnUNet_SSL_load / _adapt / _min_loaded_fraction)
    load_parts: str = "auto"
    allowed_adaptations: tuple[str, ...] = DEFAULT_ADAPTATIONS
    min_loaded_fraction: float = 0.5
    # encoder training: frozen for the whole run (probe) or for the first tooth (sawtooth)
    freeze_encoder: bool = False
    sawtooth: bool = False
    decoder_epochs: int = 0  # sawtooth: length of the decoder-only tooth (incl. its warm-up)
    # test-time mirroring (nnU-Net's default: 8 flips in 3D). Off in the CPU-sized variants, where it
    # costs 8x the inference time; the choice is saved in the checkpoint, so nnUNetv2_predict follows it.
    inference_mirroring: bool = True
    deep_supervision: bool = True  # nnU-Net's default; the PretrainedTrainer recipe trains without it
    batch_size: int | None = None  # None: the plans'; a number overrides the plans' configuration

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        cls = type(self)
        if cls.batch_size is not None:  # before nnU-Net reads the plans, as nnU-Net master's PretrainedTrainer does
            plans["configurations"][configuration]["batch_size"] = int(cls.batch_size)
        super().__init__(plans, configuration, fold, dataset_json, device)
        # Primus has no deep supervision (nnU-Net master's Primus trainers train without it too)
        self.enable_deep_supervision = cls.deep_supervision and deep_supervision_argument(
            self.configuration_manager.network_arch_class_name) is not None
        # nnUNetTrainer.__init__ set its defaults on the instance; apply this class's numbers over them
        self.num_iterations_per_epoch = max(1, int(_env_number(ENV_ITERATIONS, cls.num_iterations_per_epoch, int)))
        self.num_val_iterations_per_epoch = cls.num_val_iterations_per_epoch
        self.save_every = cls.save_every
        self.initial_lr = float(_env_number(cls.lr_env, cls.initial_lr, float))
        self.num_epochs = max(1, int(_env_number(ENV_EPOCHS, cls.num_epochs, int)))
        warmup = int(_env_number(ENV_WARMUP, cls.warmup_epochs, int))
        if cls.sawtooth:
            decoder = int(_env_number(ENV_DECODER_EPOCHS, cls.decoder_epochs, int))
            if self.num_epochs != cls.num_epochs and not (_env_set(ENV_WARMUP) or _env_set(ENV_DECODER_EPOCHS)):
                warmup, decoder = sawtooth_lengths(self.num_epochs, cls.num_epochs, warmup, decoder)
            if not 0 < decoder < self.num_epochs:
                raise PluginError(f"The sawtooth's decoder tooth ({decoder} epochs) must be shorter than the run "
                                  f"({self.num_epochs} epochs).", f"Set {ENV_DECODER_EPOCHS} below {ENV_EPOCHS}.")
            self.decoder_epochs = decoder
        elif not _env_set(ENV_WARMUP) and warmup > self.num_epochs // 2:
            warmup = self.num_epochs // 2 if self.num_epochs > 1 else 0  # a shortened run keeps a decay phase
        self.warmup_epochs = warmup
        self.load_parts = os.environ.get(ENV_LOAD, "").strip().lower() or cls.load_parts
        if self.load_parts not in LOAD_MODES:
            raise PluginError(f"{ENV_LOAD}={self.load_parts!r} is not a load mode.",
                              f"Use one of {', '.join(LOAD_MODES)}.")
        self.allowed_adaptations = parse_adaptations(os.environ.get(ENV_ADAPT), cls.allowed_adaptations)
        self.min_loaded_fraction = float(_env_number(ENV_MIN_FRACTION, cls.min_loaded_fraction, float))
        self.pretrained_report: LoadReport | None = None
        self.pretrained_notes: dict[str, str] = {}
        self._restoring_checkpoint = False
        self._encoder_trainable: bool | None = None
        self.seed = _env_seed()
        self.final_validation = _final_validation()

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """nnU-Net's prediction of the fold's validation cases after training; skipped with
        ``nnUNet_SSL_final_validation=0`` for runs that are scored on other cases (the weights are
        already saved, so skipping changes nothing else)."""
        if not self.final_validation:
            self.print_to_log_file(f"[monai-ssl] final validation skipped ({ENV_FINAL_VALIDATION}=0)")
            return
        super().perform_actual_validation(save_probabilities)

    # -- network and pretrained weights ---------------------------------------------------------
    def initialize(self) -> None:
        """nnU-Net's initialize, then the pretrained weights (unless a checkpoint is being restored)."""
        self.check_patch_size()
        if self.seed is not None:  # before the network is built, so twins start from the same random init
            seed_everything(self.rank_seed())
            self.print_to_log_file(f"[monai-ssl] seed {self.seed} ({ENV_SEED})")
        super().initialize()
        self.print_to_log_file(f"[monai-ssl] plans {self.plans_manager.plans_name}: fingerprint "
                               f"{plans_fingerprint(self.plans_manager.plans)} (everything except the plans name; "
                               "equal fingerprints = identical plans)")
        if self.load_pretrained and not self._restoring_checkpoint:
            self.load_pretrained_weights()

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """nnU-Net's network from the plans; a network without deep supervision (Primus) is not given the argument."""
        cm = configuration_manager
        return get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                      cm.network_arch_init_kwargs_req_import, num_input_channels, num_output_channels,
                                      allow_init=True, deep_supervision=deep_supervision_argument(
                                          cm.network_arch_class_name, enable_deep_supervision))

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """nnU-Net's switch lives on ``network.decoder``; Primus has no such decoder and never deep-supervises."""
        if deep_supervision_argument(self.configuration_manager.network_arch_class_name) is not None:
            super().set_deep_supervision_enabled(enabled)

    def check_patch_size(self) -> None:
        """Refuse, before anything is built, a patch whose bottleneck would crash the first step (one voxel), or a
        patch other than the one Primus computes (its ``input_shape``)."""
        cm = self.configuration_manager
        kwargs = cm.network_arch_init_kwargs or {}
        shape = kwargs.get("input_shape")
        if shape is not None and [int(s) for s in shape] != [int(p) for p in cm.patch_size]:
            raise PluginError(f"{self.plans_manager.plans_name} {self.configuration_name}: patch size {cm.patch_size} "
                              f"is not Primus's input_shape {list(shape)} (the only input it computes).",
                              f"Write the plans again with `monai-ssl nnunet-plans {self.plans_manager.dataset_name} "
                              "--checkpoint CHECKPOINT` (its patch is the pretraining patch).")
        if "strides" not in kwargs:
            return
        problem = bottleneck_problem(cm.patch_size, kwargs)
        if problem:
            fix = valid_patch_size(cm.patch_size, stride_divisor(kwargs, len(cm.patch_size)))
            raise PluginError(f"{self.plans_manager.plans_name} {self.configuration_name}: {problem}.",
                              f"Write plans with a valid patch: `monai-ssl nnunet-plans {self.plans_manager.dataset_name}"
                              f" --checkpoint CHECKPOINT --patch_size \"{fix}\"` (or set patch_size {fix} in the plans).")

    def load_pretrained_weights(self) -> LoadReport:
        """Find, check and load the pretrained weights into ``self.network``; the report goes to the log."""
        pm, cm = self.plans_manager, self.configuration_manager
        path = find_pretrained_file(pm.dataset_name, self.configuration_name, pm.plans_name)
        result = load_pretrained_into(
            self.network, path, normalization_schemes=cm.normalization_schemes, spacing=cm.spacing,
            what=f"{pm.dataset_name} {pm.plans_name} {self.configuration_name} "
                 f"({self.num_input_channels} input channel(s))",
            dataset_name=pm.dataset_name, configuration=self.configuration_name,
            plans_architecture=cm.configuration.get("architecture"), num_input_channels=self.num_input_channels,
            load=self.load_parts, allowed_adaptations=self.allowed_adaptations,
            min_loaded_fraction=self.min_loaded_fraction, log=self.print_to_log_file)
        self.pretrained_report, self.pretrained_notes = result.report, result.notes
        return self.pretrained_report

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        """Continuing (``--c``) or validating (``--val``): nnU-Net's own checkpoint wins, no pretrained load."""
        self._restoring_checkpoint = True
        try:
            super().load_checkpoint(filename_or_checkpoint)
        finally:
            self._restoring_checkpoint = False

    def rank_seed(self) -> int:
        """The seed of this process: under DDP each rank samples its own patches (DDP syncs the initial weights)."""
        return self.seed + (self.local_rank if self.is_ddp else 0)

    def get_dataloaders(self):
        """nnU-Net's loaders; with a seed, its augmentation workers get seeds derived from it."""
        if self.seed is None:
            return super().get_dataloaders()
        original = base.NonDetMultiThreadedAugmenter
        base.NonDetMultiThreadedAugmenter = functools.partial(_seeded_augmenter, original, self.rank_seed())
        try:  # nnU-Net builds its augmenters by this module-level name; restored right after
            return super().get_dataloaders()
        finally:
            base.NonDetMultiThreadedAugmenter = original

    # -- schedule ---------------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                    momentum=0.99, nesterov=True)
        if self.sawtooth:
            scheduler = SawtoothLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.warmup_epochs,
                                            self.decoder_epochs)
            self.print_to_log_file(
                f"[monai-ssl] LR schedule: sawtooth — decoder only (encoder frozen) for epochs 0-"
                f"{self.decoder_epochs - 1}: warm-up to {self.initial_lr:g} over {scheduler.warmup_epochs} epoch(s), "
                f"then poly; whole network from epoch {self.decoder_epochs}: warm-up over {scheduler.warmup_epochs} "
                f"epoch(s), then poly (0.9) to epoch {self.num_epochs}; {self.num_iterations_per_epoch} iterations/epoch")
        else:
            scheduler = WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.warmup_epochs)
            self.print_to_log_file(f"[monai-ssl] LR schedule: linear warm-up to {self.initial_lr:g} over "
                                   f"{self.warmup_epochs} epoch(s), then poly (0.9) to epoch {self.num_epochs}; "
                                   f"{self.num_iterations_per_epoch} iterations/epoch"
                                   + ("; encoder frozen for the whole run" if self.freeze_encoder else ""))
        return optimizer, scheduler

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        out = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not type(self).inference_mirroring:
            self.inference_allowed_mirroring_axes = None  # training-time mirroring (the returned axes) stays
        return out

    # -- frozen encoder (probe, sawtooth's first tooth) ------------------------------------------
    def encoder_frozen_at(self, epoch: int) -> bool:
        return self.freeze_encoder or (self.sawtooth and epoch < self.decoder_epochs)

    def _encoder_module(self) -> torch.nn.Module:
        """Stem + encoder: a U-Net's ``.encoder``, or the modules a ViT names as its stem and encoder (Primus:
        ``down_projection`` + ``eva``)."""
        net = unwrap(self.network)  # nnU-Net compiles the network, then wraps it in DDP
        encoder = getattr(net, "encoder", None)
        if isinstance(encoder, torch.nn.Module):
            return encoder
        names = [getattr(net, "key_to_stem", None), getattr(net, "key_to_encoder", None)]
        parts = [getattr(net, n, None) for n in names if isinstance(n, str) and "." not in n]
        if len(parts) == 2 and all(isinstance(p, torch.nn.Module) for p in parts):
            return torch.nn.ModuleList(parts)
        raise PluginError(f"{type(net).__name__} has no .encoder to freeze.",
                          "Use a dynamic-network-architectures U-Net (PlainConvUNet / ResidualEncoderUNet) or Primus.")

    def set_encoder_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze stem + encoder (frozen parameters get no gradient, so SGD leaves them as they are)."""
        if trainable == self._encoder_trainable:
            return
        encoder = self._encoder_module()
        for p in encoder.parameters():
            p.requires_grad_(trainable)
        n = sum(p.numel() for p in encoder.parameters())
        self.print_to_log_file(f"[monai-ssl] encoder {'trainable' if trainable else 'frozen'} from epoch "
                               f"{self.current_epoch} ({n:,} parameters)")
        self._encoder_trainable = trainable

    def on_train_epoch_start(self) -> None:
        self.set_encoder_trainable(not self.encoder_frozen_at(self.current_epoch))
        super().on_train_epoch_start()


class nnUNetTrainerScratch(nnUNetTrainerSSL):
    """The from-scratch twin: no pretrained weights, nnU-Net's default peak lr 1e-2, same everything else."""

    initial_lr = 1e-2
    load_pretrained = False
    lr_env = ENV_SCRATCH_LR


class nnUNetTrainerSSLSawtooth(nnUNetTrainerSSL):
    """OpenMind's sawtooth: decoder alone first (encoder frozen), then everything; each tooth warm-up + poly.

    Over 1000 epochs: 25 warm-up + 25 poly epochs for the decoder tooth, then 25 warm-up epochs and
    poly to the end; ``nnUNet_SSL_epochs`` scales both teeth proportionally (``nnUNet_SSL_warmup_epochs``
    / ``nnUNet_SSL_decoder_epochs`` set them explicitly).
    """

    sawtooth = True
    warmup_epochs = 25
    decoder_epochs = 50


class nnUNetTrainerSSLFrozenEncoder(nnUNetTrainerSSL):
    """A probe: the pretrained stem + encoder never train; the decoder (and seg layers) do, at nnU-Net's 1e-2."""

    freeze_encoder = True
    initial_lr = 1e-2


class nnUNetTrainerSSL_PretrainedTrainer(nnUNetTrainerSSL):
    """nnU-Net master's ``PretrainedTrainer`` recipe (its nnssl fine-tuning) on nnU-Net 2.8, through the plugin's
    checked loader: SGD (momentum 0.99, Nesterov, weight decay 3e-5), lr 1e-3 linearly warmed up over 50
    epochs (epoch e at 1e-3 (e + 1) / 50), then poly (0.9) from epoch 50 to 1000; 250 iterations per epoch;
    stem + encoder loaded, decoder fresh; no deep supervision; batch size 2 whatever the plans say.

    Master also preprocesses at the pretraining's spacing with z-score on every channel and trains at the
    checkpoint's recommended patch: that is the plans' part (``monai-ssl nnunet-plans D --checkpoint C
    --spacing checkpoint --normalization checkpoint``), not the trainer's.
    """

    load_parts = "encoder"
    deep_supervision = False
    batch_size = 2


class nnUNetTrainerScratch_PretrainedTrainer(nnUNetTrainerSSL_PretrainedTrainer):
    """The from-scratch twin of the recipe (master's ``--from_scratch``: the same trainer, lr 1e-2, nothing loaded)."""

    initial_lr = 1e-2
    load_pretrained = False
    lr_env = ENV_SCRATCH_LR


class ShortRun:
    """Numbers for tests and smoke runs: 2 epochs × 4 iterations, 2 validation iterations, 1 warm-up epoch,
    no test-time mirroring."""

    num_epochs, num_iterations_per_epoch, num_val_iterations_per_epoch, warmup_epochs, save_every = 2, 4, 2, 1, 1
    inference_mirroring = False


class FiveEpochs:
    """Numbers for the CPU demo: 5 epochs × 50 iterations, 10 validation iterations, 1 warm-up epoch,
    no test-time mirroring (inference 8x cheaper on a CPU)."""

    num_epochs, num_iterations_per_epoch, num_val_iterations_per_epoch, warmup_epochs, save_every = 5, 50, 10, 1, 5
    inference_mirroring = False


class nnUNetTrainerSSL_short(ShortRun, nnUNetTrainerSSL):
    """:class:`nnUNetTrainerSSL` with :class:`ShortRun`'s numbers."""


class nnUNetTrainerScratch_short(ShortRun, nnUNetTrainerScratch):
    """:class:`nnUNetTrainerScratch` with :class:`ShortRun`'s numbers."""


class nnUNetTrainerSSLSawtooth_short(ShortRun, nnUNetTrainerSSLSawtooth):
    """Sawtooth in 3 epochs × 4 iterations: epoch 0 decoder only, epochs 1-2 the whole network."""

    num_epochs, warmup_epochs, decoder_epochs = 3, 1, 1


class nnUNetTrainerSSLFrozenEncoder_short(ShortRun, nnUNetTrainerSSLFrozenEncoder):
    """:class:`nnUNetTrainerSSLFrozenEncoder` with :class:`ShortRun`'s numbers."""


class nnUNetTrainerSSL_5epochs(FiveEpochs, nnUNetTrainerSSL):
    """:class:`nnUNetTrainerSSL` with :class:`FiveEpochs`' numbers."""


class nnUNetTrainerScratch_5epochs(FiveEpochs, nnUNetTrainerScratch):
    """:class:`nnUNetTrainerScratch` with :class:`FiveEpochs`' numbers."""


class nnUNetTrainerSSLSawtooth_5epochs(FiveEpochs, nnUNetTrainerSSLSawtooth):
    """Sawtooth in 5 epochs × 50 iterations: epochs 0-1 decoder only (1 warm-up), epochs 2-4 everything."""

    warmup_epochs, decoder_epochs = 1, 2


class nnUNetTrainerSSLFrozenEncoder_5epochs(FiveEpochs, nnUNetTrainerSSLFrozenEncoder):
    """:class:`nnUNetTrainerSSLFrozenEncoder` with :class:`FiveEpochs`' numbers."""


class nnUNetTrainerSSL_PretrainedTrainer_short(ShortRun, nnUNetTrainerSSL_PretrainedTrainer):
    """:class:`nnUNetTrainerSSL_PretrainedTrainer` with :class:`ShortRun`'s numbers."""


class nnUNetTrainerScratch_PretrainedTrainer_short(ShortRun, nnUNetTrainerScratch_PretrainedTrainer):
    """:class:`nnUNetTrainerScratch_PretrainedTrainer` with :class:`ShortRun`'s numbers."""


TRAINERS = (nnUNetTrainerSSL, nnUNetTrainerScratch, nnUNetTrainerSSLSawtooth, nnUNetTrainerSSLFrozenEncoder,
            nnUNetTrainerSSL_PretrainedTrainer, nnUNetTrainerScratch_PretrainedTrainer,
            nnUNetTrainerSSL_PretrainedTrainer_short, nnUNetTrainerScratch_PretrainedTrainer_short,
            nnUNetTrainerSSL_short, nnUNetTrainerScratch_short, nnUNetTrainerSSLSawtooth_short,
            nnUNetTrainerSSLFrozenEncoder_short, nnUNetTrainerSSL_5epochs, nnUNetTrainerScratch_5epochs,
            nnUNetTrainerSSLSawtooth_5epochs, nnUNetTrainerSSLFrozenEncoder_5epochs)

"""``SSLInitHandler``: an ignite handler that initialises a bundle's network from SSL weights.

Add it to any bundle's ``train#handlers`` (the overlay written by :mod:`.overlay` does)::

    - _target_: monai_ssl_plugin.monai_bundles.SSLInitHandler
      load_path: /runs/ssl/checkpoints/final.pt
      network: "@network"
      target: auto            # or feature_extractor.body, swinViT, vit, ...
      freeze_epochs: 0        # > 0: pretrained part frozen for that many epochs, then trained
      linear_probe: false     # true: frozen for the whole run

The weights are loaded when the handler is attached, i.e. when the trainer is built and before any
``Events.STARTED`` handler: a ``CheckpointLoader`` that resumes a run still wins. The report
(loaded / skipped / missing) is printed and kept in ``handler.report`` and ``engine.state.ssl_init``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from ignite.engine import Engine, Events
from torch import nn

from monai_ssl_plugin.monai_bundles.finetune import Freezer
from monai_ssl_plugin.monai_bundles.load import load_pretrained
from monai_ssl_plugin.monai_bundles.targets import resolve_target
from monai_ssl_plugin.transfer.loading import LoadReport

logger = logging.getLogger(__name__)


class SSLInitHandler:
    """Load SSL weights into ``network`` at attach time; optionally freeze the pretrained part.

    Args:
        load_path: pretraining checkpoint, SSL bundle directory, or bare state dict file.
        network: the bundle's network (``"@network"``).
        target, min_fraction, axis_order, on_axis_mismatch, in_channels, normalization, backbone_family,
            source_axis_order, source_prefix, on_normalization_mismatch: as in :func:`~monai_ssl_plugin.monai_bundles.load_pretrained`.
        freeze_epochs: keep the pretrained part frozen for this many epochs, then train it.
        linear_probe: keep it frozen for the whole run (only new layers train).
        freeze_norm_stats: while frozen, its batch norms use their running statistics.
    """

    def __init__(self, load_path: str, network: nn.Module, target: str = "auto", freeze_epochs: int = 0,
                 linear_probe: bool = False, min_fraction: float = 0.9, axis_order: str = "monai",
                 on_axis_mismatch: str = "permute", in_channels: int | None = None,
                 normalization: str | Sequence[str] | None = None, backbone_family: str | None = None,
                 source_axis_order: str | None = None, source_prefix: str | None = None,
                 freeze_norm_stats: bool = True, on_normalization_mismatch: str = "warn") -> None:
        self.load_path = load_path
        self.network = network
        self.target = target
        self.freeze_epochs = int(freeze_epochs)
        self.linear_probe = bool(linear_probe)
        self.kwargs = dict(min_fraction=min_fraction, axis_order=axis_order, on_axis_mismatch=on_axis_mismatch,
                           in_channels=in_channels, normalization=normalization, backbone_family=backbone_family,
                           source_axis_order=source_axis_order, source_prefix=source_prefix,
                           on_normalization_mismatch=on_normalization_mismatch)
        self.freezer = Freezer(network, resolve_target(network, target), freeze_norm_stats=freeze_norm_stats)
        self.report: LoadReport | None = None

    @staticmethod
    def _log(msg: str) -> None:
        print(msg, flush=True)

    def attach(self, engine: Engine) -> None:
        self.report = load_pretrained(self.network, self.load_path, self.freezer.target, log=self._log, **self.kwargs)
        engine.state.ssl_init = {"target": self.freezer.target.name, "summary": self.report.summary(),
                                 "loaded_fraction": self.report.loaded_fraction}
        if self.linear_probe or self.freeze_epochs > 0:
            n = self.freezer.freeze()
            how = "for the whole run (linear probe)" if self.linear_probe else f"for {self.freeze_epochs} epoch(s)"
            self._log(f"[monai-ssl] froze {n:,} pretrained values of {self.freezer.target.name} {how}")
        engine.add_event_handler(Events.EPOCH_STARTED, self._check_epoch)

    def _check_epoch(self, engine: Engine) -> None:
        """Unfreeze when an epoch after the first ``freeze_epochs`` starts. Checked at EPOCH_STARTED, so a
        run resumed past ``freeze_epochs`` (epoch restored at STARTED) trains unfrozen from its first epoch."""
        if self.freezer.frozen and not self.linear_probe and engine.state.epoch > self.freeze_epochs:
            n = self.freezer.unfreeze()
            self._log(f"[monai-ssl] unfroze {n:,} pretrained values of {self.freezer.target.name} at the start of "
                      f"epoch {engine.state.epoch}")

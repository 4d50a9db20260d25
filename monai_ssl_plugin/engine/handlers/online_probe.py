"""Online probe: how linearly separable / clustered the backbone's embeddings are, during pretraining.

Every ``every_n`` iterations (and at the end) the handler embeds a small labelled set with the
backbone adapter's ``embed`` (whole volumes, (1, C, *spatial) each -> (D,)), fits a kNN and a linear
probe (:mod:`monai_ssl_plugin.engine.probes`) on half the cases and scores them on the other half
(fixed, stratified: within each class alternate cases). It logs ``probe/knn_accuracy``, ``probe/knn_auc``,
``probe/linear_accuracy``, ``probe/linear_auc`` to ``engine.state.metrics``, the log and TensorBoard,
and keeps the curve in ``output_dir/online_probe.json`` (atomically rewritten at each check).

The probe must not change the pretraining: it runs under ``torch.no_grad`` with every module in
eval mode (no BatchNorm statistics updated), restores each module's train/eval flag, and saves and
restores the CPU and CUDA random number generator states, so the run's loss curve is bit-identical
with or without it (tested). The probe set is a file ``{"images": [(C, *spatial)], "labels": (N,)}``
(``torch.save``; read with ``weights_only=True``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_ssl_plugin.checkpoint import atomic_write_text, safe_load
from monai_ssl_plugin.distributed import is_main_process
from monai_ssl_plugin.engine.probes import classification_metrics, knn_probabilities, linear_probabilities
from monai_ssl_plugin.errors import PluginError

logger = logging.getLogger(__name__)


@contextmanager
def side_effect_free(module: nn.Module) -> Iterator[None]:
    """Run a probe on ``module`` without changing the training: every submodule in eval mode (no
    BatchNorm statistics updated) and back to its own train/eval flag afterwards, and the CPU and CUDA
    random number generator states restored, so the training draws exactly what it would have drawn."""
    modules = list(module.modules())
    modes = [m.training for m in modules]
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        module.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


class OnlineProbeHandler:
    """kNN + linear probe of ``backbone.embed`` on a small labelled set every ``every_n`` iterations.

    Args:
        backbone: the backbone adapter being pretrained (the bundle's ``@network``).
        probe_set: path of the labelled set (see the module docstring), or the dict itself.
        every_n: iterations between probes.
        output_dir: where ``online_probe.json`` goes (``None``: not written).
        log_dir: TensorBoard folder for ``probe/*`` scalars (``None``: no TensorBoard).
        k: neighbours of the kNN probe.
    """

    def __init__(self, backbone: nn.Module, probe_set: str | Path | dict[str, Any], every_n: int = 50,
                 output_dir: str | Path | None = None, log_dir: str | Path | None = None, k: int = 5):
        if int(every_n) < 1:
            raise PluginError(f"OnlineProbeHandler every_n={every_n} is not >= 1.", "Probe every 1 or more iterations.")
        data = safe_load(probe_set) if not isinstance(probe_set, dict) else probe_set
        self.images = list(data["images"])
        self.labels = torch.as_tensor(data["labels"]).long()
        if len(self.images) != len(self.labels) or len(self.images) < 4:
            raise PluginError(f"The online probe set has {len(self.images)} images and {len(self.labels)} labels.",
                              "Give at least 4 labelled images, one label each.")
        self.n_classes = int(self.labels.max()) + 1
        # fixed held-out half, stratified: within each class, alternate cases go to fit / score
        fit, score = [], []
        for c in range(self.n_classes):
            idx = torch.nonzero(self.labels == c).flatten().tolist()
            fit += idx[0::2]
            score += idx[1::2]
        self.split = (torch.tensor(sorted(fit)), torch.tensor(sorted(score)))
        self.backbone = backbone
        self.every_n = int(every_n)
        self.k = int(k)
        self.output_file = Path(output_dir) / "online_probe.json" if output_dir is not None else None
        self.log_dir = log_dir
        self.curve: list[dict[str, float]] = []
        if self.output_file is not None and self.output_file.is_file():  # a resumed run keeps its curve
            self.curve = json.loads(self.output_file.read_text())
        self._writer: Any = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n), self.check)
        engine.add_event_handler(Events.COMPLETED, self._final)

    # -- embedding without side effects -----------------------------------------------------
    @torch.no_grad()
    def embeddings(self) -> torch.Tensor:
        """(N, D) embeddings of the probe set; the model's modes and the RNG states are restored."""
        device = next(self.backbone.parameters()).device
        with side_effect_free(self.backbone):
            return torch.stack([self.backbone.embed(x[None].to(device))[0].float().cpu() for x in self.images])

    def probe(self) -> dict[str, float]:
        """Fit on one half of the probe set, score on the other (see ``self.split``)."""
        emb = self.embeddings()
        tr, te = self.split
        out: dict[str, float] = {}
        for name, probs in (("knn", knn_probabilities(emb[tr], self.labels[tr], emb[te], self.n_classes, self.k)),
                            ("linear", linear_probabilities(emb[tr], self.labels[tr], emb[te], self.n_classes))):
            out.update({f"{name}_{k}": v for k, v in classification_metrics(probs, self.labels[te]).items()})
        return out

    def check(self, engine: Engine) -> None:
        if not is_main_process():
            return
        iteration = int(engine.state.iteration)
        if self.curve and self.curve[-1]["iteration"] >= iteration:
            return
        metrics = self.probe()
        for k, v in metrics.items():
            engine.state.metrics[f"probe/{k}"] = v
        logger.info("online probe at iteration %d: %s", iteration, ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        self.curve = [c for c in self.curve if c["iteration"] < iteration] + [{"iteration": iteration, **metrics}]
        if self.output_file is not None:
            atomic_write_text(json.dumps(self.curve, indent=1), self.output_file)
        if self.log_dir is not None:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.log_dir))
            for k, v in metrics.items():
                self._writer.add_scalar(f"probe/{k}", v, iteration)
            self._writer.flush()

    def _final(self, engine: Engine) -> None:
        self.check(engine)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

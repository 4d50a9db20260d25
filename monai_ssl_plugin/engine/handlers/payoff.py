"""Pay-off monitor: does the encoder being pretrained already help a few-label segmentation, and is it still improving?

Every ``every_n`` iterations (at the start, i.e. the random initialisation, and at the end too) the
monitor runs a frozen-encoder few-shot **segmentation probe**: the encoder's multi-scale features of
``n_fit`` labelled cases train a linear head (a logistic regression on the standardised hypercolumn of
``voxels_per_class`` class-balanced voxels per case, L-BFGS from zero weights,
:func:`monai_ssl_plugin.engine.probes.segmentation_probe`), which labels every voxel of ``n_score``
other labelled cases and is scored by Dice. Where the cases also carry a class label
(``class_labels``), the existing kNN / linear **classification probe**
(:class:`~monai_ssl_plugin.engine.handlers.online_probe.OnlineProbeHandler`) runs on the same cases.

Each case is one fixed crop of ``patch_size`` centred on its label's foreground (zero-padded when the
image is smaller), the same at every check, so the curve moves only because the encoder does. The first
row (iteration 0) is the random initialisation; ``gain`` is the Dice above it, ``status`` says
``not yet`` (gain <= ``min_gain``), ``paying`` or ``plateau`` (the best Dice of the last ``patience``
checks is not ``min_gain`` above the best before them).

Shown in the progress line and the epoch log line (``payoff/*`` in ``engine.state.metrics``), in
TensorBoard (``payoff/*`` scalars) and in ``output_dir/payoff.csv`` (one row per check, rewritten
atomically; a resumed run keeps its earlier rows). It leaves the training unchanged: features are
computed under ``torch.no_grad`` with every module in eval mode, the modes and the CPU/CUDA RNG states
are restored (:func:`~monai_ssl_plugin.engine.handlers.online_probe.side_effect_free`), and the head is
fitted on copies of the features without drawing random numbers (tested: bit-identical weights).
Without ``labels`` the monitor does nothing, so the bundles can list it switched off.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from torch import nn

from monai_ssl_plugin.checkpoint import atomic_write_text
from monai_ssl_plugin.data.labelled import labelled_case_ids, read_labelled
from monai_ssl_plugin.distributed import is_main_process
from monai_ssl_plugin.engine.handlers.online_probe import OnlineProbeHandler, side_effect_free
from monai_ssl_plugin.engine.probes import segmentation_probe
from monai_ssl_plugin.errors import PluginError

logger = logging.getLogger(__name__)

COLUMNS = ("iteration", "seg_dice", "gain", "status", "knn_accuracy", "knn_auc", "linear_accuracy", "linear_auc",
           "seconds")


def fixed_crop(image: np.ndarray, label: np.ndarray, patch: Sequence[int] | None, divisor: Sequence[int]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic crop of ``patch`` (or the whole image) centred on the label's foreground
    centroid, zero-padded at the far end of each axis to the patch and to a multiple of ``divisor``."""
    x, y = torch.from_numpy(np.ascontiguousarray(image)).float(), torch.from_numpy(label.astype(np.int64))
    shape = y.shape
    want = [int(p) for p in patch] if patch is not None else list(shape)
    fg = torch.nonzero(y > 0).float()
    centre = fg.mean(0).round().long().tolist() if len(fg) else [s // 2 for s in shape]
    starts = [min(max(0, c - w // 2), max(0, s - w)) for c, w, s in zip(centre, want, shape)]
    sl = tuple(slice(a, a + w) for a, w in zip(starts, want))
    x, y = x[(slice(None), *sl)], y[sl]
    pads: list[int] = []
    for size, w, d in reversed(list(zip(y.shape, want, divisor))):
        target = max(size, w)
        pads += [0, target - size + (-target) % int(d)]
    return F.pad(x, pads), F.pad(y, pads)


def _class_labels(path: str | Path | None, key: str | None, case_ids: list[str]) -> list[int] | None:
    """Class label per case from a JSON file ``{case: label}`` (or ``{case: {key: label}}``); ``None``
    when no file is given or a case has none."""
    if path is None:
        return None
    table = json.loads(Path(path).expanduser().read_text())
    labels = []
    for c in case_ids:
        value = table.get(c)
        if isinstance(value, dict):
            value = value.get(key) if key else None
        if value is None:
            logger.warning("pay-off monitor: case %s has no class label in %s; the classification probe is off", c, path)
            return None
        labels.append(int(value))
    return labels


class PayoffMonitor:
    """Few-shot segmentation (and classification) probe of the frozen encoder every ``every_n`` iterations.

    Args:
        backbone: the backbone adapter being pretrained (the bundle's ``@network``).
        labels: an nnU-Net raw dataset folder (imagesTr + labelsTr), its labelsTr folder, or a folder of
            label maps (then ``images`` is the images folder). ``None``: the monitor is off.
        images: the images folder, when ``labels`` is a plain folder of label maps.
        every_n: iterations between checks.
        n_fit / n_score: labelled cases the head is fitted on / scored on (the first ones in case-id order).
        patch_size: crop per case (``None``: the whole image).
        voxels_per_class: voxels per class and fitting case the linear head is fitted on.
        class_labels / class_key: JSON ``{case: class}`` (or ``{case: {class_key: class}}``, e.g. the demo
            cohort's ``attributes.json`` with ``atrophy``) for the classification probe.
        output_dir: where ``payoff.csv`` goes (``None``: not written).
        log_dir: TensorBoard folder for ``payoff/*`` scalars (``None``: no TensorBoard).
        min_gain / patience: what counts as paying and as a plateau (Dice points, checks).
    """

    def __init__(self, backbone: nn.Module, labels: str | Path | None = None, images: str | Path | None = None,
                 every_n: int = 250, n_fit: int = 4, n_score: int = 2, patch_size: Sequence[int] | None = None,
                 voxels_per_class: int = 1000, class_labels: str | Path | None = None,
                 class_key: str | None = None, output_dir: str | Path | None = None,
                 log_dir: str | Path | None = None, min_gain: float = 0.01, patience: int = 3):
        self.backbone = backbone
        self.enabled = labels not in (None, "", "null", "None")
        self.every_n, self.voxels_per_class = int(every_n), int(voxels_per_class)
        self.min_gain, self.patience = float(min_gain), int(patience)
        self.output_file = Path(output_dir) / "payoff.csv" if output_dir is not None else None
        self.log_dir = log_dir
        self._writer: Any = None
        self.rows: list[dict[str, Any]] = []
        if not self.enabled:
            return
        if min(self.every_n, int(n_fit), int(n_score), self.voxels_per_class) < 1:
            raise PluginError(f"PayoffMonitor every_n={every_n}, n_fit={n_fit}, n_score={n_score}, "
                              f"voxels_per_class={voxels_per_class}: each must be >= 1.", "Set them to 1 or more.")
        self._load_cases(labels, images, int(n_fit), int(n_score), patch_size)
        self._classifier = self._make_classifier(class_labels, class_key)
        if self.output_file is not None and self.output_file.is_file():  # a resumed run keeps its curve
            self.rows = [self._parse(r) for r in csv.DictReader(io.StringIO(self.output_file.read_text()))]

    # -- set-up -------------------------------------------------------------------------------
    def _load_cases(self, labels: str | Path, images: str | Path | None, n_fit: int, n_score: int,
                    patch_size: Sequence[int] | None) -> None:
        ids = labelled_case_ids(labels, images)
        if len(ids) < n_fit + n_score:
            raise PluginError(f"The pay-off monitor needs {n_fit + n_score} labelled cases (n_fit {n_fit} + n_score "
                              f"{n_score}); {labels} has {len(ids)}.", "Lower n_fit / n_score or add labelled cases.")
        self.case_ids = ids[:n_fit + n_score]
        divisor = self.backbone.divisor() if hasattr(self.backbone, "divisor") else [1, 1, 1]
        crops = [fixed_crop(x, y, patch_size, divisor) for _, x, y in read_labelled(labels, images, self.case_ids)]
        self.crops = crops
        self.n_fit = n_fit
        self.n_classes = max(2, int(max(int(y.max()) for _, y in crops)) + 1)

    def _make_classifier(self, class_labels: str | Path | None, class_key: str | None) -> OnlineProbeHandler | None:
        labels = _class_labels(class_labels, class_key, self.case_ids)
        if labels is None or len(set(labels)) < 2:
            return None
        return OnlineProbeHandler(self.backbone, {"images": [x for x, _ in self.crops], "labels": torch.tensor(labels)},
                                  every_n=self.every_n)

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self.check)  # iteration 0: the random initialisation
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n), self.check)
        engine.add_event_handler(Events.COMPLETED, self._final)

    # -- measuring ----------------------------------------------------------------------------
    def measure(self) -> dict[str, float]:
        """Segmentation Dice (and classification metrics) of the encoder as it is now."""
        t0 = time.perf_counter()
        device = next(self.backbone.parameters()).device
        with side_effect_free(self.backbone), torch.no_grad():
            feats = [[f.detach().float() for f in self.backbone.encode(x[None].to(device))] for x, _ in self.crops]
            targets = [y.to(device) for _, y in self.crops]
            seg = segmentation_probe(list(zip(feats[:self.n_fit], targets[:self.n_fit])),
                                     list(zip(feats[self.n_fit:], targets[self.n_fit:])), self.n_classes,
                                     self.voxels_per_class)
        out = {"seg_dice": seg["dice"]}
        out.update({f"seg_dice_class{k + 1}": v for k, v in enumerate(seg["dice_per_class"])})
        if self._classifier is not None:
            out.update(self._classifier.probe())
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return out

    def _status(self, dice: float) -> tuple[float, str]:
        """(gain over the random initialisation, status) of a new check with ``dice``."""
        base = next((r["seg_dice"] for r in self.rows if r["iteration"] == 0), None)
        if base is None:
            return math.nan, "baseline" if not self.rows else "no baseline"
        gain = dice - base
        history = [r["seg_dice"] for r in self.rows if r["iteration"] > 0] + [dice]
        if len(history) > self.patience and max(history[-self.patience:]) < max(history[:-self.patience]) + self.min_gain:
            return gain, "plateau"
        return gain, "paying" if gain > self.min_gain else "not yet"

    def check(self, engine: Engine) -> None:
        if not is_main_process():
            return
        iteration = int(engine.state.iteration)
        if self.rows and self.rows[-1]["iteration"] >= iteration:
            return
        metrics = self.measure()
        gain, status = self._status(metrics["seg_dice"]) if iteration > 0 else (0.0, "baseline")
        row = {"iteration": iteration, **metrics, "gain": gain, "status": status}
        self.rows = [r for r in self.rows if r["iteration"] < iteration] + [row]
        shown = {k: v for k, v in row.items() if isinstance(v, float) and k not in ("seconds",)}
        for k, v in shown.items():
            engine.state.metrics[f"payoff/{k}"] = v
        engine.state.metrics["payoff/status"] = status
        probe = "".join(f", {k} {v:.3f}" for k, v in metrics.items() if k.startswith(("knn", "linear")))
        logger.info("pay-off at iteration %d: segmentation Dice %.3f (%s%s)%s", iteration, row["seg_dice"], status,
                    "" if math.isnan(gain) else f", {gain:+.3f} vs random init", probe)
        self._write(iteration, shown)

    def _write(self, iteration: int, scalars: dict[str, float]) -> None:
        if self.output_file is not None:
            columns = list(COLUMNS) + sorted({k for r in self.rows for k in r} - set(COLUMNS))
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
            atomic_write_text(buf.getvalue(), self.output_file)
        if self.log_dir is not None:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.log_dir))
            for k, v in scalars.items():
                if not math.isnan(v):
                    self._writer.add_scalar(f"payoff/{k}", v, iteration)
            self._writer.flush()

    @staticmethod
    def _parse(row: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in row.items():
            if v in ("", None):
                continue
            out[k] = v if k == "status" else (int(v) if k == "iteration" else float(v))
        return out

    def _final(self, engine: Engine) -> None:
        self.check(engine)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

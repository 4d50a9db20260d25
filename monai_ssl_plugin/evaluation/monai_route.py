"""MONAI route of the evaluation: fine-tuning and frozen-feature probes on in-memory cases.

Both arms build the same network (the protocol's backbone preset, the architecture that was
pretrained) and differ only in its initialisation: the pretrained arm loads the encoder through
:func:`monai_ssl_plugin.monai_bundles.load.load_pretrained` (checked against the checkpoint's record;
its load report goes to the cell log and the result), the scratch arm keeps the random init.

- Segmentation fine-tuning: random ``patch_size`` crops (half centred on a foreground voxel, so a
  rare lesion class is seen), random flips, MONAI ``DiceCELoss``, Adam; sliding-window inference
  (``monai.inferers.sliding_window_inference``) and MONAI ``DiceMetric`` on the held-out cases
  (mean over foreground classes present in the reference, then over cases).
- Classification fine-tuning: encoder -> global average pool (the adapter's ``embed``) -> linear
  layer, trained on random crops with flips; scored on whole volumes: accuracy and ROC AUC.
- Frozen probes: classification = kNN and linear probe on ``embed`` of whole volumes
  (:mod:`monai_ssl_plugin.engine.probes`); segmentation = a 1x1x1 convolution on the frozen
  encoder's features of every stage, upsampled to the input grid (a hypercolumn head).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from torch import nn

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.engine.probes import (classification_metrics, dice_scores, knn_probabilities,
                                            linear_probabilities, mean_dice)
from monai_ssl_plugin.evaluation.cases import N_CLASSES, LabelledCases
from monai_ssl_plugin.monai_bundles.load import load_pretrained

Log = Callable[[str], None]


def build_network(backbone: str, n_classes: int, checkpoint: str | Path | None, log: Log) -> tuple[nn.Module, dict]:
    """The backbone adapter with ``n_classes`` dense outputs; encoder from ``checkpoint`` if given."""
    adapter = create_backbone(backbone, out_channels=n_classes)
    if checkpoint is None:
        return adapter, {"init": "random"}
    report = load_pretrained(adapter.network, str(checkpoint), target="encoder", axis_order="nnunet",
                             on_axis_mismatch="permute", normalization="zscore", log=log)
    return adapter, {"init": str(checkpoint), "load_report": report.summary(),
                     "loaded_tensors": len(report.loaded), "loaded_fraction": round(report.loaded_fraction, 4)}


def _crop(image: torch.Tensor, target: torch.Tensor, patch: Sequence[int], gen: torch.Generator,
          foreground_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A random crop (C, *patch) and its target; with probability ``foreground_p`` centred on a
    random foreground voxel of ``target`` (when there is one). Volumes smaller than ``patch`` are padded."""
    shape = target.shape[-3:]
    pads: list[int] = []
    for s, p in reversed(list(zip(shape, patch))):
        pads += [0, max(0, p - s)]
    if any(pads):
        image, target = F.pad(image, pads), F.pad(target, pads)
        shape = target.shape[-3:]
    starts = [int(torch.randint(0, s - p + 1, (1,), generator=gen)) for s, p in zip(shape, patch)]
    if float(torch.rand(1, generator=gen)) < foreground_p:
        fg = torch.nonzero(target > 0)
        if len(fg):
            c = fg[int(torch.randint(0, len(fg), (1,), generator=gen))]
            starts = [min(max(0, int(ci) - p // 2), s - p) for ci, p, s in zip(c, patch, shape)]
    sl = tuple(slice(a, a + p) for a, p in zip(starts, patch))
    return image[(slice(None), *sl)], target[sl]


def _flip(x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    dims = [d for d in (1, 2, 3) if float(torch.rand(1, generator=gen)) < 0.5]
    if dims:
        x = x.flip(dims)
        y = y.flip([d - 1 for d in dims]) if y is not None else None
    return x, y


def _segment(predictor: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = sliding_window_inference(image[None], list(patch), 4, predictor, overlap=0.25, mode="gaussian")
    return logits[0].argmax(0)


def _score_segmentation(cases: LabelledCases, task: str, test: Sequence[str], predictor: Callable, patch: Sequence[int]
                        ) -> dict[str, Any]:
    n = N_CLASSES[task]
    per_case = [dice_scores(_segment(predictor, cases.images[c], patch), cases.segmentation_target(task, c), n)
                for c in test]
    per_class = [[row[k] for row in per_case if not math.isnan(row[k])] for k in range(n - 1)]
    return {"dice": mean_dice(per_case),
            "dice_per_class": [float(sum(v) / len(v)) if v else math.nan for v in per_class],
            "n_test_scored": sum(any(not math.isnan(v) for v in row) for row in per_case)}


def _train(net: nn.Module, sample: Callable[[], tuple[torch.Tensor, Any]], loss_of: Callable[[torch.Tensor, list], torch.Tensor],
           iterations: int, batch_size: int, lr: float) -> list[float]:
    """The fine-tuning loop both tasks share: Adam, ``batch_size`` draws of ``sample()`` per step; the losses."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    losses = []
    for _ in range(iterations):
        xs, ys = zip(*(sample() for _ in range(batch_size)))
        loss = loss_of(net(torch.stack(xs)), list(ys))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def finetune_segmentation(cases: LabelledCases, task: str, train: Sequence[str], test: Sequence[str], *, backbone: str,
                          checkpoint: str | Path | None, patch: Sequence[int], iterations: int, batch_size: int,
                          lr: float, seed: int, log: Log) -> dict[str, Any]:
    """Fine-tune the whole network on ``train`` and return Dice on ``test`` (plus timing and load report)."""
    t0 = time.time()
    torch.manual_seed(seed)
    net, init = build_network(backbone, N_CLASSES[task], checkpoint, log)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        c = train[int(torch.randint(0, len(train), (1,), generator=gen))]
        x, y = _crop(cases.images[c], cases.segmentation_target(task, c), patch, gen, foreground_p=0.5)
        x, y = _flip(x, y, gen)
        return x, y[None]

    losses = _train(net, sample, lambda out, ys: loss_fn(out, torch.stack(ys)), iterations, batch_size, lr)
    net.eval()
    scores = _score_segmentation(cases, task, test, net, patch)
    return {**scores, **init, "final_train_loss": float(sum(losses[-10:]) / len(losses[-10:])),
            "seconds": round(time.time() - t0, 1)}


class _Classifier(nn.Module):
    """Encoder -> pooled embedding (``adapter.embed``) -> linear layer."""

    def __init__(self, adapter: nn.Module, n_classes: int):
        super().__init__()
        self.adapter = adapter
        self.head = nn.Linear(adapter.embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.adapter.embed(x))


def finetune_classification(cases: LabelledCases, task: str, train: Sequence[str], test: Sequence[str], *,
                            backbone: str, checkpoint: str | Path | None, patch: Sequence[int], iterations: int,
                            batch_size: int, lr: float, seed: int, log: Log) -> dict[str, Any]:
    """Fine-tune encoder + linear head on crops of ``train``; accuracy and AUC on whole ``test`` volumes."""
    t0 = time.time()
    torch.manual_seed(seed)
    adapter, init = build_network(backbone, N_CLASSES[task], checkpoint, log)
    net = _Classifier(adapter, N_CLASSES[task])
    gen = torch.Generator().manual_seed(seed)

    def sample() -> tuple[torch.Tensor, int]:
        c = train[int(torch.randint(0, len(train), (1,), generator=gen))]
        x, _ = _crop(cases.images[c], cases.labels[c], patch, gen, foreground_p=0.0)
        return _flip(x, None, gen)[0], cases.class_label(task, c)

    losses = _train(net, sample, lambda out, ys: F.cross_entropy(out, torch.tensor(ys)), iterations, batch_size, lr)
    net.eval()
    with torch.no_grad():
        probs = torch.cat([torch.softmax(net(cases.images[c][None]), 1) for c in test])
    y = torch.tensor([cases.class_label(task, c) for c in test])
    return {**classification_metrics(probs, y), **init, "final_train_loss": float(sum(losses[-10:]) / len(losses[-10:])),
            "seconds": round(time.time() - t0, 1)}


# -- frozen-feature probes ----------------------------------------------------------------------
def probe_classification(cases: LabelledCases, task: str, train: Sequence[str], test: Sequence[str], *, backbone: str,
                         checkpoint: str | Path | None, seed: int, knn_k: int, linear: bool, knn: bool, log: Log
                         ) -> dict[str, Any]:
    """kNN and linear probe on the frozen encoder's pooled embeddings of whole volumes."""
    t0 = time.time()
    torch.manual_seed(seed)
    adapter, init = build_network(backbone, N_CLASSES[task], checkpoint, log)
    adapter.eval()
    with torch.no_grad():
        emb = {c: adapter.embed(cases.images[c][None])[0] for c in (*train, *test)}
    tx, ty = torch.stack([emb[c] for c in train]), torch.tensor([cases.class_label(task, c) for c in train])
    vx, vy = torch.stack([emb[c] for c in test]), torch.tensor([cases.class_label(task, c) for c in test])
    out: dict[str, Any] = dict(init)
    n = N_CLASSES[task]
    if knn:
        out.update({f"knn_{k}": v for k, v in classification_metrics(knn_probabilities(tx, ty, vx, n, knn_k), vy).items()})
    if linear:
        out.update({f"linear_{k}": v for k, v in classification_metrics(linear_probabilities(tx, ty, vx, n), vy).items()})
    out["seconds"] = round(time.time() - t0, 1)
    return out


def hypercolumn(adapter: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Frozen encoder features of every stage upsampled (trilinear) to the input grid: (C_total, z, y, x)."""
    with torch.no_grad():
        feats = adapter.encode(image[None])
        size = image.shape[-3:]
        return torch.cat([F.interpolate(f, size=size, mode="trilinear", align_corners=False) for f in feats], 1)[0]


def probe_segmentation(cases: LabelledCases, task: str, train: Sequence[str], test: Sequence[str], *, backbone: str,
                       checkpoint: str | Path | None, patch: Sequence[int], iterations: int, batch_size: int, lr: float,
                       seed: int, log: Log) -> dict[str, Any]:
    """A 1x1x1 convolution trained on frozen hypercolumn features; Dice on ``test``."""
    t0 = time.time()
    torch.manual_seed(seed)
    adapter, init = build_network(backbone, N_CLASSES[task], checkpoint, log)
    adapter.eval()
    feats = {c: hypercolumn(adapter, cases.images[c]) for c in train}
    head = nn.Conv3d(next(iter(feats.values())).shape[0], N_CLASSES[task], 1)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(head.parameters(), lr=lr * 10)  # a linear head on fixed features tolerates a larger step
    for _ in range(iterations):
        xs, ys = [], []
        for _ in range(batch_size):
            c = train[int(torch.randint(0, len(train), (1,), generator=gen))]
            x, y = _crop(feats[c], cases.segmentation_target(task, c), patch, gen, foreground_p=0.5)
            xs.append(x)
            ys.append(y[None])
        loss = loss_fn(head(torch.stack(xs)), torch.stack(ys))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    del feats

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return head(torch.stack([hypercolumn(adapter, xi) for xi in x]))

    scores = _score_segmentation(cases, task, test, predictor, patch)
    return {**scores, **init, "seconds": round(time.time() - t0, 1)}

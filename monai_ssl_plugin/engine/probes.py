"""Frozen-feature probes: k-nearest-neighbour and linear (logistic regression) classifiers, and a
linear segmentation head on multi-scale encoder features.

Used by the online probe during pretraining (``engine.handlers.online_probe``) and by the
evaluation's frozen-feature probes, so both measure the same thing. kNN follows the SSL literature's
monitor (Wu et al. CVPR 2018; DINO, Caron et al. ICCV 2021): cosine similarity, majority vote over
the ``k`` nearest training embeddings. The linear probe is an L2-regularised multinomial logistic
regression fitted to convergence with L-BFGS on standardised features (deterministic: zero init,
no sampling), as in SimCLR's linear evaluation (Chen et al. ICML 2020) minus the augmentation.

Shapes: ``train_x`` (N, D), ``train_y`` (N,) int, ``test_x`` (M, D) -> class probabilities (M, K).
The segmentation probe (used by the pay-off monitor, ``engine.handlers.payoff``) is the same linear
probe per voxel: a logistic regression on the standardised hypercolumn of the frozen encoder (every
stage upsampled to the input grid), fitted on class-balanced voxels and scored with MONAI's Dice. Nothing here touches a global random number generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric, compute_roc_auc


def knn_probabilities(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, n_classes: int,
                      k: int = 5) -> torch.Tensor:
    """Share of each class among the ``k`` most cosine-similar training rows: (M, n_classes)."""
    k = max(1, min(int(k), train_x.shape[0]))
    sim = F.normalize(test_x.double(), dim=1) @ F.normalize(train_x.double(), dim=1).T  # (M, N)
    idx = sim.topk(k, dim=1).indices
    votes = F.one_hot(train_y.long()[idx], n_classes).double().mean(1)
    return votes.float()


def fit_logistic(train_x: torch.Tensor, train_y: torch.Tensor, n_classes: int, l2: float = 1e-2,
                 max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean, std, w, b)`` of an L2-regularised multinomial logistic regression on standardised
    ``train_x`` (float64; L-BFGS from zero weights: deterministic). Logits: ``((x - mean) / std) @ w + b``."""
    x = train_x.double()
    mean, std = x.mean(0, keepdim=True), x.std(0, keepdim=True, unbiased=False).clamp_min(1e-6)
    x = (x - mean) / std
    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    y = train_y.long()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return mean, std, w.detach(), b.detach()


def linear_probabilities(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, n_classes: int,
                         l2: float = 1e-2, max_iter: int = 200) -> torch.Tensor:
    """Softmax probabilities of a logistic regression fitted on (standardised) ``train_x``: (M, n_classes)."""
    mean, std, w, b = fit_logistic(train_x, train_y, n_classes, l2, max_iter)
    with torch.no_grad():
        return torch.softmax(((test_x.double() - mean) / std) @ w + b, dim=1).float()


def classification_metrics(probabilities: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy and ROC AUC (MONAI's ``compute_roc_auc``; macro one-vs-rest; NaN when the labels
    hold one class) of class probabilities (M, K) against labels (M,)."""
    y = y.long()
    acc = float((probabilities.argmax(1) == y).float().mean())
    n_classes = probabilities.shape[1]
    if len(torch.unique(y)) < 2:
        auc = math.nan
    elif n_classes == 2:
        auc = float(compute_roc_auc(probabilities[:, 1], y))
    else:
        auc = float(compute_roc_auc(probabilities, F.one_hot(y, n_classes)))
    return {"accuracy": acc, "auc": auc}


# -- segmentation: a linear head on frozen multi-scale features ----------------------------------
def dice_scores(pred: torch.Tensor, ref: torch.Tensor, n_classes: int) -> list[float]:
    """Per foreground class Dice of label maps (*spatial) with MONAI's ``DiceMetric`` (NaN where the
    reference lacks the class: ``ignore_empty``)."""
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    onehot = [F.one_hot(t.long(), n_classes).movedim(-1, 0)[None].float() for t in (pred, ref)]
    return [float(v) for v in metric(onehot[0], onehot[1])[0]]


def mean_dice(per_case: list[list[float]]) -> float:
    """Mean over cases of each case's mean over the classes its reference holds (NaN: none scored)."""
    means = [sum(v for v in c if not math.isnan(v)) / sum(not math.isnan(v) for v in c) for c in per_case
             if any(not math.isnan(v) for v in c)]
    return float(sum(means) / len(means)) if means else math.nan


def balanced_points(target: torch.Tensor, per_class: int) -> torch.Tensor:
    """Up to ``per_class`` voxel positions of every class in ``target`` (*spatial), evenly spaced through
    the class's voxels in raster order (no random draw): (P, dims) long."""
    points = []
    for c in torch.unique(target).tolist():
        idx = torch.nonzero(target == c)
        take = torch.linspace(0, len(idx) - 1, min(per_class, len(idx))).round().long()
        points.append(idx[take])
    return torch.cat(points)


def hypercolumn_at(features: list[torch.Tensor], size: Sequence[int], points: torch.Tensor) -> torch.Tensor:
    """The hypercolumn (every stage upsampled to ``size`` as ``F.interpolate(mode="(tri)linear",
    align_corners=False)`` does, concatenated) at ``points`` only: (P, C_total), float64."""
    coords = (2 * points.double() + 1) / torch.tensor(list(size), dtype=torch.float64) - 1  # voxel centres in [-1, 1]
    grid = coords.flip(-1).view(1, *[1] * (len(size) - 1), -1, len(size)).float()  # grid_sample wants x, y, z
    cols = [F.grid_sample(f.float(), grid.to(f.device), mode="bilinear", padding_mode="border", align_corners=False)
            .reshape(f.shape[1], -1).T for f in features]
    return torch.cat(cols, dim=1).double().cpu()


class StageHead(torch.nn.Module):
    """A linear head on the standardised hypercolumn (every encoder stage upsampled to the input grid
    and concatenated), applied stage by stage: each stage's share of the logits is computed at its own
    resolution and only the ``n_classes`` logit maps are upsampled. Interpolation is linear, so this is
    exactly the hypercolumn head at a fraction of the memory."""

    def __init__(self, channels: Sequence[int], mean: torch.Tensor, std: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        edges = [0]
        for c in channels:
            edges.append(edges[-1] + int(c))
        scale = w / std.view(-1, 1)  # (C_total, K): standardisation folded into the weights
        self.weights = [scale[a:z].T.float() for a, z in zip(edges[:-1], edges[1:])]  # (K, C_s) per stage
        self.bias = (b - (mean.view(-1) / std.view(-1)) @ w).float()

    def forward(self, features: list[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        mode = "trilinear" if len(size) == 3 else "bilinear"
        logits = sum(F.interpolate(torch.einsum("kc,bc...->bk...", w.to(f.device), f.float()), size=list(size),
                                   mode=mode, align_corners=False) for w, f in zip(self.weights, features))
        return logits + self.bias.to(logits.device).view(1, -1, *[1] * len(size))


def segmentation_probe(fit: list[tuple[list[torch.Tensor], torch.Tensor]],
                       score: list[tuple[list[torch.Tensor], torch.Tensor]], n_classes: int, per_class: int = 1000,
                       l2: float = 1e-2, max_iter: int = 100) -> dict[str, Any]:
    """Fit a linear head on frozen multi-scale features of labelled crops; Dice on other crops.

    ``fit`` / ``score``: ``(features, target)`` pairs, features as ``adapter.encode`` returns them for one
    crop (batch 1) and target its label map (*spatial). The head is a logistic regression
    (:func:`fit_logistic`) on the hypercolumns of up to ``per_class`` voxels per class and fitting crop
    (class-balanced, so a small structure counts as much as the background); it then labels every voxel
    of the scoring crops (:class:`StageHead`). Deterministic: no random numbers drawn.
    Returns ``{"dice", "dice_per_class"}`` (as :func:`dice_scores` / :func:`mean_dice`).
    """
    xs, ys = [], []
    for feats, target in fit:
        points = balanced_points(target.cpu(), per_class)
        xs.append(hypercolumn_at(feats, target.shape, points))
        ys.append(target.cpu()[tuple(points.T)])
    mean, std, w, b = fit_logistic(torch.cat(xs), torch.cat(ys), n_classes, l2, max_iter)
    head = StageHead([f.shape[1] for f in fit[0][0]], mean, std, w, b)
    with torch.no_grad():
        per_case = [dice_scores(head(f, t.shape)[0].argmax(0).cpu(), t.cpu(), n_classes) for f, t in score]
    per_class_dice = [[row[k] for row in per_case if not math.isnan(row[k])] for k in range(n_classes - 1)]
    return {"dice": mean_dice(per_case),
            "dice_per_class": [sum(v) / len(v) if v else math.nan for v in per_class_dice]}

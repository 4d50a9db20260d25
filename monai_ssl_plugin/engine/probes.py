"""Frozen-embedding probes: k-nearest-neighbour and linear (logistic regression) classifiers.

Used by the online probe during pretraining (``engine.handlers.online_probe``) and by the
evaluation's frozen-feature probes, so both measure the same thing. kNN follows the SSL literature's
monitor (Wu et al. CVPR 2018; DINO, Caron et al. ICCV 2021): cosine similarity, majority vote over
the ``k`` nearest training embeddings. The linear probe is an L2-regularised multinomial logistic
regression fitted to convergence with L-BFGS on standardised features (deterministic: zero init,
no sampling), as in SimCLR's linear evaluation (Chen et al. ICML 2020) minus the augmentation.

Shapes: ``train_x`` (N, D), ``train_y`` (N,) int, ``test_x`` (M, D) -> class probabilities (M, K).
Nothing here touches a global random number generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def knn_probabilities(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, n_classes: int,
                      k: int = 5) -> torch.Tensor:
    """Share of each class among the ``k`` most cosine-similar training rows: (M, n_classes)."""
    k = max(1, min(int(k), train_x.shape[0]))
    sim = F.normalize(test_x.double(), dim=1) @ F.normalize(train_x.double(), dim=1).T  # (M, N)
    idx = sim.topk(k, dim=1).indices
    votes = F.one_hot(train_y.long()[idx], n_classes).double().mean(1)
    return votes.float()


def linear_probabilities(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, n_classes: int,
                         l2: float = 1e-2, max_iter: int = 200) -> torch.Tensor:
    """Softmax probabilities of a logistic regression fitted on (standardised) ``train_x``: (M, n_classes)."""
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
    with torch.no_grad():
        return torch.softmax(((test_x.double() - mean) / std) @ w + b, dim=1).float()


def classification_metrics(probabilities: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy and ROC AUC (MONAI's ``compute_roc_auc``; macro one-vs-rest; NaN when the labels
    hold one class) of class probabilities (M, K) against labels (M,)."""
    from monai.metrics import compute_roc_auc

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

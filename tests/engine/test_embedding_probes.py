"""kNN and linear probes on embeddings: right on separable data, chance on noise, no global RNG use."""

import math

import torch

from monai_ssl_plugin.engine.probes import classification_metrics, knn_probabilities, linear_probabilities


def _blobs(n, d, shift, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, d, generator=g) + shift * (2 * y[:, None].float() - 1)  # opposite directions: cosine kNN sees them
    return x, y


def test_probes_separate_separable_classes():
    tx, ty = _blobs(20, 8, 1.5, 0)
    vx, vy = _blobs(20, 8, 1.5, 1)
    for probs in (knn_probabilities(tx, ty, vx, 2, k=3), linear_probabilities(tx, ty, vx, 2)):
        assert probs.shape == (20, 2) and torch.allclose(probs.sum(1), torch.ones(20))
        m = classification_metrics(probs, vy)
        assert m["accuracy"] >= 0.9 and m["auc"] >= 0.95


def test_probes_are_deterministic_and_leave_the_rng_alone():
    tx, ty = _blobs(12, 4, 0.0, 0)
    vx, _ = _blobs(6, 4, 0.0, 1)
    state = torch.get_rng_state()
    a = linear_probabilities(tx, ty, vx, 2)
    assert torch.equal(a, linear_probabilities(tx, ty, vx, 2))
    assert torch.equal(torch.get_rng_state(), state)


def test_auc_is_nan_with_one_class_and_multiclass_works():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    assert math.isnan(classification_metrics(probs, torch.tensor([0, 0]))["auc"])
    p3 = torch.eye(3)[[0, 1, 2, 0]]
    m = classification_metrics(p3, torch.tensor([0, 1, 2, 0]))
    assert m["accuracy"] == 1.0 and m["auc"] == 1.0

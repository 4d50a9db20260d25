import pytest
import torch

from monai_ssl_plugin.losses.vicreg import VICRegLoss, vicreg_terms


def naive_vicreg(a, b, gamma=1.0, eps=1e-4):
    n, d = a.shape
    inv = sum((a[i, j] - b[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    var = cov = 0.0
    for z in (a, b):
        mu = [sum(z[i, j] for i in range(n)) / n for j in range(d)]
        c = [[sum((z[k, i] - mu[i]) * (z[k, j] - mu[j]) for k in range(n)) / (n - 1) for j in range(d)]
             for i in range(d)]
        var = var + sum(max(0.0, gamma - (c[j][j] + eps) ** 0.5) for j in range(d)) / d / 2
        cov = cov + sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    return 25 * inv + 25 * var + cov


def test_constant_embeddings_hit_the_variance_hinge():
    z = torch.ones(4, 3)
    inv, var, cov = vicreg_terms(z, z)
    assert inv.item() == 0 and cov.item() == 0
    # std = sqrt(0 + eps) = 0.01, hinge 1 - 0.01 on every dimension
    assert var.item() == pytest.approx(0.99)
    assert VICRegLoss()(z, z).item() == pytest.approx(25 * 0.99)


def test_hand_computed_covariance():
    z = torch.tensor([[2.0, 2.0], [-2.0, -2.0]])
    # unbiased var 8 (std > 1, no hinge), Cov_01 = 8: per branch 2 * 64 / 2 = 64
    inv, var, cov = vicreg_terms(z, z)
    assert (inv.item(), var.item(), cov.item()) == (0.0, 0.0, pytest.approx(128.0))
    assert VICRegLoss()(z, z).item() == pytest.approx(128.0)


def test_matches_naive_loop():
    torch.manual_seed(0)
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(VICRegLoss()(a, b), torch.as_tensor(naive_vicreg(a, b), dtype=torch.float64))


def test_needs_two_rows():
    with pytest.raises(ValueError):
        VICRegLoss()(torch.randn(1, 3), torch.randn(1, 3))

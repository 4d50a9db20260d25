import pytest
import torch
from monai.losses import BarlowTwinsLoss as MonaiBarlowTwinsLoss

from monai_ssl_plugin.losses.barlow_twins import BarlowTwinsLoss

# columns: zero mean, unit (biased) variance, mutually orthogonal -> standardised C = I
HADAMARD = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])


def naive_barlow(a, b, lambd, eps):
    n, d = a.shape
    za = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + eps)
    zb = (b - b.mean(0)) / torch.sqrt(b.var(0, unbiased=False) + eps)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(za[k, i] * zb[k, j] for k in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lambd * c**2)
    return loss


def test_identity_cross_correlation_gives_zero():
    assert BarlowTwinsLoss()(HADAMARD, HADAMARD).item() == pytest.approx(0.0, abs=1e-8)


def test_monai_normalisation_cannot_reach_zero():
    # MONAI: unbiased std but /N -> C_ii = (N-1)/N = 3/4, loss floor D/N^2 = 3/16
    assert MonaiBarlowTwinsLoss()(HADAMARD, HADAMARD).item() == pytest.approx(3 / 16, rel=1e-4)


def test_hand_computed_off_diagonal():
    a = HADAMARD[:, :2]
    b = HADAMARD[:, [0, 0]]
    # C = [[1, 1], [0, 0]]: on-diagonal (1-1)^2 + (1-0)^2 = 1, off-diagonal 1^2 + 0^2 = 1
    assert BarlowTwinsLoss(lambd=5e-3, eps=0.0)(a, b).item() == pytest.approx(1.005)


def test_matches_naive_loop_and_default_lambda():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    loss_fn = BarlowTwinsLoss()
    assert loss_fn.lambd == 5e-3
    torch.testing.assert_close(loss_fn(a, b), naive_barlow(a, b, 5e-3, 1e-5))


def test_needs_two_rows():
    with pytest.raises(ValueError):
        BarlowTwinsLoss()(torch.randn(1, 3), torch.randn(1, 3))

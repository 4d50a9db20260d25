import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss

from monai_ssl_plugin.losses.nt_xent import NTXentLoss


def naive_nt_xent(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    z = torch.cat([a, b])
    n2 = z.shape[0]
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        sims = [F.cosine_similarity(z[i], z[k], dim=0) / t for k in range(n2)]
        den = sum(torch.exp(sims[k]) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(sims[j]) / den)
    return total / n2


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_matches_monai_and_naive_loop(temperature):
    torch.manual_seed(0)
    a, b = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    ours = NTXentLoss(temperature)(a, b)
    torch.testing.assert_close(ours, ContrastiveLoss(temperature)(a, b))
    torch.testing.assert_close(ours, naive_nt_xent(a, b, temperature))


def test_hand_computed_orthogonal_views():
    # views identical, samples orthogonal: each anchor has cos 1 to its positive, 0 to 2 negatives
    e = torch.eye(2)
    assert NTXentLoss(0.5)(e, e).item() == pytest.approx(math.log(1 + 2 * math.exp(-2.0)), rel=1e-6)


def test_batch_of_one_has_no_negatives():
    torch.manual_seed(0)
    assert NTXentLoss()(torch.randn(1, 5), torch.randn(1, 5)).item() == pytest.approx(0.0, abs=1e-6)


def test_default_temperature_and_gradient():
    torch.manual_seed(0)
    loss_fn = NTXentLoss()
    assert loss_fn.temperature == 0.5
    a = torch.randn(3, 6, requires_grad=True)
    loss_fn(a, torch.randn(3, 6)).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()

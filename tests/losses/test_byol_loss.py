import pytest
import torch

from monai_ssl_plugin.losses.byol import BYOLLoss, SimSiamLoss, negative_cosine_similarity


def test_identical_embeddings():
    torch.manual_seed(0)
    z = torch.randn(4, 8)
    assert BYOLLoss()(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert BYOLLoss()(z, 3 * z, z, z).item() == pytest.approx(0.0, abs=1e-6)  # scale-invariant, symmetrised
    assert SimSiamLoss()(z, z).item() == pytest.approx(-1.0, abs=1e-6)
    assert SimSiamLoss()(z, z, z, z).item() == pytest.approx(-1.0, abs=1e-6)


def test_hand_computed_orthogonal_and_opposite():
    e = torch.eye(2)
    assert BYOLLoss()(e[:1], e[1:]).item() == pytest.approx(2.0)  # cos 0
    assert BYOLLoss()(e[:1], -e[:1], e[:1], -e[:1]).item() == pytest.approx(8.0)  # cos -1, two terms
    assert SimSiamLoss()(e[:1], e[1:]).item() == pytest.approx(0.0)


def test_against_formula():
    torch.manual_seed(0)
    p1, z2, p2, z1 = (torch.randn(3, 5, dtype=torch.float64) for _ in range(4))

    def cos(a, b):
        return torch.stack([a[i] @ b[i] / (a[i].norm() * b[i].norm()) for i in range(a.shape[0])])

    byol = (2 - 2 * cos(p1, z2)).mean() + (2 - 2 * cos(p2, z1)).mean()
    simsiam = 0.5 * (-cos(p1, z2)).mean() + 0.5 * (-cos(p2, z1)).mean()
    torch.testing.assert_close(BYOLLoss()(p1, z2, p2, z1), byol)
    torch.testing.assert_close(SimSiamLoss()(p1, z2, p2, z1), simsiam)
    torch.testing.assert_close(negative_cosine_similarity(p1, z2), (-cos(p1, z2)).mean())


def test_stop_gradient_on_target():
    torch.manual_seed(0)
    p, z = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    SimSiamLoss()(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_half_symmetric_arguments_rejected():
    z = torch.randn(2, 3)
    with pytest.raises(ValueError):
        BYOLLoss()(z, z, prediction_2=z)

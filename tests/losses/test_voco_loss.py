import math

import pytest
import torch
import torch.nn.functional as F

from monai_ssl_plugin.losses.voco import VoCoLoss, voco_logits, voco_prediction_terms, voco_regulariser


def naive_terms(crops, bases, targets, eps=1e-6):
    b, m, k = targets.shape
    pos = neg = reg = 0.0
    for s in range(b):
        cos = [[F.cosine_similarity(crops[s, i], bases[s, j], dim=0) for j in range(k)] for i in range(m)]
        logits = F.relu(torch.stack([torch.stack(row) for row in cos]))
        y = targets[s]
        pos = pos + (-y * torch.log(1 - (y - logits).abs() + eps)).sum() / (y.sum() + eps) / b
        mask = (y == 0).to(logits.dtype)
        neg = neg + (mask * logits**2).sum() / (mask.sum() + eps) / b
        pairs = [
            F.relu(F.cosine_similarity(bases[s, i], bases[s, j], dim=0)) ** 2 for i in range(k) for j in range(i + 1, k)
        ]
        reg = reg + sum(pairs) / len(pairs) / b
    return pos, neg, reg


def test_logits_hand_computed():
    e = torch.eye(2)
    bases = torch.stack([e[0], -e[0], e[1], (e[0] + e[1])])
    logits = voco_logits(e[:1], bases)
    torch.testing.assert_close(logits, torch.tensor([[[1.0, 0.0, 0.0, 1 / math.sqrt(2)]]]))


def test_prediction_terms_hand_computed():
    logits = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    targets = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    pos, neg = voco_prediction_terms(logits, targets)
    assert pos.item() == pytest.approx(0.5 * -math.log(0.8), rel=1e-4)  # |0.5-0.3| = 0.2 on a 0.5 share
    assert neg.item() == pytest.approx(0.2**2 / 2, rel=1e-4)


def test_perfect_prediction_and_orthogonal_bases_give_zero():
    bases = torch.eye(4)
    crop = torch.tensor([[0.6, 0.8, 0.0, 0.0]])  # cosines equal the overlap ratios
    targets = crop.clone()
    assert VoCoLoss()(crop, bases, targets).item() == pytest.approx(0.0, abs=1e-5)


def test_regulariser_identical_and_orthogonal():
    assert voco_regulariser(torch.ones(3, 5)).item() == pytest.approx(1.0)
    assert voco_regulariser(torch.eye(4)).item() == pytest.approx(0.0)


def test_matches_naive_loop():
    torch.manual_seed(0)
    crops, bases = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64)
    targets = torch.rand(2, 3, 4, dtype=torch.float64) * (torch.rand(2, 3, 4) > 0.5)
    pos, neg, reg = VoCoLoss().terms(crops, bases, targets)
    ref = naive_terms(crops, bases, targets)
    for got, want in zip((pos, neg, reg), ref):
        torch.testing.assert_close(got, want)
    weighted = VoCoLoss(pred_weight=2.0, reg_weight=0.5)(crops, bases, targets)
    torch.testing.assert_close(weighted, 2 * (ref[0] + ref[1]) + 0.5 * ref[2])


def test_teacher_symmetrisation():
    torch.manual_seed(0)
    crops, bases = torch.randn(3, 8), torch.randn(4, 8)
    targets = torch.rand(3, 4)
    loss_fn = VoCoLoss()
    # a teacher equal to the student changes nothing
    torch.testing.assert_close(loss_fn(crops, bases, targets, crops, bases), loss_fn(crops, bases, targets))
    t_crops, t_bases = torch.randn(3, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    s_crops = crops.clone().requires_grad_()
    loss_fn(s_crops, bases, targets, t_crops, t_bases).backward()
    assert s_crops.grad is not None and t_crops.grad is None and t_bases.grad is None

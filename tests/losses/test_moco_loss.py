import math

import pytest
import torch
import torch.nn.functional as F

from monai_ssl_plugin.losses.moco import MoCoLoss, MoCoQueue, info_nce


def naive_info_nce(q, k, negs, t):
    total = 0.0
    for i in range(q.shape[0]):
        qi, ki = F.normalize(q[i], dim=0), F.normalize(k[i], dim=0)
        pos = torch.exp(qi @ ki / t)
        neg = sum(torch.exp(qi @ F.normalize(n, dim=0) / t) for n in negs)
        total = total - torch.log(pos / (pos + neg))
    return total / q.shape[0]


def test_info_nce_matches_loop():
    torch.manual_seed(0)
    q, k, negs = (torch.randn(n, 4, dtype=torch.float64) for n in (3, 3, 5))
    torch.testing.assert_close(info_nce(q, k, negs, 0.2), naive_info_nce(q, k, negs, 0.2))


def test_info_nce_hand_computed():
    e = torch.eye(3)
    # q = k = e1, negatives e2, e3 (cos 0): loss = log(1 + 2 exp(-1/t))
    loss = info_nce(e[:1], e[:1], e[1:], temperature=0.2)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-5.0)), rel=1e-6)


def test_key_gets_no_gradient():
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    info_nce(q, k, torch.randn(3, 4)).backward()
    assert q.grad is not None and k.grad is None


def test_queue_wraps_around():
    queue = MoCoQueue(dim=2, size=5)
    a = F.normalize(torch.arange(1.0, 7.0).view(3, 2), dim=1)
    b = F.normalize(torch.arange(7.0, 13.0).view(3, 2), dim=1)
    queue.enqueue(a)
    assert queue.ptr.item() == 3
    queue.enqueue(b)
    assert queue.ptr.item() == 1  # 3 + 3 = 6 -> wraps to 1
    expected = torch.stack([b[2], a[1], a[2], b[0], b[1]])
    torch.testing.assert_close(queue.queue, expected)


def test_batch_larger_than_queue_keeps_newest():
    queue = MoCoQueue(dim=2, size=2)
    keys = F.normalize(torch.arange(1.0, 7.0).view(3, 2), dim=1)
    queue.enqueue(keys)
    torch.testing.assert_close(queue.queue, keys[1:])
    assert queue.ptr.item() == 0


def test_queue_survives_state_dict():
    torch.manual_seed(0)
    loss_fn = MoCoLoss(dim=4, queue_size=6)
    loss_fn(torch.randn(4, 4), torch.randn(4, 4))
    state = loss_fn.state_dict()
    assert set(state) == {"queue.queue", "queue.ptr"}
    resumed = MoCoLoss(dim=4, queue_size=6)
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed.queue.queue, loss_fn.queue.queue)
    assert resumed.queue.ptr.item() == 4


def test_loss_uses_queue_before_enqueue_and_only_in_training():
    torch.manual_seed(0)
    loss_fn = MoCoLoss(dim=4, queue_size=8, temperature=0.2)
    old = loss_fn.queue.queue.clone()
    q, k = torch.randn(2, 4), torch.randn(2, 4)
    torch.testing.assert_close(loss_fn(q, k), naive_info_nce(q, k, old, 0.2))
    torch.testing.assert_close(loss_fn.queue.queue[:2], F.normalize(k, dim=1))
    loss_fn.eval()
    loss_fn(q, torch.randn(2, 4))
    assert loss_fn.queue.ptr.item() == 2


def test_in_batch_negatives_mode_v3():
    torch.manual_seed(0)
    q, k = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    t = 0.2
    loss_fn = MoCoLoss(dim=4, queue_size=0, temperature=t)
    assert loss_fn.queue is None
    # row i: positive k_i, negatives the other keys; v3 scales by 2t
    expected = sum(naive_info_nce(q[i : i + 1], k[i : i + 1], torch.cat([k[:i], k[i + 1 :]]), t) for i in range(3)) / 3
    torch.testing.assert_close(loss_fn(q, k), 2 * t * expected)

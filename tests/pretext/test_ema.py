import copy
import math

import pytest
import torch
from torch import nn

from monai_ssl_plugin.pretext.ema import CosineMomentum, cosine_momentum, ema_update, update_teacher
from monai_ssl_plugin.pretext.heads import DINOHead


def _pair():
    target, online = (nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1)) for _ in range(2))
    with torch.no_grad():
        target[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        target[0].bias.fill_(0.0)
        online[0].weight.copy_(torch.tensor([[3.0, 4.0]]))
        online[0].bias.fill_(1.0)
        target[1].running_mean.fill_(0.0)
        online[1].running_mean.fill_(10.0)
        online[1].num_batches_tracked.fill_(7)
    return target, online


def test_exact_numbers_params_and_buffers():
    target, online = _pair()
    ema_update(target, online, momentum=0.9)
    torch.testing.assert_close(target[0].weight, torch.tensor([[1.2, 2.2]]))  # 0.9*1 + 0.1*3, 0.9*2 + 0.1*4
    torch.testing.assert_close(target[0].bias, torch.tensor([0.1]))
    torch.testing.assert_close(target[1].running_mean, torch.tensor([1.0]))
    assert target[1].num_batches_tracked.item() == 7  # integer buffer copied
    torch.testing.assert_close(online[0].weight, torch.tensor([[3.0, 4.0]]))  # online untouched


def test_buffer_modes():
    target, online = _pair()
    ema_update(target, online, 0.9, buffers="copy")
    torch.testing.assert_close(target[1].running_mean, torch.tensor([10.0]))
    target, online = _pair()
    ema_update(target, online, 0.9, buffers="none")
    torch.testing.assert_close(target[1].running_mean, torch.tensor([0.0]))
    assert target[1].num_batches_tracked.item() == 0


def test_momentum_extremes_and_wrappers():
    target, online = _pair()
    ema_update(target, online, 1.0)
    torch.testing.assert_close(target[0].weight, torch.tensor([[1.0, 2.0]]))
    ema_update(nn.DataParallel(target), online, 0.0)  # wrapper unwrapped, momentum 0 copies
    torch.testing.assert_close(target[0].weight, torch.tensor([[3.0, 4.0]]))


def test_mismatch_rejected():
    with pytest.raises(ValueError):
        ema_update(nn.Linear(2, 1), nn.Linear(2, 2), 0.9)
    with pytest.raises(ValueError):
        ema_update(nn.Linear(2, 1), nn.Sequential(nn.Linear(2, 1)), 0.9)
    with pytest.raises(ValueError):
        ema_update(nn.Linear(2, 1), nn.Linear(2, 1), 1.5)


def test_weight_normalised_dino_head_teacher():
    torch.manual_seed(0)
    student = DINOHead(4, out_dim=6, hidden_dim=8, bottleneck_dim=3)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema_update(teacher, student, 0.5)
    for (name, t), s in zip(teacher.named_parameters(), student.parameters()):
        torch.testing.assert_close(t, s - 0.5, msg=name)


def test_cosine_momentum():
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx((0.996 + 1.0) / 2)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(25, 100, 0.99, final=0.999) == pytest.approx(0.999 - 0.009 * (math.cos(math.pi / 4) + 1) / 2)
    assert cosine_momentum(500, 100, 0.996) == pytest.approx(1.0)  # clamped


def test_update_teacher_moves_every_part_with_one_momentum_and_cosine_momentum_schedules_it():
    student = [torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)]
    teacher = [torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)]
    before = [t.weight.detach().clone() for t in teacher]
    update_teacher(0.75, zip(teacher, student))
    for t, s, b in zip(teacher, student, before):
        torch.testing.assert_close(t.weight, 0.75 * b + 0.25 * s.weight)

    class Pretext(CosineMomentum):
        pass

    p = Pretext()
    p._init_momentum(0.5, total_steps=4)
    assert p.momentum == 0.5 and p.momentum_at(0) == 0.5 and p.momentum_at(4) == 1.0
    p._step_momentum(2, zip(teacher, student))
    assert p.momentum == pytest.approx(0.75)  # half way along the half cosine
    p._init_momentum(0.9, total_steps=None)
    assert p.momentum_at(10**6) == 0.9  # no schedule: constant

import pytest
import torch
import torch.nn.functional as F

from monai_ssl_plugin.losses.dino import DINOLoss


def naive_dino(student_crops, teacher_crops, center, t_s, t_t):
    total, pairs = 0.0, 0
    for a, t in enumerate(teacher_crops):
        for b, s in enumerate(student_crops):
            if a == b:
                continue
            for i in range(t.shape[0]):
                p_t = torch.softmax((t[i] - center[0]) / t_t, dim=0)
                logp_s = torch.log_softmax(s[i] / t_s, dim=0)
                total = total - (p_t * logp_s).sum() / t.shape[0]
            pairs += 1
    return total / pairs


def test_teacher_equal_student_gives_entropy():
    torch.manual_seed(0)
    g = torch.randn(3, 10)
    loss_fn = DINOLoss(out_dim=10, student_temp=0.1, teacher_temp=0.1)
    # every crop yields the same logits, centre 0: CE(p, p) = H(p) for every pair
    p = F.softmax(g / 0.1, dim=-1)
    entropy = (-(p * p.log()).sum(-1)).mean()
    loss = loss_fn(torch.cat([g] * 4), torch.cat([g] * 2))
    torch.testing.assert_close(loss, entropy)


def test_matches_naive_loop_with_locals_and_centre():
    torch.manual_seed(0)
    student = [torch.randn(2, 6, dtype=torch.float64) for _ in range(4)]  # 2 global + 2 local
    teacher = [torch.randn(2, 6, dtype=torch.float64) for _ in range(2)]
    loss_fn = DINOLoss(out_dim=6).double()
    loss_fn.center.copy_(torch.randn(1, 6))
    center = loss_fn.center.clone()
    expected = naive_dino(student, teacher, center, 0.1, 0.04)
    loss_fn.eval()  # no centre update: both calls see the same centre
    torch.testing.assert_close(loss_fn(student, teacher), expected)
    torch.testing.assert_close(loss_fn(torch.cat(student), torch.cat(teacher)), expected)


def test_centre_ema_update_in_training_only():
    torch.manual_seed(0)
    loss_fn = DINOLoss(out_dim=4, center_momentum=0.9)
    t1, t2 = torch.randn(4, 4), torch.randn(4, 4)
    loss_fn(torch.randn(6, 4), t1)  # 3 crops of batch 2
    torch.testing.assert_close(loss_fn.center, 0.1 * t1.mean(0, keepdim=True))
    loss_fn(torch.randn(6, 4), t2)
    torch.testing.assert_close(loss_fn.center, 0.9 * 0.1 * t1.mean(0, keepdim=True) + 0.1 * t2.mean(0, keepdim=True))
    frozen = loss_fn.center.clone()
    loss_fn.eval()
    loss_fn(torch.randn(6, 4), torch.randn(4, 4))
    torch.testing.assert_close(loss_fn.center, frozen)
    assert "center" in loss_fn.state_dict()


def test_teacher_temperature_warmup():
    loss_fn = DINOLoss(out_dim=4, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=30)
    assert loss_fn.teacher_temperature(0) == pytest.approx(0.04)
    assert loss_fn.teacher_temperature(15) == pytest.approx(0.055)
    assert loss_fn.teacher_temperature(30) == pytest.approx(0.07)
    assert loss_fn.teacher_temperature(100) == pytest.approx(0.07)
    assert DINOLoss(out_dim=4).teacher_temperature(0) == pytest.approx(0.04)  # recipe default, no warm-up


def test_teacher_gets_no_gradient_and_centring_applies():
    torch.manual_seed(0)
    loss_fn = DINOLoss(out_dim=5)
    s, t = torch.randn(6, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    loss_fn(s, t).backward()
    assert s.grad is not None and t.grad is None
    loss_fn.center.fill_(0.0)
    loss_fn.center[0, 0] = 100.0  # huge centre on dim 0 removes it from the teacher distribution
    assert loss_fn.teacher_probs(torch.zeros(1, 5))[0, 0].item() == pytest.approx(0.0, abs=1e-12)


def test_bad_shapes_rejected():
    loss_fn = DINOLoss(out_dim=4)
    with pytest.raises(ValueError):
        loss_fn(torch.randn(6, 4), torch.randn(3, 4))  # 3 rows for 2 global crops

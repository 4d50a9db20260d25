import math

import pytest
import torch

from monai_ssl_plugin.engine.schedules import build_schedule, warmup_cosine, warmup_poly
from monai_ssl_plugin.errors import PluginError


def _lrs(scheduler, n):
    out = []
    for _ in range(n):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_poly_warmup_boundaries():
    lrs = _lrs(warmup_poly(_opt(), total_iters=10, warmup_iters=4, exponent=0.9), 11)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear, reaches the base rate on the last warm-up step
    assert lrs[4] == pytest.approx(1.0)  # decay starts from the base rate: no jump
    assert lrs[5] == pytest.approx((1 - 1 / 6) ** 0.9)
    assert lrs[10] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))


def test_cosine_warmup_boundaries_and_floor():
    lrs = _lrs(warmup_cosine(_opt(0.1), total_iters=12, warmup_iters=2, min_factor=0.1), 13)
    assert lrs[:3] == pytest.approx([0.05, 0.1, 0.1])
    assert lrs[7] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert lrs[12] == pytest.approx(0.01)


def test_no_warmup_and_bad_arguments():
    assert _lrs(warmup_poly(_opt(), total_iters=4), 1) == [1.0]
    with pytest.raises(PluginError, match="warmup_iters"):
        warmup_poly(_opt(), total_iters=4, warmup_iters=5)
    with pytest.raises(PluginError, match="Unknown learning-rate schedule"):
        build_schedule(_opt(), "step", 10)


def test_state_dict_is_weights_only_loadable_and_keeps_new_schedule(tmp_path):
    sched = build_schedule(_opt(), "poly", total_iters=10, warmup_iters=2)
    _lrs(sched, 3)
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    longer = build_schedule(_opt(), "poly", total_iters=100, warmup_iters=2)
    longer.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert longer.last_epoch == 3
    longer.optimizer.step()
    longer.step()  # the position came from the file, the (longer) schedule from the new run
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx((1 - 2 / 98) ** 0.9)

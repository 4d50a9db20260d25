import ast
import math
from pathlib import Path

import pytest
import torch

import monai_ssl_plugin.pretext.collapse as collapse
from monai_ssl_plugin.pretext.collapse import (
    CollapseMonitor,
    effective_rank,
    embedding_std,
    mean_distribution_entropy,
    teacher_entropy,
)


def test_embedding_std_gaussian_and_constant():
    torch.manual_seed(0)
    d = 32
    assert embedding_std(torch.randn(4096, d)).item() == pytest.approx(1 / math.sqrt(d), rel=0.05)
    assert embedding_std(torch.ones(16, d)).item() == pytest.approx(0.0, abs=1e-7)
    assert embedding_std(torch.randn(1, d)).item() == 0.0  # defined at N = 1


def test_effective_rank_bounds():
    torch.manual_seed(0)
    assert effective_rank(torch.eye(8)).item() == pytest.approx(8.0, rel=1e-6)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    assert effective_rank(3.0 * q).item() == pytest.approx(8.0, rel=1e-6)  # equal singular values
    rank_one = torch.randn(20, 1) @ torch.randn(1, 8)
    assert effective_rank(rank_one).item() == pytest.approx(1.0, abs=1e-4)
    assert effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0]))).item() == pytest.approx(2.0, rel=1e-6)


def test_teacher_entropies():
    k = 16
    uniform = torch.full((4, k), 1.0 / k)
    one_hot = torch.zeros(4, k)
    one_hot[:, 3] = 1.0
    assert teacher_entropy(uniform).item() == pytest.approx(math.log(k), rel=1e-6)
    assert teacher_entropy(one_hot).item() == 0.0
    assert mean_distribution_entropy(torch.eye(k)).item() == pytest.approx(math.log(k), rel=1e-6)
    assert mean_distribution_entropy(one_hot).item() == 0.0


def test_monitor_healthy_and_collapsed_embeddings():
    torch.manual_seed(0)
    healthy = CollapseMonitor(window=64)
    for _ in range(8):
        report = healthy.update(embeddings=torch.randn(8, 16))
    assert not report.collapsed and report.message == ""
    assert report.metrics["embedding_std_ratio"] == pytest.approx(1.0, rel=0.15)
    assert report.metrics["effective_rank"] > 8

    collapsed = CollapseMonitor(window=64)
    report = collapsed.update(embeddings=torch.ones(8, 16) + 1e-6 * torch.randn(8, 16))
    assert report.collapsed
    assert "embedding collapse" in report.message and "rank collapse" in report.message


def test_monitor_window_keeps_newest_rows():
    monitor = CollapseMonitor(window=10)
    for _ in range(5):
        monitor.update(embeddings=torch.randn(4, 3))
    assert monitor._embeddings.shape == (10, 3)


def test_monitor_dino_teacher():
    torch.manual_seed(0)
    k = 32
    uniform = CollapseMonitor().update(teacher_probs=torch.full((8, k), 1.0 / k))
    assert uniform.collapsed and "uniform" in uniform.message
    one_hot = torch.zeros(8, k)
    one_hot[:, 0] = 1.0
    single = CollapseMonitor().update(teacher_probs=one_hot)
    assert single.collapsed and "one prototype" in single.message
    sharp = torch.softmax(torch.randn(8, k) / 0.04, dim=-1)
    healthy = CollapseMonitor().update(teacher_probs=sharp)
    assert not healthy.collapsed, healthy.message
    assert 0 <= healthy.metrics["teacher_entropy_ratio"] < 0.99


def test_monitor_checks_can_be_disabled():
    report = CollapseMonitor(min_std_ratio=None, min_effective_rank=None).update(embeddings=torch.ones(4, 3))
    assert not report.collapsed and "embedding_std" in report.metrics


def test_no_ignite_dependency():
    tree = ast.parse(Path(collapse.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any("ignite" in name for name in imported)

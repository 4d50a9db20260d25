import pytest
import torch
from torch import nn

from monai_ssl_plugin.pretext.heads import DINOHead, PredictionHead, ProjectionHead


def _has_running_stats(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in module.modules())


@pytest.mark.parametrize(
    "head, in_dim, out_dim",
    [
        (ProjectionHead(16, hidden_dim=32, out_dim=8), 16, 8),
        (ProjectionHead(16, hidden_dim=32, out_dim=8, num_layers=3, activation="gelu"), 16, 8),
        (ProjectionHead(16, out_dim=8, num_layers=1), 16, 8),
        (PredictionHead(8, hidden_dim=32), 8, 8),
        (DINOHead(16, out_dim=20, hidden_dim=32, bottleneck_dim=8), 16, 20),
    ],
)
def test_batch_size_one_in_train_mode(head, in_dim, out_dim):
    torch.manual_seed(0)
    head.train()
    x = torch.randn(1, in_dim, requires_grad=True)
    out = head(x)
    assert out.shape == (1, out_dim)
    out.sum().backward()
    assert x.grad is not None
    assert head(torch.randn(2, 5, in_dim)).shape == (2, 5, out_dim)  # token inputs
    assert not _has_running_stats(head)


def test_layer_norm_is_default():
    assert any(isinstance(m, nn.LayerNorm) for m in ProjectionHead(4, 8, 4).modules())


def test_batch_norm_option_voco_style():
    torch.manual_seed(0)
    head = ProjectionHead(6, hidden_dim=8, out_dim=4, num_layers=3, norm="batch")
    bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 2 and all(not m.affine and not m.track_running_stats for m in bns)
    assert head(torch.randn(2, 6)).shape == (2, 4)
    assert head(torch.randn(1, 3, 6)).shape == (1, 3, 4)  # 3 crop rows of one volume
    head.eval()
    assert head(torch.randn(2, 6)).shape == (2, 4)  # batch statistics in eval as well
    with pytest.raises(ValueError, match="norm='layer'"):
        head(torch.randn(1, 6))


def test_dino_head_weight_norm_last_layer():
    torch.manual_seed(0)
    head = DINOHead(8, out_dim=12, hidden_dim=16, bottleneck_dim=4)
    weight = head.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(12))
    out = head(torch.randn(3, 8))
    assert out.abs().max() <= 1.0 + 1e-6  # cosine to unit prototypes
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    head(torch.randn(3, 8)).pow(2).sum().backward()
    opt.step()
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(12))
    free = DINOHead(8, out_dim=12, hidden_dim=16, bottleneck_dim=4, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_bad_options_rejected():
    with pytest.raises(ValueError):
        ProjectionHead(4, norm="group")
    with pytest.raises(ValueError):
        ProjectionHead(4, num_layers=0)

"""bench_memory_model: saved-for-backward bytes are exact counts; the fit reproduces them."""

from __future__ import annotations

import bench_memory_model
import pytest
import torch
from torch import nn


class _Net(nn.Module):
    """conv -> relu, called like a pretext: batch dict in, {"loss"} out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)

    def forward(self, batch: dict) -> dict:
        return {"loss": torch.relu(self.conv(batch["image"])).mean()}


def test_saved_bytes_count_each_activation_once_and_no_parameters() -> None:
    x = torch.randn(2, 1, 8, 8, 8)
    # conv saves its input (2 x 512 float32) and its weight (a parameter: not counted); relu its output (2 x 4 x 512)
    assert bench_memory_model.saved_bytes(_Net(), x) == 4 * (2 * 512) + 4 * (2 * 4 * 512)


def test_optimizer_states_per_parameter() -> None:
    params = [nn.Parameter(torch.zeros(2))]
    assert bench_memory_model.optimizer_states(torch.optim.AdamW(params)) == 2
    assert bench_memory_model.optimizer_states(torch.optim.SGD(params, lr=0.1, momentum=0.9)) == 1
    assert bench_memory_model.optimizer_states(torch.optim.SGD(params, lr=0.1)) == 0


@pytest.mark.parametrize("bundle", ["mae_ssl_pretraining", "swin_unetr_ssl_pretraining", "voco_ssl_pretraining",
                                    "models_genesis_ssl_pretraining"])
def test_fit_patches_grow_and_keep_the_bundle_shape(bundle) -> None:
    patches = bench_memory_model.fit_patches(bundle)
    assert 2 <= len(patches) <= 3
    voxels = [p[0] * p[1] * p[2] for p in patches]
    assert voxels == sorted(voxels) and len(set(voxels)) == len(voxels)

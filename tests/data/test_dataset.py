import numpy as np
import pytest
import torch

from monai_ssl_plugin.data.dataset import RandomPatchDataset, make_patch_loader, pad_to
from monai_ssl_plugin.data.sources import ArraySource
from monai_ssl_plugin.data.synthetic import make_synthetic_volumes
from monai_ssl_plugin.errors import PluginError


class CountingSource(ArraySource):
    def __init__(self, volumes):
        super().__init__(volumes)
        self.loads = 0

    def load(self, i):
        self.loads += 1
        return super().load(i)


@pytest.fixture(scope="module")
def source():
    return ArraySource(list(make_synthetic_volumes(4, (20, 18, 16), seed=0, n_channels=2)), spacing=[2, 2, 2])


def test_shapes_and_determinism(source):
    ds = RandomPatchDataset(source, (8, 8, 8), num_samples=10, seed=3)
    item = ds[4]
    assert set(item) == {"image"} and item["image"].shape == (2, 8, 8, 8) and item["image"].dtype == torch.float32
    again = RandomPatchDataset(source, (8, 8, 8), num_samples=10, seed=3, cache_size=0)
    for i in range(10):
        torch.testing.assert_close(ds[i]["image"], again[i]["image"])
    other = RandomPatchDataset(source, (8, 8, 8), num_samples=10, seed=4)
    assert any(not torch.equal(ds[i]["image"], other[i]["image"]) for i in range(10))
    assert len({ds.sample(i) for i in range(10)}) > 5  # different cases/crops per index
    case, start = ds.sample(7)
    vol = source.load(case)
    np.testing.assert_array_equal(ds[7]["image"].numpy(), vol[:, start[0]:start[0] + 8, start[1]:start[1] + 8,
                                                              start[2]:start[2] + 8])
    with pytest.raises(IndexError):
        ds[10]


def test_small_volumes_are_zero_padded():
    src = ArraySource([np.random.default_rng(0).normal(size=(1, 4, 10, 3))])
    ds = RandomPatchDataset(src, (8, 8, 8), num_samples=3)
    patch = ds[0]["image"]
    assert patch.shape == (1, 8, 8, 8)
    # axis 0: 4 voxels centred in 8 -> 2 zero slices on each side; axis 2: 3 in 8 -> 2 before, 3 after
    assert torch.all(patch[:, :2] == 0) and torch.all(patch[:, 6:] == 0)
    assert torch.all(patch[..., :2] == 0) and torch.all(patch[..., 5:] == 0)
    assert torch.all(patch[:, 2:6, :, 2:5] != 0)
    assert pad_to(np.ones((1, 9, 9)), (4, 4)).shape == (1, 9, 9)


def test_cache_is_bounded_lru():
    src = CountingSource(list(make_synthetic_volumes(5, (8, 8, 8), seed=1)))
    ds = RandomPatchDataset(src, (4, 4, 4), num_samples=200, cache_size=2)
    for i in range(200):
        ds[i]
    assert len(ds._cache) == 2 and 5 <= src.loads < 200
    src.loads = 0
    ds = RandomPatchDataset(src, (4, 4, 4), num_samples=50, cache_size=5)
    for i in range(50):
        ds[i]
    assert src.loads == 5  # everything fits: each volume loaded once


def test_bad_arguments(source):
    with pytest.raises(PluginError, match="does not fit 3D"):
        RandomPatchDataset(source, (8, 8), 4)
    with pytest.raises(PluginError, match="num_samples"):
        RandomPatchDataset(source, (8, 8, 8), 0)
    with pytest.raises(PluginError, match="no full batch"):
        make_patch_loader(source, (8, 8, 8), batch_size=4, num_samples=3)
    with pytest.raises(PluginError, match="num_workers"):
        make_patch_loader(source, (8, 8, 8), batch_size=2, num_samples=4, num_workers=-1)


def test_loader_batches_same_with_and_without_workers(source):
    plain = make_patch_loader(source, (8, 8, 8), batch_size=3, num_samples=7, seed=5)
    batches = [b["image"] for b in plain]
    assert len(batches) == 2 and batches[0].shape == (3, 2, 8, 8, 8)  # incomplete batch dropped
    workers = make_patch_loader(source, (8, 8, 8), batch_size=3, num_samples=7, seed=5, num_workers=1)
    assert workers.persistent_workers and workers.worker_init_fn is not None
    for a, b in zip(batches, [b["image"] for b in workers]):
        torch.testing.assert_close(a, b)

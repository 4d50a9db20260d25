import pytest
import torch

from monai_ssl_plugin.transforms.masking import random_block_mask, resize_mask


@pytest.mark.parametrize("shape", [(32, 32, 32), (48, 40), (33, 20, 17)])
def test_ratio_exact_on_block_grid_and_blocky(shape):
    g = torch.Generator().manual_seed(0)
    m = random_block_mask(4, shape, 8, 0.75, generator=g)
    assert m.shape == (4, 1, *shape) and set(m.unique().tolist()) <= {0.0, 1.0}
    if all(s % 8 == 0 for s in shape):
        n_blocks = torch.tensor(shape).div(8).prod().item()
        expected = round(0.75 * n_blocks) / n_blocks
        assert torch.allclose(1 - m.mean(dim=tuple(range(1, m.ndim))), torch.tensor(expected))
    # constant inside each full block
    blocks = m[(slice(None), 0) + tuple(slice(0, 8) for _ in shape)]
    assert (blocks == blocks.flatten(1)[:, :1].view(-1, *([1] * len(shape)))).all()


def test_ratio_range_per_sample_and_reproducible():
    a = random_block_mask(64, (32, 32), 4, (0.6, 0.9), generator=torch.Generator().manual_seed(1))
    b = random_block_mask(64, (32, 32), 4, (0.6, 0.9), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    r = 1 - a.mean(dim=(1, 2, 3))
    assert r.min() >= 0.59 and r.max() <= 0.91 and r.std() > 0.02


def test_bad_ratio_and_resize():
    with pytest.raises(ValueError):
        random_block_mask(1, (8, 8), 2, 1.0)
    m = random_block_mask(2, (16, 16, 16), 8, 0.5)
    assert resize_mask(m, (4, 4, 4)).shape == (2, 1, 4, 4, 4)

"""Property tests for monai_ssl_plugin.transforms.views (tiny tensors, one thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_ssl_plugin.transforms import views as V

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _unique_batch(batch: int, channels: int, spatial: tuple[int, ...], device: str = "cpu") -> torch.Tensor:
    n = batch * channels * int(np.prod(spatial))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return ((perm.float() + 0.5) / n).view(batch, channels, *spatial).to(device)


def _slice(x: torch.Tensor, start, size) -> torch.Tensor:
    """(C, *size) crop of a (C, *spatial) sample."""
    return x[(slice(None), *[slice(int(s), int(s) + int(z)) for s, z in zip(start, size)])]


# ------------------------------------------------------------------------------------------
# rotations
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,plane",
    [((16, 2, 6, 5, 5), (-2, -1)), ((16, 2, 6, 5, 5), (-1, -2)), ((16, 1, 5, 5, 3), (2, 3)), ((16, 1, 7, 7), (2, 3))],
)
@pytest.mark.parametrize("device", DEVICES)
def test_rotation_is_exact_permutation(shape, plane, device: str, backend: str) -> None:
    x = _unique_batch(*shape[:2], shape[2:], device)
    rotated, labels = V.random_rotation90(x, plane, 0)
    assert rotated.shape == x.shape and labels.shape == (shape[0],) and labels.dtype == torch.int64
    assert set(labels.tolist()) <= {0, 1, 2, 3} and len(set(labels.tolist())) > 1
    for b in range(shape[0]):
        assert torch.equal(rotated[b].flatten().sort().values, x[b].flatten().sort().values)
        k = int(labels[b])
        assert torch.equal(rotated[b], torch.rot90(x[b], k, [d % x.dim() - 1 for d in plane]))
        assert torch.equal(torch.rot90(rotated[b], -k, [d % x.dim() - 1 for d in plane]), x[b])


@pytest.mark.parametrize("plane", [(-2, -1), (-1, -2)])
def test_stacked_rotations_are_independent_exact_copies(plane, backend: str) -> None:
    x = _unique_batch(5, 2, (4, 6, 6))
    (target, view), labels = V.random_rotations90(x, plane, 7, repeats=2, copies=2)
    assert target.shape == view.shape == (10, 2, 4, 6, 6) and labels.shape == (10,)
    _, first = V.random_rotation90(x, plane, 7)
    assert torch.equal(labels[:5], first)  # the first view draws what random_rotation90 draws
    for r in range(10):
        assert torch.equal(target[r], torch.rot90(x[r % 5], int(labels[r]), [d % x.dim() - 1 for d in plane]))
    assert torch.equal(view, target)
    view[0].zero_()  # two tensors, not two names for one
    assert not torch.equal(view[0], target[0])
    (only,), labels1 = V.random_rotations90(x, plane, 7, repeats=1, copies=1)
    assert torch.equal(only, target[:5]) and torch.equal(labels1, first)


def test_rotation_rejects_non_square_plane_and_non_spatial_dims() -> None:
    with pytest.raises(ValueError):
        V.random_rotation90(torch.rand(2, 1, 4, 5, 6), (-2, -1), 0)
    with pytest.raises(ValueError):
        V.random_rotation90(torch.rand(2, 4, 4, 4), (1, 2), 0)


def test_rotation_reproducible_and_balanced(backend: str) -> None:
    x = torch.rand(400, 1, 2, 2)
    a = V.random_rotation90(x, (-2, -1), 3)
    b = V.random_rotation90(x, (-2, -1), torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    counts = torch.bincount(a[1], minlength=4).float() / 400
    assert (counts > 0.15).all()


# ------------------------------------------------------------------------------------------
# crops
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial,size", [((10, 9, 8), (4, 3, 5)), ((12, 7), (5, 7))])
def test_crop_boxes_equals_slicing(spatial, size) -> None:
    x = _unique_batch(3, 2, spatial)
    gen = torch.Generator().manual_seed(0)
    starts = torch.stack([torch.randint(0, s - z + 1, (3, 4), generator=gen) for s, z in zip(spatial, size)], -1)
    crops = V.crop_boxes(x, starts, size)
    assert crops.shape == (3, 4, 2, *size)
    for b in range(3):
        for k in range(4):
            assert torch.equal(crops[b, k], _slice(x[b], starts[b, k], size))


@pytest.mark.parametrize("spatial,out_size", [((20, 18, 16), (8, 6, 10)), ((25, 21), (9, 13))])
def test_resized_crops_match_interpolate(spatial, out_size) -> None:
    x = torch.rand(2, 2, *spatial)
    gen = torch.Generator().manual_seed(1)
    sizes = torch.stack([torch.randint(2, s + 1, (2, 5), generator=gen) for s in spatial], -1)
    starts = torch.stack([torch.randint(0, 10**6, (2, 5), generator=gen) for _ in spatial], -1) % (
        torch.tensor(spatial) - sizes + 1
    )
    out = V.resized_crops(x, starts, sizes, out_size)
    mode = "trilinear" if len(spatial) == 3 else "bilinear"
    for b in range(2):
        for k in range(5):
            crop = _slice(x[b], starts[b, k], sizes[b, k])[None]
            ref = F.interpolate(crop, size=out_size, mode=mode, align_corners=False)[0]
            assert torch.allclose(out[b, k], ref, atol=1e-5)


def test_cube_grid_matches_slicing() -> None:
    x = _unique_batch(2, 1, (21, 20, 19))
    cubes = V.cube_grid(x, 2, 3)
    sub = [(s - 3) // 2 for s in (21, 20, 19)]  # 9, 8, 8
    assert cubes.shape == (2, 8, 1, *sub)
    offsets = [(s - (2 * c + 3)) // 2 for s, c in zip((21, 20, 19), sub)]
    for n, (i, j, k) in enumerate(np.ndindex(2, 2, 2)):
        start = [o + g * (c + 3) for o, g, c in zip(offsets, (i, j, k), sub)]
        assert torch.equal(cubes[:, n], x[(slice(None), slice(None), *[slice(s, s + c) for s, c in zip(start, sub)])])


def test_cube_grid_2d_and_grid_per_dim() -> None:
    x = torch.rand(3, 2, 12, 9)
    assert V.cube_grid(x, (3, 3)).shape == (3, 9, 2, 4, 3)
    with pytest.raises(ValueError):
        V.cube_grid(torch.rand(1, 1, 3, 3, 3), 2, 4)


@pytest.mark.parametrize("spatial", [(32, 32, 24), (40, 36)])
def test_multi_crop_shapes_boxes_and_content(spatial) -> None:
    x = torch.rand(3, 1, *spatial)
    dims = len(spatial)
    out = V.multi_crop(x, 2, 16, 5, 8, generator=0)
    assert out.global_views.shape == (3, 2, 1, *(16,) * dims)
    assert out.local_views.shape == (3, 5, 1, *(8,) * dims)
    s = torch.tensor(spatial)
    for starts, sizes, scale in (
        (out.global_starts, out.global_sizes, (0.4, 1.0)),
        (out.local_starts, out.local_sizes, (0.05, 0.4)),
    ):
        assert (starts >= 0).all() and (starts + sizes <= s).all() and (sizes >= 1).all()
        frac = sizes.prod(-1).double() / s.prod()
        # rounding and clipping at the border move the fraction a little off the drawn one
        assert (frac <= scale[1] * 1.35).all() and (frac >= scale[0] * 0.4).all()
    mode = "trilinear" if dims == 3 else "bilinear"
    crop = _slice(x[1], out.local_starts[1, 3], out.local_sizes[1, 3])[None]
    ref = F.interpolate(crop, size=(8,) * dims, mode=mode, align_corners=False)[0]
    assert torch.allclose(out.local_views[1, 3], ref, atol=1e-5)
    again = V.multi_crop(x, 2, 16, 5, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.local_views, out.local_views)


def test_multi_crop_global_scale_statistics() -> None:
    out = V.multi_crop(torch.rand(64, 1, 40, 40, 40), 2, 8, 0, 4, generator=0)
    frac = out.global_sizes.prod(-1).double() / 40**3
    assert 0.55 < float(frac.mean()) < 0.8  # U(0.4, 1) has mean 0.7
    assert out.local_views.shape[1] == 0


@pytest.mark.parametrize("spatial,size,min_overlap", [((48, 48, 16), 16, 0.5), ((40, 30), (20, 12), 0.7), ((24, 24, 24), 12, 1.0)])
@pytest.mark.parametrize("device", DEVICES)
def test_overlapping_crop_pair(spatial, size, min_overlap, device: str) -> None:
    x = _unique_batch(32, 1, spatial, device)
    pair = V.overlapping_crop_pair(x, size, min_overlap, 0)
    size_t = (size,) * len(spatial) if isinstance(size, int) else size
    c = torch.tensor(size_t, device=device)
    inter = (c - (pair.start1 - pair.start2).abs()).clamp(min=0).prod(-1).double() / c.prod()
    assert (inter >= min_overlap - 1e-9).all()
    assert torch.allclose(inter.float(), pair.overlap)
    for b in range(0, 32, 7):
        assert torch.equal(pair.view1[b], _slice(x[b], pair.start1[b], size_t))
        assert torch.equal(pair.view2[b], _slice(x[b], pair.start2[b], size_t))
    if min_overlap < 1.0:
        assert (pair.overlap < 1.0).any(), "the second crop should usually move"
    again = V.overlapping_crop_pair(x, size, min_overlap, torch.Generator(device=device).manual_seed(0))
    assert torch.equal(again.view2, pair.view2)


# ------------------------------------------------------------------------------------------
# VoCo
# ------------------------------------------------------------------------------------------


def test_voco_overlap_targets_constructed_case() -> None:
    base_starts, base_size = V.base_crop_boxes((8, 8, 2), (4, 4), (0, 1))
    assert base_size == (2, 2, 2) and base_starts.shape == (16, 3)
    # a 2x2x2 crop at (1, 1, 0) covers a quarter of bases (0,0), (0,1), (1,0), (1,1)
    targets = V.crop_overlap_ratios(torch.tensor([[1, 1, 0], [4, 6, 0], [3, 0, 0]]), (2, 2, 2), base_starts, base_size)
    expected = torch.zeros(3, 16)
    expected[0, [0, 1, 4, 5]] = 0.25
    expected[1, 2 * 4 + 3] = 1.0  # exactly base (2, 3)
    expected[2, [4, 8]] = 0.5  # straddles rows 1 and 2 of column 0
    assert torch.allclose(targets, expected)


@pytest.mark.parametrize("spatial", [(16, 16, 4), (17, 19, 5), (12, 20)])
def test_voco_random_crops_targets_brute_force(spatial) -> None:
    x = _unique_batch(2, 1, spatial)
    out = V.random_crop_with_overlap_targets(x, 6, generator=0)
    base_starts, base_size = V.base_crop_boxes(spatial, (4, 4), (0, 1))
    assert out.crops.shape == (2, 6, 1, *base_size) and out.targets.shape == (2, 6, 16)
    assert torch.allclose(out.targets.sum(-1), torch.ones(2, 6))
    for b in range(2):
        for n in range(6):
            crop_mask = torch.zeros(spatial, dtype=torch.bool)
            crop_mask[tuple(slice(int(s), int(s) + z) for s, z in zip(out.starts[b, n], base_size))] = True
            for j in range(16):
                base_mask = torch.zeros(spatial, dtype=torch.bool)
                base_mask[tuple(slice(int(s), int(s) + z) for s, z in zip(base_starts[j], base_size))] = True
                ratio = (crop_mask & base_mask).sum() / crop_mask.sum()
                assert abs(float(out.targets[b, n, j]) - float(ratio)) < 1e-6
            assert torch.equal(out.crops[b, n], _slice(x[b], out.starts[b, n], base_size))


def test_base_crops_grid_matches_slicing() -> None:
    x = _unique_batch(2, 2, (16, 12, 4))
    bases = V.base_crops_grid(x)
    starts, size = V.base_crop_boxes((16, 12, 4))
    assert bases.shape == (2, 16, 2, 4, 3, 4)
    for j in range(16):
        assert torch.equal(bases[0, j], _slice(x[0], starts[j], size))


def test_voco_custom_crop_size_and_errors() -> None:
    x = torch.rand(1, 1, 16, 16, 8)
    out = V.random_crop_with_overlap_targets(x, 3, size=(2, 2, 4), generator=1)
    assert out.crops.shape == (1, 3, 1, 2, 2, 4)
    assert torch.allclose(out.targets.sum(-1), torch.ones(1, 3))
    with pytest.raises(ValueError):
        V.random_crop_with_overlap_targets(x, 1, size=(20, 2, 2))

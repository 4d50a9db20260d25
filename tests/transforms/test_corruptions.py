"""Property tests for the corruptions of monai_ssl_plugin.transforms (tiny tensors, one thread)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from monai_ssl_plugin.transforms import _cpu_kernels as K
from monai_ssl_plugin import transforms as C
from monai_ssl_plugin.transforms import _boxes
from monai_ssl_plugin.transforms.views import random_rotation90

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


# every test runs on both CPU paths (the ``backend`` fixture of conftest.py)
pytestmark = pytest.mark.usefixtures("backend")


def _unique_batch(batch: int, channels: int, spatial: tuple[int, ...], device: str = "cpu", seed: int = 0) -> torch.Tensor:
    """Distinct values in (0, 1): every voxel is identifiable after a permutation."""
    n = batch * channels * int(np.prod(spatial))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return ((perm.float() + 0.5) / n).view(batch, channels, *spatial).to(device)


def _flips_of(sample: torch.Tensor) -> list[torch.Tensor]:
    """All 2**D axis-flip combinations of a (C, *spatial) sample."""
    dims = sample.dim() - 1
    out = []
    for r in range(dims + 1):
        for axes in itertools.combinations(range(1, dims + 1), r):
            out.append(sample.flip(axes) if axes else sample)
    return out


SHAPES = [(2, 1, 24, 20, 12), (2, 2, 24, 20)]

# every random generator in the module, with small settings, for shape/reproducibility sweeps
GENERATORS = {
    "random_flip": lambda x, g: C.random_flip(x, None, g, prob=0.9),
    "local_pixel_shuffle": lambda x, g: C.local_pixel_shuffle(x, g, n_blocks=200),
    "bezier_intensity": lambda x, g: C.bezier_intensity(x, g),
    "in_painting": lambda x, g: C.in_painting(x, g),
    "out_painting": lambda x, g: C.out_painting(x, g),
    "models_genesis": lambda x, g: C.models_genesis(x, g, n_blocks=200),
    "coarse_dropout": lambda x, g: C.coarse_dropout(x, g, holes=2, spatial_size=3, max_holes=4, max_spatial_size=6),
    "coarse_dropout_out": lambda x, g: C.coarse_dropout(
        x, g, holes=2, spatial_size=3, max_spatial_size=8, dropout_holes=False, fill_value=(0.0, 1.0)
    ),
    "coarse_shuffle": lambda x, g: C.coarse_shuffle(x, g, holes=3, spatial_size=4),
    "monai_ssl_view": lambda x, g: C.monai_ssl_view(x, g),
    "swin_unetr_cutout": lambda x, g: C.swin_unetr_cutout(x, g),
}


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


# ------------------------------------------------------------------------------------------
# generic: shapes, 2D/3D, reproducibility, no in-place modification
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("shape", SHAPES, ids=["3d", "2d"])
@pytest.mark.parametrize("device", DEVICES)
def test_shapes_reproducible_and_pure(name: str, shape: tuple[int, ...], device: str) -> None:
    fn = GENERATORS[name]
    x = _unique_batch(*shape[:2], shape[2:], device)
    before = x.clone()
    first = _as_tuple(fn(x, 7))
    second = _as_tuple(fn(x, torch.Generator(device=device).manual_seed(7)))
    other = _as_tuple(fn(x, 8))
    assert torch.equal(x, before), "input modified in place"
    for a, b in zip(first, second):
        assert a.shape == x.shape and a.device == x.device and a.dtype == x.dtype
        assert torch.equal(a, b), "same seed must give identical output"
    assert any(not torch.equal(a, c) for a, c in zip(first, other)), "different seeds gave identical output"


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_non_contiguous_input_gives_the_same_result(name: str) -> None:
    x = _unique_batch(2, 12, (10, 3, 2)).movedim(-1, 1)  # (2, 2, 12, 10, 3), channels last in memory
    assert not x.is_contiguous()
    fn = GENERATORS[name]
    for a, b in zip(_as_tuple(fn(x, 4)), _as_tuple(fn(x.contiguous(), 4))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["local_pixel_shuffle", "bezier_intensity", "in_painting", "coarse_shuffle"])
def test_prob_zero_is_identity(name: str) -> None:
    x = _unique_batch(3, 1, (16, 16, 8))
    kwargs = {"coarse_shuffle": {"holes": 2, "spatial_size": 4}}.get(name, {})
    out = getattr(C, name)(x, 0, prob=0.0, **kwargs)
    assert torch.equal(out, x)


def test_bad_input_rank() -> None:
    with pytest.raises(ValueError):
        C.bezier_intensity(torch.rand(2, 8, 8), 0)


# ------------------------------------------------------------------------------------------
# Models Genesis
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 1, 6, 5, 4), (16, 2, 6, 5)])
def test_random_flip_flips_input_and_target_alike(shape: tuple[int, ...]) -> None:
    x = _unique_batch(*shape[:2], shape[2:])
    y = x * 2 + 1
    xf, yf = C.random_flip(x, y, 3, prob=0.7)
    assert torch.allclose(yf, xf * 2 + 1)
    changed = 0
    for b in range(shape[0]):
        candidates = _flips_of(x[b])
        assert any(torch.equal(xf[b], c) for c in candidates)
        changed += not torch.equal(xf[b], x[b])
    assert changed > 0


def test_random_flip_parity_distribution() -> None:
    # P(no flip at all) = 0.6 at the published rate 0.4; with pairs on the same axis the share
    # of unchanged samples is a bit higher: 0.6 + 0.096 / 3 + ... -> check a loose band.
    x = _unique_batch(400, 1, (3, 3, 3))
    xf, _ = C.random_flip(x, None, 0)
    unchanged = sum(torch.equal(xf[b], x[b]) for b in range(400)) / 400
    assert 0.55 < unchanged < 0.75


def test_shuffle_boxes_keeps_multiset_of_each_box() -> None:
    x = _unique_batch(2, 2, (12, 10, 8))
    # non-overlapping boxes, plus a later box overlapping the first one in sample 0
    starts = torch.tensor([[[0, 0, 0], [6, 5, 4], [2, 1, 1]], [[1, 1, 1], [7, 0, 0], [0, 6, 5]]])
    sizes = torch.tensor([[[4, 4, 4], [3, 4, 4], [3, 3, 3]], [[3, 3, 3], [5, 5, 2], [2, 2, 3]]])
    out = C.shuffle_boxes(x, starts, sizes, 0)
    covered = torch.zeros(2, 12, 10, 8, dtype=torch.bool)
    for b in range(2):
        for k in range(3):
            sl = tuple(slice(int(s), int(s + z)) for s, z in zip(starts[b, k], sizes[b, k]))
            covered[(b, *sl)] = True
            overlapped_later = b == 0 and k == 0  # box 2 of sample 0 overwrites part of box 0
            if overlapped_later:
                continue
            before = x[(b, slice(None), *sl)].reshape(2, -1)
            after = out[(b, slice(None), *sl)].reshape(2, -1)
            assert torch.equal(before.sort(1).values, after.sort(1).values)
            assert not torch.equal(before, after)
            # all channels of a voxel move together
            order_before = before[0].argsort()
            order_after = after[0].argsort()
            assert torch.equal(before[1][order_before], after[1][order_after])
    assert torch.equal(out.movedim(1, -1)[~covered], x.movedim(1, -1)[~covered])


def test_shuffle_boxes_many_boxes_use_wide_sort_keys() -> None:
    # 2 x 16,384 disjoint 1x1x2 boxes tile two 32^3 volumes: more boxes than int32 keys allow
    x = _unique_batch(2, 1, (32, 32, 32))
    i, j, k = torch.meshgrid(torch.arange(32), torch.arange(32), torch.arange(0, 32, 2), indexing="ij")
    starts = torch.stack([i, j, k], -1).reshape(1, -1, 3).expand(2, -1, -1)
    sizes = torch.tensor([1, 1, 2]).expand_as(starts)
    out = C.shuffle_boxes(x, starts, sizes, 0)
    pairs_in, pairs_out = x.view(2, -1, 2), out.view(2, -1, 2)
    assert torch.equal(pairs_in.sort(-1).values, pairs_out.sort(-1).values)
    swapped = (pairs_in != pairs_out).any(-1).float().mean()
    assert 0.4 < float(swapped) < 0.6  # each 2-voxel box is swapped with probability 1/2


@pytest.mark.parametrize("spatial", [(20, 20, 10), (30, 24)])
def test_local_pixel_shuffle_is_local(spatial: tuple[int, ...]) -> None:
    x = _unique_batch(2, 1, spatial)
    out = C.local_pixel_shuffle(x, 1, n_blocks=300)
    assert not torch.equal(out, x)
    # every output value comes from a voxel at most (max side - 1) away along each axis
    flat_x = x.view(2, -1)
    lookup = {float(v): i for i, v in enumerate(flat_x[0].tolist())}
    coords = np.array(np.unravel_index(np.arange(flat_x.shape[1]), spatial)).T
    src = np.array([lookup[float(v)] for v in out.view(2, -1)[0].tolist()])
    max_side = np.array([max(1, s // 10) for s in spatial])
    assert (np.abs(coords - coords[src]) <= max_side - 1).all()


def test_local_pixel_shuffle_single_block_is_permutation() -> None:
    x = _unique_batch(3, 1, (16, 16, 16))
    out = C.local_pixel_shuffle(x, 2, n_blocks=1, max_block_frac=0.5)
    for b in range(3):
        assert torch.equal(out[b].flatten().sort().values, x[b].flatten().sort().values)
        moved = (out[b, 0] != x[b, 0]).nonzero()
        if len(moved):
            extent = moved.max(0).values - moved.min(0).values + 1
            assert (extent <= 8).all()


def _numpy_bezier(values: np.ndarray, control: np.ndarray, inverted: bool) -> np.ndarray:
    """Independent oracle: dense sampling of the curve and np.interp (100,000 points)."""
    t = np.linspace(0.0, 1.0, 100_000)
    pts = np.array([[0.0, 0.0], control[0], control[1], [1.0, 1.0]])
    coeff = np.array([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])
    xs, ys = coeff.T @ pts[:, 0], coeff.T @ pts[:, 1]
    if inverted:
        ys = ys[::-1]
    return np.interp(values, xs, ys)


@pytest.mark.parametrize("device", DEVICES)
def test_bezier_monotone_fixed_ends_and_inverted(device: str) -> None:
    gen = torch.Generator().manual_seed(0)
    control = torch.rand(6, 2, 2, generator=gen).to(device)
    inverted = torch.tensor([False, True] * 3, device=device)
    ramp = torch.linspace(0, 1, 2001, device=device).expand(6, 1, 2001).reshape(6, 1, 2001, 1).contiguous()
    out = C.apply_bezier(ramp, control, inverted)[:, 0, :, 0].cpu()
    for b in range(6):
        d = torch.diff(out[b])
        if inverted[b]:
            assert (d <= 1e-7).all() and out[b, 0] == 1.0 and out[b, -1] == 0.0
        else:
            assert (d >= -1e-7).all() and out[b, 0] == 0.0 and out[b, -1] == 1.0
        ref = _numpy_bezier(ramp[b, 0, :, 0].cpu().numpy(), control[b].cpu().numpy(), bool(inverted[b]))
        assert np.abs(out[b].numpy() - ref).mean() < 1e-4
        assert np.abs(out[b].numpy() - ref).max() < 0.05  # a near-vertical tangent is the worst case


def test_bezier_on_the_diagonal_is_identity() -> None:
    control = torch.tensor([[[0.2, 0.2], [0.7, 0.7]]])
    x = torch.rand(1, 1, 8, 8, 8)
    out = C.apply_bezier(x, control, torch.tensor([False]))
    assert torch.allclose(out, x, atol=1e-4)


def test_bezier_intensity_keeps_order_or_reverses_it() -> None:
    x = _unique_batch(8, 1, (6, 6, 6))
    out = C.bezier_intensity(x, 3)
    for b in range(8):
        order = x[b].flatten().argsort()
        mapped = out[b].flatten()[order]
        d = torch.diff(mapped)
        assert (d >= -1e-6).all() or (d <= 1e-6).all()
        assert 0.0 <= float(out[b].min()) and float(out[b].max()) <= 1.0


def test_in_painting_covered_fraction_in_published_range() -> None:
    spatial = (48, 48, 24)
    x = torch.full((64, 1, *spatial), 2.0)  # outside the noise range, so changes are visible
    out = C.in_painting(x, 0)
    changed = out != 2.0
    frac = changed.flatten(1).float().mean(1)
    lo_side = [s // 6 for s in spatial]
    hi_side = [s // 3 for s in spatial]
    one_min = np.prod(lo_side) / np.prod(spatial)
    five_max = 5 * np.prod(hi_side) / np.prod(spatial)
    painted = frac > 0
    assert (frac[painted] >= one_min - 1e-9).all() and (frac <= five_max + 1e-9).all()
    assert 0.85 < painted.float().mean() <= 1.0  # P(no block) = 0.05
    assert ((out[changed] >= 0.0) & (out[changed] < 1.0)).all()
    # blocks keep a 3-voxel margin from the border
    border = torch.ones(spatial, dtype=torch.bool)
    border[3:-3, 3:-3, 3:-3] = False
    assert not changed[:, 0][:, border].any()


@pytest.mark.parametrize("spatial", [(42, 42, 28), (56, 49)])
def test_out_painting_kept_fraction_in_published_range(spatial: tuple[int, ...]) -> None:
    x = torch.full((64, 1, *spatial), 2.0)
    out = C.out_painting(x, 1)
    kept = (out == 2.0).flatten(1).float().mean(1)
    smallest = np.prod([s - 4 * s // 7 for s in spatial]) / np.prod(spatial)
    largest = np.prod([s - 3 * s // 7 for s in spatial]) / np.prod(spatial)
    assert (kept >= smallest - 1e-9).all()
    assert (kept <= min(1.0, 5 * largest) + 1e-9).all()
    assert (kept < 1.0).all()
    noise = out[out != 2.0]
    assert ((noise >= 0.0) & (noise < 1.0)).all()


def test_models_genesis_target_is_flipped_original() -> None:
    x = _unique_batch(12, 1, (16, 16, 8))
    corrupted, target = C.models_genesis(x, 5, n_blocks=500)
    for b in range(12):
        assert any(torch.equal(target[b], c) for c in _flips_of(x[b]))
    assert not torch.equal(corrupted, target)


def test_models_genesis_rates_per_sample() -> None:
    # with painting certain and in-painting impossible, every sample is out-painted
    x = torch.full((16, 1, 21, 21, 14), 0.5)
    corrupted, _ = C.models_genesis(x, 0, paint_prob=1.0, inpaint_prob=0.0, nonlinear_prob=0.0, n_blocks=10)
    noisy = (corrupted != 0.5).flatten(1).float().mean(1)
    assert (noisy > 0.1).all()
    corrupted, _ = C.models_genesis(x, 0, paint_prob=0.0, nonlinear_prob=0.0, local_shuffle_prob=0.0)
    assert torch.equal(corrupted, x)


# ------------------------------------------------------------------------------------------
# MONAI-style coarse dropout / shuffle
# ------------------------------------------------------------------------------------------


def test_box_mask_strategies_agree() -> None:
    gen = torch.Generator().manual_seed(0)
    for spatial in [(20, 17, 9), (31, 12)]:
        batch, n_box = 3, 7
        starts = torch.stack([torch.randint(0, s - 2, (batch, n_box), generator=gen) for s in spatial], -1)
        ends = torch.minimum(starts + torch.randint(0, 9, starts.shape, generator=gen), torch.tensor(spatial))
        active = torch.rand(batch, n_box, generator=gen) < 0.7
        ref = torch.zeros(batch, *spatial, dtype=torch.bool)
        for b, k in active.nonzero().tolist():
            ref[(b, *[slice(int(s), int(e)) for s, e in zip(starts[b, k], ends[b, k])])] = True
        for method in ("paint", "matmul"):
            assert torch.equal(_boxes._box_mask(spatial, starts, ends, active, method), ref)


@pytest.mark.parametrize("dropout_holes", [True, False])
def test_coarse_dropout_fraction(dropout_holes: bool) -> None:
    spatial, holes, side = (32, 32, 32), 6, 8
    x = torch.rand(64, 1, *spatial) + 1.0
    out = C.coarse_dropout(x, 0, holes=holes, spatial_size=side, dropout_holes=dropout_holes, fill_value=0.0)
    in_holes = (out == 0.0) if dropout_holes else (out != 0.0)
    frac = in_holes.flatten(1).float().mean(1)
    one = side**3 / np.prod(spatial)
    assert (frac >= one - 1e-9).all() and (frac <= holes * one + 1e-9).all()
    # exact expectation of the union of 6 holes with uniform starts in [0, 32 - 8]
    starts = np.arange(32 - side + 1)
    p_axis = np.array([((starts <= i) & (i < starts + side)).mean() for i in range(32)])
    p_voxel = p_axis[:, None, None] * p_axis[None, :, None] * p_axis[None, None, :]
    expected = float((1 - (1 - p_voxel) ** holes).mean())
    assert abs(float(frac.mean()) - expected) < 0.1 * expected


def test_coarse_dropout_matches_monai_statistics() -> None:
    from monai.transforms import RandCoarseDropout

    spatial = (24, 24, 24)
    x = torch.rand(100, 1, *spatial) + 1.0
    ours = (C.coarse_dropout(x, 0, holes=4, spatial_size=6, fill_value=0.0) == 0).flatten(1).float().mean(1)
    monai = RandCoarseDropout(holes=4, spatial_size=6, fill_value=0.0, prob=1.0)
    monai.set_random_state(0)
    theirs = torch.tensor([float((monai(x[b]) == 0).float().mean()) for b in range(100)])
    assert abs(float(ours.mean()) - float(theirs.mean())) < 0.1 * float(theirs.mean())


def test_coarse_dropout_default_fill_in_sample_range() -> None:
    x = torch.rand(4, 2, 16, 16, 16) * torch.tensor([1.0, 10.0, 100.0, 1000.0]).view(4, 1, 1, 1, 1)
    out = C.coarse_dropout(x, 0, holes=3, spatial_size=6)
    for b in range(4):
        assert float(out[b].min()) >= float(x[b].min()) and float(out[b].max()) <= float(x[b].max())
        assert not torch.equal(out[b], x[b])


def test_coarse_shuffle_permutes_each_channel_within_holes() -> None:
    x = _unique_batch(4, 1, (16, 16, 16)).repeat(1, 2, 1, 1, 1)  # identical channels
    holes, side = 5, 4
    out = C.coarse_shuffle(x, 0, holes=holes, spatial_size=side)
    for b in range(4):
        for c in range(2):
            assert torch.equal(out[b, c].flatten().sort().values, x[b, c].flatten().sort().values)
        moved = (out[b] != x[b]).flatten(1).sum(1)
        assert (moved > 0).all() and (moved <= holes * side**3).all()
    assert not torch.equal(out[:, 0], out[:, 1]), "channels must get their own permutations"


def test_coarse_shuffle_overlapping_holes_stay_permutations() -> None:
    # many large holes in a small volume: overlaps force several sequential layers
    x = _unique_batch(3, 2, (12, 12, 12))
    out = C.coarse_shuffle(x, 1, holes=8, spatial_size=7)
    for b in range(3):
        for c in range(2):
            assert torch.equal(out[b, c].flatten().sort().values, x[b, c].flatten().sort().values)
    assert not torch.equal(out, x)


def test_coarse_dropout_large_holes_use_the_mask_path() -> None:
    x = torch.rand(4, 1, 16, 16, 16) + 1.0
    out = C.coarse_dropout(x, 0, holes=4, spatial_size=12, fill_value=(0.0, 0.5))
    changed = out != x
    assert (changed.flatten(1).float().mean(1) >= 12**3 / 16**3 - 1e-9).all()
    assert ((out[changed] >= 0.0) & (out[changed] < 0.5)).all()


def test_hash_noise_is_uniform_and_keyed_on_the_index() -> None:
    seed = torch.tensor(123)
    u = _boxes._hash_uniform(torch.arange(200_000), seed)
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    hist = torch.histc(u, 20, 0.0, 1.0) / u.numel()
    assert (hist - 0.05).abs().max() < 0.005
    assert abs(float(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1])) < 0.01
    # the same index always gets the same value (deterministic writes where boxes overlap)
    idx = torch.tensor([5, 17, 5, 99_999, 17])
    v = _boxes._hash_uniform(idx, seed)
    assert v[0] == v[2] and v[1] == v[4]
    assert not torch.equal(_boxes._hash_uniform(idx, torch.tensor(124)), v)
    bell = _boxes._hash_bell(torch.arange(200_000), seed)
    assert abs(float(bell.mean()) - 0.5) < 0.005 and 0.13 < float(bell.std()) < 0.16


def test_monai_ssl_view_corrupts_samples_within_their_range() -> None:
    x = torch.rand(8, 1, 48, 48, 48) + 2.0
    out = C.monai_ssl_view(x, 0)
    # out-painting holes of side 20-64 can, rarely, cover a small volume entirely
    assert sum(not torch.equal(out[b], x[b]) for b in range(8)) >= 7
    assert float(out.min()) >= float(x.min()) and float(out.max()) <= float(x.max())
    changed = (out != x).flatten(1).float().mean(1)
    assert (changed < 1.0).all()


# ------------------------------------------------------------------------------------------
# Swin UNETR
# ------------------------------------------------------------------------------------------


def test_swin_cutout_fraction_and_noise_range() -> None:
    x = torch.full((48, 1, 32, 32, 32), 5.0)
    out = C.swin_unetr_cutout(x, 0, paste=False)
    frac = (out != 5.0).flatten(1).float().mean(1)
    overshoot = (32 // 4) ** 3 / 32**3  # the last block may end past the target
    assert (frac <= 0.3 + overshoot + 1e-9).all()
    assert 0.05 < float(frac.mean()) < 0.2  # target ~ U(0, 0.3), union below the sum
    noise = out[out != 5.0]
    assert float(noise.min()) >= 0.0 and float(noise.max()) <= 1.0


def test_monai_ssl_views_are_independent_views_of_each_sample() -> None:
    x = torch.rand(6, 1, 48, 48, 48) * torch.arange(1.0, 7.0).view(6, 1, 1, 1, 1)  # own range per sample
    first, second = C.monai_ssl_views(x, 3, n_views=2)
    assert first.shape == second.shape == x.shape and not torch.equal(first, second)
    for view in (first, second):
        flat, ref = view.flatten(1), x.flatten(1)
        assert (flat.amin(1) >= ref.amin(1)).all() and (flat.amax(1) <= ref.amax(1)).all()  # each sample's range
    again = C.monai_ssl_views(x, 3, n_views=2)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    (single,) = C.monai_ssl_views(x, 3, n_views=1)
    assert torch.equal(single, C.monai_ssl_view(x, 3))
    with pytest.raises(ValueError, match="n_views"):
        C.monai_ssl_views(x, 3, n_views=0)


def test_swin_cutout_pastes_from_another_sample() -> None:
    x = (10.0 + torch.arange(8.0)).view(8, 1, 1, 1, 1).expand(8, 1, 24, 24, 24).contiguous()
    out = C.swin_unetr_cutout(x, 1)
    pasted = 0
    for b in range(8):
        values = out[b].unique()
        others = values[(values >= 10.0) & (values != 10.0 + b)]
        assert torch.isin(others, 10.0 + torch.arange(8.0)).all()
        pasted += others.numel() > 0
    assert pasted > 0


def _reference_paste(out, original, starts, ends, active, partner):
    """Swin UNETR's aug_rand paste written as the reference loop: sample after sample, in place."""
    out = out.clone()
    for b in range(out.shape[0]):
        p = int(partner[b])
        if p == b:
            continue
        for k in range(starts.shape[1]):
            if active[b, k]:
                box = (slice(None), *[slice(int(s), int(e)) for s, e in zip(starts[b, k], ends[b, k])])
                out[b][box] = (out[p] if p < b else original[p])[box]
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_paste_follows_the_reference_sample_order(device: str) -> None:
    """Later partners are pasted as they were before the corruption, earlier ones as finished."""
    original = (10.0 + torch.arange(5.0)).view(5, 1, 1, 1, 1).expand(5, 2, 9, 10, 11).contiguous().to(device)
    out = original + 100.0  # "round 1" marks every sample
    starts = torch.tensor([[[0, 0, 0], [4, 4, 4]], [[1, 2, 3], [0, 5, 0]], [[2, 0, 1], [5, 5, 5]],
                           [[0, 0, 0], [3, 3, 3]], [[1, 1, 1], [6, 6, 6]]])
    ends = starts + torch.tensor([[4, 5, 6], [3, 3, 3]])
    active = torch.tensor([[True, True], [True, False], [True, True], [False, True], [True, True]])
    partner = torch.tensor([3, 0, 1, 3, 2])  # later, earlier, earlier (a chain), itself, earlier
    starts, ends, active, partner = (t.to(device) for t in (starts, ends, active, partner))
    expected = _reference_paste(out, original, starts, ends, active, partner)
    result = C.paste_from_partners_(out.clone(), original, starts, ends, active, partner)
    assert torch.equal(result, expected)
    assert (result[0] == 13.0).any() and not (result[0] == 113.0).any()  # sample 3 not yet corrupted
    assert (result[2] == 13.0).any()  # through the finished samples 1 and 0: 3 -> 0 -> 1 -> 2
    assert torch.equal(result[3], out[3])  # partner itself: untouched


@pytest.mark.parametrize("device", DEVICES)
def test_swin_unetr_augment_rotations_are_exact(device: str) -> None:
    x = _unique_batch(8, 1, (12, 10, 10), device)
    views = C.swin_unetr_augment(x, 0)
    for target, labels in ((views.target1, views.rotation1), (views.target2, views.rotation2)):
        assert labels.dtype == torch.int64 and ((labels >= 0) & (labels < 4)).all()
        for b in range(8):
            assert torch.equal(target[b], torch.rot90(x[b], int(labels[b]), (-2, -1)))
    assert views.view1.shape == x.shape and not torch.equal(views.view1, views.target1)
    # same generator state -> same rotation labels as calling random_rotation90 first
    _, first = random_rotation90(x, (-2, -1), torch.Generator(device=device).manual_seed(0))
    assert torch.equal(first, views.rotation1)


# ------------------------------------------------------------------------------------------
# compiled CPU kernels (numba): the same properties, checked on the kernels directly
# ------------------------------------------------------------------------------------------


def _kernel_only(backend: str) -> None:
    if backend != "compiled":
        pytest.skip("kernel test: runs once, on the compiled backend")


def test_compiled_shuffle_keeps_each_box_multiset_and_is_reproducible(backend: str) -> None:
    _kernel_only(backend)
    x = _unique_batch(2, 2, (12, 10, 8))
    starts = torch.tensor([[[0, 0, 0], [6, 5, 4], [2, 1, 1]], [[1, 1, 1], [7, 0, 0], [0, 6, 5]]])
    sizes = torch.tensor([[[4, 4, 4], [3, 4, 4], [3, 3, 3]], [[3, 3, 3], [5, 5, 2], [2, 2, 3]]])
    seeds = torch.tensor([11, 12])
    out = K.shuffle_boxes_cpu(x, starts, sizes, seeds)
    assert torch.equal(out, K.shuffle_boxes_cpu(x, starts, sizes, seeds))
    assert not torch.equal(out, K.shuffle_boxes_cpu(x, starts, sizes, seeds + 1))
    covered = torch.zeros(2, 12, 10, 8, dtype=torch.bool)
    for b in range(2):
        for k in range(3):
            sl = tuple(slice(int(s), int(s + z)) for s, z in zip(starts[b, k], sizes[b, k]))
            covered[(b, *sl)] = True
            if b == 0 and k == 0:  # partly overwritten by the later box 2: latest box wins
                continue
            before = x[(b, slice(None), *sl)].reshape(2, -1)
            after = out[(b, slice(None), *sl)].reshape(2, -1)
            assert torch.equal(before.sort(1).values, after.sort(1).values)
            assert torch.equal(before[1][before[0].argsort()], after[1][after[0].argsort()])  # channels move together
    # the later box of sample 0 holds a permutation of its own original voxels
    sl = tuple(slice(int(s), int(s + z)) for s, z in zip(starts[0, 2], sizes[0, 2]))
    assert torch.equal(x[(0, 0, *sl)].flatten().sort().values, out[(0, 0, *sl)].flatten().sort().values)
    assert torch.equal(out.movedim(1, -1)[~covered], x.movedim(1, -1)[~covered])


@pytest.mark.parametrize("kernel", ["models_genesis", "monai"])
def test_compiled_box_permutations_are_uniform(backend: str, kernel: str) -> None:
    """A 3-voxel box, shuffled 6,000 times with different seeds: each of the 3! orders ~1/6."""
    _kernel_only(backend)
    n = 6000
    x = torch.tensor([0.0, 1.0, 2.0]).view(1, 1, 1, 1, 3).expand(n, 1, 1, 1, 3).contiguous()
    starts = torch.zeros(n, 1, 3, dtype=torch.int64)
    sizes = torch.tensor([1, 1, 3]).expand(n, 1, 3)
    seeds = torch.arange(n)
    if kernel == "models_genesis":
        out = K.shuffle_boxes_cpu(x, starts, sizes, seeds)
    else:
        out = K.channel_shuffle_boxes_cpu_(x.clone(), starts, sizes, torch.ones(n, 1, dtype=torch.bool), seeds)
    code = (out.view(n, 3) * torch.tensor([9.0, 3.0, 1.0])).sum(1).long()
    counts = torch.bincount(code, minlength=27)[code.unique()]
    assert counts.numel() == 6 and int(counts.sum()) == n
    assert (counts - n / 6).abs().max() < 5 * (n / 6 * 5 / 6) ** 0.5  # 5 sigma


def test_compiled_minmax_and_sourced_paint(backend: str) -> None:
    _kernel_only(backend)
    x = torch.randn(3, 2, 5, 6, 7)
    low, high = K.minmax_cpu(x)
    assert torch.equal(low, x.flatten(1).amin(1).double()) and torch.equal(high, x.flatten(1).amax(1).double())
    starts = torch.zeros(6, 1, 3, dtype=torch.int64)
    ends = torch.tensor([5, 6, 7]).expand(6, 1, 3)
    source = torch.tensor([0, 1, 2, 0, 1, 2])
    out = K.paint_boxes_cpu(x, starts, ends, torch.zeros(6, 1, dtype=torch.bool), torch.zeros(6, dtype=torch.int8),
                            torch.arange(6), source=source)
    assert torch.equal(out, torch.cat([x, x]))  # mode 0, no active box: each row copies its source


def test_compiled_noise_is_one_function_of_voxel_and_seed(backend: str) -> None:
    """The vectorised row hash (long runs) and the scalar hash (short runs) give a voxel one value."""
    _kernel_only(backend)
    x = torch.zeros(1, 1, 2, 3, 80)
    seeds, mode = torch.tensor([5]), torch.tensor([1])
    starts = torch.tensor([[[0, 0, 0]]])
    long_box = K.paint_boxes_cpu(x, starts, torch.tensor([[[2, 3, 80]]]), torch.tensor([[True]]), mode, seeds)
    short_box = K.paint_boxes_cpu(x, starts, torch.tensor([[[2, 3, 16]]]), torch.tensor([[True]]), mode, seeds)
    assert torch.equal(long_box[..., :16], short_box[..., :16]) and (short_box[..., 16:] == 0).all()
    outside = K.paint_boxes_cpu(x, starts + torch.tensor([0, 0, 16]), torch.tensor([[[2, 3, 80]]]),
                                torch.tensor([[True]]), torch.tensor([2]), seeds)  # out-painting: noise in [0, 16)
    assert torch.equal(outside[..., :16], long_box[..., :16]) and (outside[..., 16:] == 0).all()


def test_compiled_paint_modes(backend: str) -> None:
    _kernel_only(backend)
    x = torch.full((3, 2, 10, 12, 14), 7.0)
    x[1] = 3.0
    starts = torch.tensor([[2, 3, 4], [1, 1, 1]]).expand(3, 2, 3)
    ends = starts + torch.tensor([[4, 5, 6], [2, 2, 2]])
    active = torch.tensor([[True, False]] * 3)
    mode = torch.tensor([0, 1, 2])
    out = K.paint_boxes_cpu(x, starts, ends, active, mode, torch.arange(3), torch.full((3,), -1.0),
                            torch.full((3,), 1.0))
    box = (slice(None), slice(2, 6), slice(3, 8), slice(4, 10))
    inside = torch.zeros(10, 12, 14, dtype=torch.bool)
    inside[box[1:]] = True
    assert torch.equal(out[0], x[0])  # copy
    assert (out[1][:, inside] >= -1).all() and (out[1][:, inside] < 1).all() and (out[1][:, ~inside] == 3).all()
    assert out[1][:, inside].unique().numel() > 200  # fresh noise per voxel and channel
    assert (out[2][:, inside] == 7).all() and (out[2][:, ~inside] < 1).all()  # out-painting
    again = K.paint_boxes_cpu(x, starts, ends, active, mode, torch.arange(3), torch.full((3,), -1.0),
                              torch.full((3,), 1.0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="mode"):
        K.paint_boxes_cpu(x, starts, ends, active, torch.tensor([0, 1, 3]), torch.arange(3))


def _no_paste(batch: int, dims: int = 3) -> tuple[torch.Tensor, ...]:
    """Swin kernel arguments for "no paste round": no boxes, every sample its own partner."""
    empty = torch.zeros(batch, 0, dims, dtype=torch.int64)
    return empty, empty, torch.zeros(batch, 0, dtype=torch.bool), torch.arange(batch)


def test_compiled_swin_cutout_rotates_and_fills_each_box_min_max_scaled(backend: str) -> None:
    _kernel_only(backend)
    x = _unique_batch(3, 2, (6, 8, 8)) + 5.0  # values in (5, 6): noise in [0, 1] stands out
    source, rotation = torch.tensor([0, 1, 2, 2, 1, 0]), torch.tensor([0, 1, 2, 3, 1, 3])
    starts = torch.tensor([[[1, 2, 3]]]).expand(6, 1, 3)
    ends = torch.tensor([[[4, 6, 6]]]).expand(6, 1, 3)
    active, seeds = torch.ones(6, 1, dtype=torch.bool), torch.arange(6)
    view, target = K.swin_cutout_cpu(x, starts, ends, active, seeds, *_no_paste(6), source=source, rotation=rotation)
    inside = torch.zeros(6, 8, 8, dtype=torch.bool)
    inside[1:4, 2:6, 3:6] = True
    for b in range(6):
        assert torch.equal(target[b], torch.rot90(x[int(source[b])], int(rotation[b]), (-2, -1)))
        box = view[b][:, inside]  # both channels: one min-max over the block, as the reference
        assert float(box.min()) == 0.0 and float(box.max()) == 1.0
        assert torch.equal(view[b][:, ~inside], target[b][:, ~inside])
    again, _ = K.swin_cutout_cpu(x, starts, ends, active, seeds, *_no_paste(6), source=source, rotation=rotation)
    other, _ = K.swin_cutout_cpu(x, starts, ends, active, seeds + 1, *_no_paste(6), source=source, rotation=rotation)
    assert torch.equal(view, again) and not torch.equal(view[:, :, inside], other[:, :, inside])
    torch.set_num_threads(2)  # planes split between threads: the same result
    assert torch.equal(view, K.swin_cutout_cpu(x, starts, ends, active, seeds, *_no_paste(6), source=source,
                                               rotation=rotation)[0])
    plain, original = K.swin_cutout_cpu(x, starts[:3], ends[:3], active[:3], seeds[:3], *_no_paste(3))
    assert original is not None and torch.equal(original, x)  # no rotation: cut from x itself
    assert torch.equal(plain[:, :, ~inside], x[:, :, ~inside])


def test_compiled_swin_noise_is_bell_shaped(backend: str) -> None:
    """One 32^3 block: the reference's normal noise, min-max scaled, puts most values mid-range."""
    _kernel_only(backend)
    x = torch.zeros(1, 1, 32, 32, 32)
    starts, ends = torch.zeros(1, 1, 3, dtype=torch.int64), torch.full((1, 1, 3), 32)
    view, _ = K.swin_cutout_cpu(x, starts, ends, torch.ones(1, 1, dtype=torch.bool), torch.tensor([3]), *_no_paste(1))
    values = view.flatten()
    assert float(values.min()) == 0.0 and float(values.max()) == 1.0
    assert abs(float(values.mean()) - 0.5) < 0.03
    assert float(((values > 0.25) & (values < 0.75)).float().mean()) > 0.8  # uniform noise: 0.5
    assert values.unique().numel() > 500  # 1,021 possible sums of four bytes


def test_compiled_swin_paste_follows_the_reference_sample_order(backend: str) -> None:
    """Noise round, then each sample pastes from its partner as the reference loop sees it."""
    _kernel_only(backend)
    x = (10.0 + torch.arange(5.0)).view(5, 1, 1, 1, 1).expand(5, 2, 9, 10, 10).contiguous()
    noise_starts = torch.tensor([[[0, 0, 0]], [[2, 2, 2]], [[1, 0, 3]], [[4, 4, 4]], [[0, 5, 1]]])
    noise_ends = noise_starts + torch.tensor([3, 4, 5])
    noise_active, seeds = torch.ones(5, 1, dtype=torch.bool), torch.arange(5)
    starts = torch.tensor([[[0, 0, 0], [4, 4, 4]], [[1, 2, 3], [0, 5, 0]], [[2, 0, 1], [5, 5, 5]],
                           [[0, 0, 0], [3, 3, 3]], [[1, 1, 1], [6, 6, 6]]])
    ends = starts + torch.tensor([[4, 5, 6], [3, 3, 3]])
    active = torch.tensor([[True, True], [True, False], [True, True], [False, True], [True, True]])
    partner = torch.tensor([3, 0, 1, 3, 2])  # later, earlier, earlier (a chain), itself, earlier
    for rotation in (None, torch.tensor([1, 0, 3, 2, 1])):
        noised, original = K.swin_cutout_cpu(x, noise_starts, noise_ends, noise_active, seeds, *_no_paste(5),
                                              rotation=rotation)
        view, _ = K.swin_cutout_cpu(x, noise_starts, noise_ends, noise_active, seeds, starts, ends, active, partner,
                                    rotation=rotation)
        assert torch.equal(view, _reference_paste(noised, original, starts, ends, active, partner))
        assert (view[0] == 13.0).any()  # sample 3 as it was before its corruption
        assert torch.equal(view[3], noised[3])  # its own partner: nothing pasted


def test_compiled_swin_cutout_of_2d_slices(backend: str) -> None:
    _kernel_only(backend)
    x = _unique_batch(2, 1, (10, 10)) + 5.0
    starts, ends = torch.tensor([[[2, 3]]]).expand(2, 1, 2), torch.tensor([[[6, 9]]]).expand(2, 1, 2)
    view, target = K.swin_cutout_cpu(x, starts, ends, torch.ones(2, 1, dtype=torch.bool), torch.arange(2),
                                     *_no_paste(2, dims=2), rotation=torch.tensor([1, 2]))
    assert view.shape == x.shape and torch.equal(target[0], torch.rot90(x[0], 1, (-2, -1)))
    assert float(view[:, :, 2:6, 3:9].max()) == 1.0 and torch.equal(view[:, :, :2], target[:, :, :2])

"""Rubik's cube+ (Zhuang et al. 2019; Zhu et al. 2020): the permutation set, the puzzle's targets, learning."""

import itertools
import math

import pytest
import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.pretext import create_pretext
from monai_ssl_plugin.pretext.predictive.rubiks_cube import (_permutation_set, hamming_distances,
                                                             maximal_hamming_permutations)
from monai_ssl_plugin.transforms.views import cube_grid

torch.set_num_threads(1)


def _min_distance(perms):
    d = hamming_distances(perms)
    return int(d[~torch.eye(len(d), dtype=torch.bool)].min())


@pytest.mark.parametrize("n, k, expected", [(8, 100, 6), (8, 50, 7), (8, 8, 8), (4, 4, 4), (4, 24, 2)])
def test_permutations_maximally_separated(n, k, expected):
    perms = maximal_hamming_permutations(n, k)
    assert perms.shape == (k, n)
    assert all(sorted(p) == list(range(n)) for p in perms.tolist())  # every row is a permutation
    assert len({tuple(p) for p in perms.tolist()}) == k
    assert perms[0].tolist() == list(range(n))
    # 8 for K <= 8 (Latin square) and 7 up to K = 56 = n(n-1) are the best possible; K = 100 > 56 allows 6 at most
    assert _min_distance(perms) == expected


def test_permutations_greedy_and_deterministic():
    perms = maximal_hamming_permutations(8, 12)
    all_perms = torch.tensor(list(itertools.permutations(range(8))))
    for i in range(1, len(perms)):  # each pick maximises the smallest distance to the picks before it
        best = (all_perms[:, None, :] != perms[None, :i, :]).sum(-1).min(1).values.max()
        assert (perms[i] != perms[:i]).sum(-1).min() == best
    _permutation_set.cache_clear()
    assert torch.equal(maximal_hamming_permutations(8, 100), maximal_hamming_permutations(8, 100))
    assert torch.equal(maximal_hamming_permutations(8, 12), perms)
    assert torch.equal(maximal_hamming_permutations(8, 100)[:12], perms)  # greedy: a prefix of the larger set
    with pytest.raises(ValueError):
        maximal_hamming_permutations(4, 25)


def _cube_ids(shape):
    """An image whose sub-cube k (row-major) holds the value k + 1 (gaps are 0)."""
    image = torch.zeros(1, 1, *shape)
    dims = len(shape)
    side = [(s - 2) // 2 for s in shape]  # gap 2, no centring offset for even sizes
    for k, cell in enumerate(itertools.product((0, 1), repeat=dims)):
        sl = tuple(slice(c * (s + 2), c * (s + 2) + s) for c, s in zip(cell, side))
        image[(0, 0) + sl] = k + 1
    return image


@pytest.mark.parametrize("dims", [2, 3])
def test_puzzle_targets(dims):
    torch.manual_seed(0)
    shape = [18] * dims
    pretext = create_pretext("rubiks_cube", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=dims),
                             num_permutations=24 if dims == 2 else 100, gap=2)
    image = _cube_ids(shape).repeat(4, 1, *([1] * dims))
    puzzle = pretext.make_puzzle(image)
    m = 2 ** dims
    assert puzzle["cubes"].shape == (4, m, 1, *([8] * dims))
    perms = pretext.permutations[puzzle["order"]]  # slot i holds cube perms[b, i]
    masked = puzzle["masked"].bool()
    for b in range(4):
        for slot in range(m):
            cube = puzzle["cubes"][b, slot]
            expected = float(perms[b, slot] + 1)
            if masked[b, slot]:  # masked cubes: half of their blocks zeroed, the rest untouched
                assert (cube == 0).any() and ((cube == 0) | (cube == expected)).all()
            else:
                assert (cube == expected).all()
    # rotation flags: with unique voxel values, the slot content is the original cube turned by 180 degrees
    values = torch.arange(1, math.prod(shape) + 1, dtype=torch.float32).view(1, 1, *shape).repeat(4, 1, *([1] * dims))
    torch.manual_seed(3)
    pretext.masking = False
    puzzle = pretext.make_puzzle(values)
    original = cube_grid(values, 2, 2)
    perms = pretext.permutations[puzzle["order"]]
    for b in range(4):
        for slot in range(m):
            cube = original[b, perms[b, slot]]
            for r, plane in enumerate(pretext.rotation_planes):
                if puzzle["rotated"][b, slot, r]:
                    cube = cube.flip(plane)
            assert torch.equal(puzzle["cubes"][b, slot], cube)
    assert puzzle["rotated"].shape == (4, m, 2 if dims == 3 else 1)


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_and_learning(dims, train_losses):
    torch.manual_seed(0)
    pretext = create_pretext("rubiks_cube", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=dims),
                             num_permutations=10, gap=2, head_hidden=64)
    image = torch.randn(2, 1, *([18] * dims))
    out = pretext({"image": image})
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    assert set(out) == {"loss", "order", "rotation", "masking", "order_accuracy"}
    assert pretext.last_embeddings.shape == (2 * 2**dims, pretext.backbone.embed_dim)
    assert torch.allclose(out["loss"].detach(), out["order"] + out["rotation"] + out["masking"])
    losses = train_losses(pretext, image)
    assert losses[-1] < losses[0], losses
    settings = pretext.settings()
    assert settings["num_permutations"] == 10 and settings["gap"] == [2] * dims and pretext.trains_decoder is False


def test_other_backbone_and_errors():
    torch.manual_seed(0)
    # a ViT sees each sub-cube: its img_size is the sub-cube side ((34 - 2) // 2 = 16)
    vit = create_backbone("monai_vit_small", spatial_dims=2, img_size=16, patch_size=8, num_layers=4)
    out = create_pretext("rubiks_cube", backbone=vit, num_permutations=24, gap=2)({"image": torch.randn(2, 1, 34, 34)})
    assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="only 24 permutations"):
        create_pretext("rubiks_cube", backbone=create_backbone("nnunet_plain_tiny", spatial_dims=2),
                       num_permutations=100)

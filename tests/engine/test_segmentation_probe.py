"""The segmentation probe's pieces: point-sampled hypercolumns equal the upsampled ones, the stage-wise
head equals a linear map of the full hypercolumn, and informative features give a perfect Dice."""

import math

import torch
import torch.nn.functional as F

from monai_ssl_plugin.engine.probes import (StageHead, balanced_points, dice_scores, hypercolumn_at, mean_dice,
                                            segmentation_probe)


def _features(gen):
    return [torch.randn(1, 3, 8, 8, 8, generator=gen), torch.randn(1, 5, 4, 4, 4, generator=gen),
            torch.randn(1, 7, 2, 2, 2, generator=gen)]


def _full_hypercolumn(features, size):
    return torch.cat([F.interpolate(f, size=size, mode="trilinear", align_corners=False) for f in features], 1)[0]


def test_hypercolumn_at_points_equals_the_upsampled_hypercolumn():
    gen = torch.Generator().manual_seed(0)
    feats = _features(gen)
    full = _full_hypercolumn(feats, [8, 8, 8])  # (15, 8, 8, 8)
    points = torch.tensor([[0, 0, 0], [7, 7, 7], [3, 5, 1], [6, 0, 4]])
    sampled = hypercolumn_at(feats, [8, 8, 8], points)
    assert torch.allclose(sampled.float(), full[:, points[:, 0], points[:, 1], points[:, 2]].T, atol=1e-5)


def test_stage_head_equals_a_linear_map_of_the_standardised_hypercolumn():
    gen = torch.Generator().manual_seed(1)
    feats = _features(gen)
    mean, std = torch.randn(1, 15, generator=gen).double(), torch.rand(1, 15, generator=gen).double() + 0.5
    w, b = torch.randn(15, 4, generator=gen).double(), torch.randn(4, generator=gen).double()
    head = StageHead([3, 5, 7], mean, std, w, b)
    full = _full_hypercolumn(feats, [8, 8, 8]).reshape(15, -1).T.double()  # (voxels, 15)
    expected = (((full - mean) / std) @ w + b).T.reshape(4, 8, 8, 8)
    assert torch.allclose(head(feats, [8, 8, 8])[0].double(), expected, atol=1e-4)


def test_balanced_points_take_every_class_evenly_without_random_draws():
    target = torch.zeros(8, 8, 8, dtype=torch.long)
    target[2:4, 2:4, 2:4] = 1
    points = balanced_points(target, 5)
    labels = target[tuple(points.T)]
    assert (labels == 0).sum() == 5 and (labels == 1).sum() == 5
    assert torch.equal(points, balanced_points(target, 5))


def test_probe_is_perfect_on_informative_features_and_dice_is_monai_s():
    target = torch.zeros(8, 8, 8, dtype=torch.long)
    target[1:5, 2:7, 3:6] = 1
    target[5:8, 0:3, 0:4] = 2
    informative = [F.one_hot(target, 3).permute(3, 0, 1, 2)[None].float()]  # one stage: the label itself
    out = segmentation_probe([(informative, target)], [(informative, target)], n_classes=3, per_class=50)
    assert out["dice"] > 0.99 and all(d > 0.99 for d in out["dice_per_class"])
    half = target.clone()
    half[1:3] = 0  # half of class 1 missed
    assert abs(dice_scores(half, target, 3)[0] - 2 * 30 / (30 + 60)) < 1e-6
    assert math.isnan(mean_dice([[math.nan, math.nan]])) and mean_dice([[0.5, math.nan], [1.0, 0.0]]) == 0.5

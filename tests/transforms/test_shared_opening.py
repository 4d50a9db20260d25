"""The shared opening: which samples first, then the boxes, in one stream order whatever the caller picks."""

from __future__ import annotations

import torch

from monai_ssl_plugin.transforms import coarse_dropout, in_painting
from monai_ssl_plugin.transforms._common import open_boxes
from monai_ssl_plugin.transforms._random import integers

def _draw(spatial: tuple[int, ...], batch: int, gen: torch.Generator | None, dev: torch.device):
    starts = integers(0, 3, (batch, 4, len(spatial)), gen, dev)
    return starts, torch.ones_like(starts), torch.ones(batch, 4, dtype=torch.bool, device=dev)


def test_open_boxes_draws_the_same_boxes_whether_prob_or_apply_chooses_the_samples() -> None:
    x = torch.zeros(3, 1, 8, 8, 8)
    drawn = open_boxes(x, 5, 0.5, None, _draw)
    chosen = open_boxes(x, 5, 0.5, torch.tensor([True, False, True]), _draw)
    assert torch.equal(drawn.starts, chosen.starts)  # the prob draw advanced the stream either way
    assert chosen.selected.tolist() == [True, False, True]
    assert chosen.active.all()  # drawn for every sample ...
    assert chosen.active_selected.tolist() == [[True] * 4, [False] * 4, [True] * 4]  # ... used for the chosen


def test_a_sample_left_out_by_apply_is_untouched_and_the_others_match_the_full_draw() -> None:
    x = torch.rand(3, 2, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    for corrupt in (lambda a: coarse_dropout(x, 7, holes=3, spatial_size=4, apply=a),
                    lambda a: in_painting(x, 7, apply=a)):
        every = corrupt(torch.tensor([True, True, True]))
        some = corrupt(torch.tensor([True, False, True]))
        assert torch.equal(some[1], x[1])
        assert not torch.equal(every[1], x[1])
        assert torch.equal(some[[0, 2]], every[[0, 2]])

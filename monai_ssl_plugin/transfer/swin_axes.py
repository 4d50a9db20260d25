"""Exact axis transposition of a Swin transformer (MONAI ``SwinTransformer`` / ``SwinUNETR.swinViT``).

Three parts of a Swin encoder depend on the axis order besides its convolution kernels:

- the **relative-position bias tables** ``(prod(2w_i - 1), heads)``: MONAI indexes them with the
  relative offset of two tokens flattened in C order, so the table is a ``(2w-1, 2w-1, 2w-1)`` grid
  per head whose axes are the spatial axes; the transposed table is that grid with its axes permuted;
- **patch merging** concatenates the 2x2x2 neighbours of each cell in a fixed offset order before a
  LayerNorm and a linear reduction, so the ``8C`` channels are 8 blocks of ``C``, one per offset; the
  transposed network reads the block whose offset is the permuted one;
- the window and shift sizes, which must be equal along every axis (MONAI's default, 7) for the
  transposed network to use the same windows. Non-cubic windows are refused.

With these, the transposed network on the transposed volume computes the transposed features
wherever every window is full (each side at each stage at least the window size, or the volume padded
to it): MONAI slices the index table of a full window for windows that a small input truncates, and
that slice is not symmetric under transposition.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from monai_ssl_plugin.errors import PluginError

SWIN_FAMILIES = ("monai.SwinUNETR", "monai.SwinTransformer")
_TABLE = "relative_position_bias_table"
_FIX = ("Pretrain on data read the target's way (`monai-ssl pretrain ... --read_like TARGET_BUNDLE`, axis order "
        "'monai'), so no transposition is needed.")


def merge_offsets(mode: str, spatial_dims: int) -> list[tuple[int, ...]]:
    """The neighbour offset of each ``C``-channel block that MONAI's patch merging concatenates."""
    if spatial_dims == 2:  # both modes: x[:, j::2, i::2] for i, j in product(range(2), range(2))
        return [(j, i) for i, j in itertools.product(range(2), range(2))]
    if mode == "mergingv2":
        return list(itertools.product(range(2), range(2), range(2)))
    if mode == "merging":
        return [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)]
    raise PluginError(f"Swin patch merging {mode!r} has no known neighbour order, so it cannot be transposed exactly.",
                      _FIX)


def merge_block_order(mode: str, perm: Sequence[int], spatial_dims: int) -> list[int]:
    """For each block of the transposed network, the source block it takes (offset o'[k] = o[perm[k]])."""
    offsets = merge_offsets(mode, spatial_dims)
    index = {o: i for i, o in enumerate(offsets)}
    order = []
    for target_offset in offsets:
        source = [0] * spatial_dims
        for k, p in enumerate(perm):
            source[p] = target_offset[k]
        order.append(index[tuple(source)])
    return order


def _window(table: torch.Tensor, key: str, spatial_dims: int) -> int:
    side = round(table.shape[0] ** (1.0 / spatial_dims))
    if side ** spatial_dims != table.shape[0]:
        raise PluginError(f"{key} {tuple(table.shape)} is not the table of a window equal along every axis, so the "
                          "transposed network would use different windows.", _FIX)
    return side


def _permute_table(table: torch.Tensor, perm: Sequence[int], key: str, spatial_dims: int) -> torch.Tensor:
    side = _window(table, key, spatial_dims)
    heads = table.shape[1]
    grid = table.reshape(*([side] * spatial_dims), heads).permute(*perm, spatial_dims)
    return grid.reshape(-1, heads).contiguous()


def _permute_blocks(value: torch.Tensor, order: Sequence[int], dim: int) -> torch.Tensor:
    blocks = value.chunk(len(order), dim=dim)
    return torch.cat([blocks[i] for i in order], dim=dim).contiguous()


def permute_swin(state: Mapping[str, torch.Tensor], perm: Sequence[int], *, spatial_dims: int = 3,
                 record_kwargs: Mapping[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The Swin-specific tensors of ``state`` transposed by ``perm`` (tables, patch merging); others unchanged.

    Convolution kernels are left to :func:`~monai_ssl_plugin.transfer.axes.permute_axes`. The merging
    mode is the record's ``downsample`` (MONAI's default ``"merging"``). Returns (new state, changed keys).
    """
    mode = str((record_kwargs or {}).get("downsample", "merging"))
    window = (record_kwargs or {}).get("window_size")
    if isinstance(window, (list, tuple)) and len(set(window)) > 1:
        raise PluginError(f"The Swin window {list(window)} is not equal along every axis, so the transposed network "
                          "would use different windows.", _FIX)
    order = merge_block_order(mode, perm, spatial_dims)
    out, changed = dict(state), []
    for key, value in state.items():
        if key.endswith(_TABLE) and value.ndim == 2:
            out[key] = _permute_table(value, perm, key, spatial_dims)
        elif ".downsample.reduction.weight" in key and value.ndim == 2:
            out[key] = _permute_blocks(value, order, dim=1)
        elif ".downsample.norm." in key and value.ndim == 1:
            out[key] = _permute_blocks(value, order, dim=0)
        else:
            continue
        changed.append(key)
    return out, changed

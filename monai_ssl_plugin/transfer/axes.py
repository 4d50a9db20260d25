"""Axis order of pretrained kernels: detect what a mismatch would break, and permute where it is exact.

nnU-Net feeds its networks (z, y, x) volumes (SimpleITK order), MONAI's ``LoadImage`` (x, y, z). A
kernel learned on one order and applied to the other runs along the wrong axes. For a network made of
convolutions, pointwise layers and global pooling, transposing the spatial axes of every kernel is an
exact fix: the permuted network on the permuted volume computes the permuted output, provided the target
architecture is the axis-permuted source (kernel sizes, strides, image size). Kernel shapes are checked
here; strides live in the architecture, not in the weights.

ViT-style encoders (``ViT``, ``UNETR.vit``, ``ViTAutoEnc``, ``MaskedAutoEncoderViT``) are also exact:
the patch-embedding convolution is transposed and the position embeddings are re-ordered over the patch
grid (needs the grid: ``img_size`` / ``patch_size`` from the record). Swin transformers are exact too:
besides the kernels, their relative-position tables and patch-merging channel blocks are re-ordered
(:mod:`~monai_ssl_plugin.transfer.swin_axes`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.swin_axes import SWIN_FAMILIES, permute_swin

AXES = {"nnunet": "z, y, x", "monai": "x, y, z"}
CONV_FAMILIES = ("monai.ResNet", "monai.ResNetFeatures", "monai.DenseNet", "monai.SegResNet", "monai.UNet",
                 "monai.DynUNet", "monai.BasicUNet", "monai.FlexibleUNet", "nnunet.")
VIT_FAMILIES = ("monai.ViT", "monai.ViTAutoEnc", "monai.MaskedAutoEncoderViT", "monai.UNETR")


def axis_permutation(source_order: str, target_order: str, spatial_dims: int = 3) -> tuple[int, ...]:
    """Target spatial axis i comes from source spatial axis ``perm[i]``; nnunet <-> monai reverses the axes."""
    if source_order == target_order:
        return tuple(range(spatial_dims))
    if {source_order, target_order} == {"nnunet", "monai"}:
        return tuple(reversed(range(spatial_dims)))
    raise PluginError(f"Unknown axis orders {source_order!r} -> {target_order!r}.", "Use 'nnunet' or 'monai'.")


def anisotropic_kernels(state: Mapping[str, torch.Tensor], spatial_dims: int = 3) -> list[tuple[str, tuple[int, ...]]]:
    """Convolution kernels whose spatial extent differs between axes (e.g. nnU-Net's 1x3x3)."""
    return [(k, tuple(v.shape[2:])) for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.ndim == spatial_dims + 2 and len(set(v.shape[2:])) > 1]


def _grid(record_kwargs: Mapping[str, Any] | None, family: str, spatial_dims: int) -> tuple[int, ...] | None:
    kw = record_kwargs or {}
    img = kw.get("img_size")
    if img is None:
        return None
    img = [int(img)] * spatial_dims if isinstance(img, (int, float)) else [int(i) for i in img]
    patch = kw.get("patch_size", 16 if family == "monai.UNETR" else None)
    if patch is None:
        return None
    patch = [int(patch)] * spatial_dims if isinstance(patch, (int, float)) else [int(p) for p in patch]
    return tuple(i // p for i, p in zip(img, patch))


def permutable(family: str) -> bool:
    return family.startswith(CONV_FAMILIES) or family in VIT_FAMILIES or family in SWIN_FAMILIES


def per_axis_arguments(record_kwargs: Mapping[str, Any] | None, spatial_dims: int = 3) -> list[tuple[str, list]]:
    """Constructor arguments given per axis with different values (strides live there, not in the weights)."""
    found = []
    for name, value in (record_kwargs or {}).items():
        if (isinstance(value, (list, tuple)) and len(value) == spatial_dims
                and all(isinstance(v, (int, float)) for v in value) and list(value) != list(reversed(value))):
            found.append((name, list(value)))
    return found


def transpose_state(state: Mapping[str, torch.Tensor], family: str, perm: Sequence[int], *, spatial_dims: int = 3,
                    record_kwargs: Mapping[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Every axis-dependent tensor of a ``family`` state transposed by ``perm`` (refused where not exact)."""
    if not permutable(family):
        raise PluginError(f"A {family} backbone has no known exact axis transposition.",
                          "Pretrain on data read the target's way (`monai-ssl pretrain ... --read_like TARGET_BUNDLE`).")
    swin_changed: list[str] = []
    if family in SWIN_FAMILIES:
        state, swin_changed = permute_swin(state, perm, spatial_dims=spatial_dims, record_kwargs=record_kwargs)
    new, changed = permute_axes(state, perm, spatial_dims=spatial_dims,
                                grid=_grid(record_kwargs, family, spatial_dims))
    return new, changed + swin_changed


def permute_axes(state: Mapping[str, torch.Tensor], perm: Sequence[int], *, spatial_dims: int = 3,
                 grid: Sequence[int] | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Transpose the spatial axes of every convolution kernel (and position-embedding grid) by ``perm``.

    ``perm``: target spatial axis i takes source axis ``perm[i]`` (``axis_permutation`` gives it).
    Kernels are tensors with ``spatial_dims + 2`` dimensions (conv: out, in, *k; transposed conv:
    in, out, *k). Position embeddings ``(1, N, D)`` are re-ordered over ``grid`` (in source order); when a
    position embedding is present and no grid is known this refuses. Returns (new state, changed keys).
    """
    perm = tuple(int(p) for p in perm)
    if sorted(perm) != list(range(spatial_dims)):
        raise PluginError(f"{perm} is not a permutation of {spatial_dims} axes.", "Use axis_permutation().")
    out, changed = {}, []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
            continue
        if value.ndim == spatial_dims + 2 and perm != tuple(range(spatial_dims)):
            out[key] = value.permute(0, 1, *[2 + p for p in perm]).contiguous()
            changed.append(key)
        elif key.endswith("position_embeddings") and value.ndim == 3 and perm != tuple(range(spatial_dims)):
            if grid is None or int(torch.tensor(grid).prod()) != value.shape[1]:
                raise PluginError(f"Cannot re-order the position embeddings {key} {tuple(value.shape)}: the patch grid "
                                  f"{tuple(grid) if grid else 'is unknown'}.",
                                  "Record img_size and patch_size in backbone_kwargs, or pretrain on data in the "
                                  "target's axis order.")
            b, n, d = value.shape
            g = value.reshape(b, *grid, d).permute(0, *[1 + p for p in perm], spatial_dims + 1)
            out[key] = g.reshape(b, n, d).contiguous()
            changed.append(key)
        else:
            out[key] = value
    return out, changed


def check_axis_order(state: Mapping[str, torch.Tensor], family: str, source_order: str | None, target_order: str | None,
                     mode: str, *, spatial_dims: int = 3, record_kwargs: Mapping[str, Any] | None = None,
                     origin: str = "checkpoint", log=print) -> dict[str, torch.Tensor]:
    """Compare the source's axis order with the target's; refuse, permute or pass through (``mode``).

    ``mode``: ``"refuse"``, ``"permute"`` (exact transposition, refused where not exact) or
    ``"ignore"`` (load as is; refused when any kernel is anisotropic, because that is certainly wrong).
    """
    if mode not in ("refuse", "permute", "ignore"):
        raise PluginError(f"Unknown on_axis_mismatch={mode!r}.", "Use 'refuse', 'permute' or 'ignore'.")
    if source_order is None or target_order is None or target_order == "any":
        if source_order is None and log is not None:
            log("[monai-ssl] WARNING: the source does not say its axis order; assuming it matches the target's.")
        return dict(state)
    if source_order == target_order:
        return dict(state)
    aniso = anisotropic_kernels(state, spatial_dims)
    src_axes, dst_axes = AXES.get(source_order, source_order), AXES.get(target_order, target_order)
    if mode == "permute":
        new, changed = transpose_state(state, family, axis_permutation(source_order, target_order, spatial_dims),
                                       spatial_dims=spatial_dims, record_kwargs=record_kwargs)
        if log is not None:
            log(f"[monai-ssl] transposed {len(changed)} tensors from ({src_axes}) to ({dst_axes}) order (exact for "
                "an axis-permuted architecture; kernel shapes are checked against the target)")
            for name, value in per_axis_arguments(record_kwargs, spatial_dims):
                log(f"[monai-ssl] note: the pretrained {name} {value} is per axis; the transposed network is exact "
                    f"with {list(reversed(value))} in ({dst_axes}) order")
        return new
    if aniso:
        key, shape = aniso[0]
        raise PluginError(f"{origin} was pretrained on ({src_axes}) volumes but this pipeline feeds ({dst_axes}); "
                          f"anisotropic kernels such as {key} {'x'.join(map(str, shape))} would run along the wrong axes.",
                          "Pass on_axis_mismatch='permute' to transpose every kernel exactly (build the target with "
                          "the axis-reversed kernel sizes/strides), or pretrain on data loaded the target's way.")
    if mode == "ignore":
        if log is not None:
            log(f"[monai-ssl] WARNING: loading ({src_axes})-ordered weights into a ({dst_axes}) pipeline as is "
                "(all kernels isotropic; learned orientations are transposed)")
        return dict(state)
    raise PluginError(f"{origin} was pretrained on ({src_axes}) volumes but this pipeline feeds ({dst_axes}): every "
                      "learned filter would see transposed anatomy.",
                      "Pass on_axis_mismatch='permute' (exact transposition of the kernels) or 'ignore', or pretrain "
                      "on data loaded the target's way.")


# ---------------------------------------------------------------------------------------------
# Records and nnU-Net checkpoints: monai (x, y, z) -> nnunet (z, y, x), exact for nnU-Net's CNNs
# ---------------------------------------------------------------------------------------------
_PER_AXIS_KWARGS = ("kernel_sizes", "strides")


def _reverse_per_axis(value: Any, dims: int) -> Any:
    """Reverse per-axis lists (a stage's [kx, ky, kz] -> [kz, ky, kx]); scalars stay."""
    if isinstance(value, (list, tuple)) and len(value) == dims and all(isinstance(v, (int, float)) for v in value):
        return list(reversed(value))
    return value


def reverse_arch_axes(arch_kwargs: Mapping[str, Any], dims: int) -> dict[str, Any]:
    """nnU-Net ``arch_kwargs`` with every per-stage kernel size and stride given in reversed axis order."""
    out = copy.deepcopy(dict(arch_kwargs))
    for name in _PER_AXIS_KWARGS:
        if name in out and isinstance(out[name], (list, tuple)):
            out[name] = [_reverse_per_axis(v, dims) for v in out[name]]
    return out


def record_to_nnunet_order(record: Mapping[str, Any]) -> dict[str, Any]:
    """A ``monai``-ordered record dict rewritten for (z, y, x) data: architecture, spacing, patch reversed.

    Refuses what cannot be made exact: only nnU-Net CNN U-Nets (every spatial parameter is a
    convolution kernel, every per-axis hyper-parameter is in ``kernel_sizes`` / ``strides``).
    """
    rec = copy.deepcopy(dict(record))
    if rec.get("axis_order") == "nnunet":
        return rec
    family = str(rec.get("backbone_family", ""))
    if not family.startswith("nnunet."):
        raise PluginError(f"A {family or 'non-nnU-Net'} backbone pretrained on (x, y, z) volumes cannot be made exact "
                          "for nnU-Net's (z, y, x) volumes here.",
                          "Pretrain an nnU-Net backbone, or pretrain on nnU-Net raw/preprocessed data (axis order "
                          "'nnunet').")
    dims = int(rec.get("spatial_dims", 3))
    kwargs = dict(rec.get("backbone_kwargs") or {})
    arch = kwargs.get("arch_kwargs")
    if not arch or not all(k in arch for k in _PER_AXIS_KWARGS):
        raise PluginError("The record does not give the kernel sizes and strides, so the (x, y, z) -> (z, y, x) "
                          "transposition cannot be checked to be exact.",
                          "Export again from the monai-ssl pretraining checkpoint (its record has the architecture).")
    kwargs["arch_kwargs"] = reverse_arch_axes(arch, dims)
    rec["backbone_kwargs"] = kwargs
    for name in ("spacing", "patch_size"):
        if rec.get(name) is not None:
            rec[name] = list(reversed(rec[name]))
    rec["axis_order"] = "nnunet"
    data = dict(rec.get("data") or {})
    data["axis_order_converted_from"] = "monai"
    rec["data"] = data
    return rec


def state_to_nnunet_order(state: Mapping[str, torch.Tensor], spatial_dims: int = 3
                          ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Every convolution kernel's spatial axes reversed ((x, y, z) -> (z, y, x)); other tensors unchanged.

    Uses the plugin's one axis permutation (:func:`permute_axes`). Returns (new state, transposed keys).
    """
    return permute_axes(state, axis_permutation("monai", "nnunet", spatial_dims), spatial_dims=spatial_dims)

"""What every joint-embedding pretext (contrastive and non-contrastive) shares: views made on the
training device from ``batch["image"]``, a light intensity augmentation, view sizes that fit the
backbone, a batch-size guard, the frozen copy an EMA teacher starts from, and the running
standardiser that goes in front of the heads.

The data pipeline only delivers patches ``(B, C, *spatial)``, the same for every pretext. Crops come from
:mod:`monai_ssl_plugin.transforms.views` (``overlapping_crop_pair``, ``multi_crop``, the VoCo
grid), flips from :func:`monai_ssl_plugin.transforms.models_genesis.random_flip`; the intensity
jitter below is the only new op. All of them act on the whole batch as tensor operations, with
torch's global RNG on the data's device (the checkpoint handler saves and restores it, so a resumed
run draws the same views).

Heads: every projector / predictor here uses ``LayerNorm`` (``pretext.heads``, the default), so the
joint-embedding pretexts run at the 3D batch sizes people can afford (1-4). ``BatchNorm1d`` as in
the 2D papers fails at batch 1 in training mode and is noise at 2. What the 2D recipes' batch norm
also did -- remove the component shared by every embedding -- is done by a
:class:`RunningStandardiser` in front of the head, with statistics from past steps. VoCo alone keeps
its published ``BatchNorm1d(affine=False, track_running_stats=False)``: it normalises over the
B x 20 crops of a step, which are >= 20 rows even at batch size 1.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monai_ssl_plugin.distributed import world_size
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext.heads import ProjectionHead
from monai_ssl_plugin.transforms.models_genesis import random_flip
from monai_ssl_plugin.transforms.views import overlapping_crop_pair

__all__ = ["RunningStandardiser", "ViewsMixin", "fit_view_size", "light_intensity_augment", "momentum_copy",
           "standardised"]


def light_intensity_augment(
    x: Tensor,
    *,
    prob: float = 0.5,
    brightness: tuple[float, float] = (0.75, 1.25),
    contrast: tuple[float, float] = (0.75, 1.25),
    noise: tuple[float, float] = (0.0, 0.1),
    flip: bool = True,
) -> Tensor:
    """Per sample and channel, each with probability ``prob``: multiplicative brightness, contrast
    around the mean, additive Gaussian noise; then random flips. One batched op each.

    The ranges are nnU-Net's intensity augmentation (Isensee et al., Nature Methods 2021:
    brightness and contrast factors in [0.75, 1.25]); the noise std is a share of each sample's own
    std, so the jitter is equally light on z-scored MRI and on CT scaled to [0, 1]. Flips follow
    the Models Genesis flip (:func:`random_flip`, up to 3 flips while ``random() < 0.4``); they
    change where anatomy lies, never intensities, and are safe for every modality.

    Args:
        x: (B, C, *spatial) floating point; not modified.
        prob: probability of each of the three intensity ops per (sample, channel).
        brightness, contrast: factor ranges.
        noise: range of the noise std as a fraction of the (sample, channel) std.
        flip: apply the random flips.

    Returns:
        (B, C, *spatial) augmented copy.
    """
    if x.dim() not in (4, 5):
        raise ValueError(f"expected (B, C, *spatial) with 2 or 3 spatial dims, got {tuple(x.shape)}")
    shape = (*x.shape[:2], *([1] * (x.dim() - 2)))
    dims = tuple(range(2, x.dim()))
    mean, std = x.mean(dims, keepdim=True), x.std(dims, keepdim=True, correction=0)

    def factor(lo: float, hi: float) -> Tensor:
        f = torch.empty(shape, device=x.device, dtype=x.dtype).uniform_(lo, hi)
        return torch.where(torch.rand(shape, device=x.device) < prob, f, torch.ones_like(f))

    b, c = factor(*brightness), factor(*contrast)
    sigma = torch.empty(shape, device=x.device, dtype=x.dtype).uniform_(*noise) * std
    sigma = sigma * (torch.rand(shape, device=x.device) < prob)
    # brightness scales the sample; contrast stretches it around its (scaled) mean
    out = (x - mean) * (b * c) + mean * b + sigma * torch.randn_like(x)
    return random_flip(out)[0] if flip else out


def fit_view_size(backbone: nn.Module, size: Sequence[int]) -> tuple[int, ...]:
    """The view size closest to ``size`` (from below) that ``backbone.embed`` accepts.

    ViT / UNETR take exactly their ``img_size`` (position embeddings are learnt for one grid), so
    their views are always that size (crops of other sizes are resized to it). SwinUNETR needs
    multiples of 32; nnU-Net U-Nets and SegResNet keep views at multiples of their total stride so
    the stages stay aligned; MONAI ResNets take any size.
    """
    size = tuple(int(s) for s in size)
    grid, patch = getattr(backbone, "grid", None), getattr(backbone, "patch", None)
    if grid is not None and patch is not None:
        return tuple(int(g) * int(p) for g, p in zip(grid, patch))
    div = backbone.divisor()
    return tuple(max(d, s // d * d) for s, d in zip(size, div))


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy: the starting point of an EMA teacher / momentum encoder.

    Its parameters never receive gradients; :func:`monai_ssl_plugin.pretext.ema.ema_update` moves
    them after each optimiser step. It is a registered sub-module, so the checkpoint keeps it.
    """
    teacher = copy.deepcopy(module)
    teacher.requires_grad_(False)
    return teacher


class RunningStandardiser(nn.Module):
    """Standardise embeddings with running (EMA) statistics: the batch-size-free stand-in for the
    ``BatchNorm1d`` at the input of the 2D recipes' projectors.

    Why: nnU-Net's deepest stage ends with InstanceNorm + LeakyReLU, so every channel of the map is
    standardised over space and its average -- what ``embed`` returns -- is nearly the same number
    for every input (measured at initialisation: cosine 0.9997 between the embeddings of different
    synthetic volumes, ``nnunet_plain_tiny`` and ``nnunet_plain_small`` alike). A per-sample
    ``LayerNorm`` head cannot remove that shared vector, so the views of different volumes look
    identical to the loss and SimCLR sits at its saddle (loss log(2B - 1)). The 2D recipes escape
    it with batch statistics in the projector; here a running mean and variance of the embeddings,
    EMA over steps like DINO's centre, take their place:

    ``y = (x - mean) / sqrt(var + eps)``, statistics per dimension, no gradient through them.
    In training the statistics of the current rows update the EMA *after* being used (the first
    call initialises them from its own rows), so a sample's output depends on past steps only and
    batch size 1 works; in eval the stored statistics are used. Buffers: in ``state_dict``, copied
    into EMA teachers by ``ema_update``.

    Args:
        dim: D.
        momentum: EMA momentum of the statistics (0.9, as DINO's centre).
        eps: added to the variance.

    Shapes: (..., D) -> (..., D).
    """

    mean: Tensor
    var: Tensor
    initialised: Tensor

    def __init__(self, dim: int, momentum: float = 0.9, eps: float = 1e-6) -> None:
        super().__init__()
        self.momentum, self.eps = float(momentum), float(eps)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _update(self, x: Tensor) -> None:
        flat = x.detach().float().reshape(-1, x.shape[-1])
        mean = flat.mean(0)
        if not bool(self.initialised):
            self.mean.copy_(mean)
            if flat.shape[0] > 1:  # a single first row leaves the variance at 1
                self.var.copy_(flat.var(0, correction=0))
            self.initialised.fill_(True)
            return
        # squared deviation from the running mean: defined for a single row as well
        var = (flat - self.mean).pow(2).mean(0)
        self.mean.lerp_(mean, 1.0 - self.momentum)
        self.var.lerp_(var, 1.0 - self.momentum)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            first = not bool(self.initialised)
            if first:
                self._update(x)
            mean, var = self.mean.clone(), self.var.clone()
            if not first:
                self._update(x)
        else:
            mean, var = self.mean, self.var
        return (x - mean.to(x.dtype)) / torch.sqrt(var + self.eps).to(x.dtype)


def standardised(head: nn.Module, dim: int, enabled: bool = True) -> nn.Module:
    """``head`` preceded by a :class:`RunningStandardiser` of its ``dim`` inputs (when ``enabled``)."""
    return nn.Sequential(RunningStandardiser(dim), head) if enabled else head


def _sizes(value: int | Sequence[int] | None, n: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    vals = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(vals) != n:
        raise PluginError(f"view size {list(vals)} has {len(vals)} axes but the images have {n}.",
                          f"Give {n} sizes or one int.")
    return vals


class ViewsMixin:
    """Two augmented views per volume, made from ``batch["image"]`` on its device.

    A pretext calls :meth:`_init_views` in ``__init__`` (after ``nn.Module.__init__`` and after
    setting ``self.backbone``), then :meth:`two_views` in ``forward``.

    View settings:
        view_size: crop side per axis; ``None`` = 3/4 of the patch (48^3 crops of a 64^3 patch;
            nnssl takes 64^3 crops of 192x192x64). Rounded down to what the backbone accepts
            (:func:`fit_view_size`).
        min_overlap: the two crops share at least this fraction of their volume (0.5, nnssl).
        augment: apply :func:`light_intensity_augment` to each view independently.
    """

    backbone: nn.Module
    view_size: int | tuple[int, ...] | None
    min_overlap: float
    augment: bool

    def _init_views(self, view_size: int | Sequence[int] | None = None, min_overlap: float = 0.5,
                    augment: bool = True) -> None:
        self.view_size = None if view_size is None else (
            int(view_size) if isinstance(view_size, int) else tuple(int(v) for v in view_size))
        if not 0.0 <= float(min_overlap) <= 1.0:
            raise ValueError(f"min_overlap must be in [0, 1], got {min_overlap}")
        self.min_overlap = float(min_overlap)
        self.augment = bool(augment)
        self.last_embeddings: Tensor | None = None

    def view_settings(self) -> dict[str, Any]:
        size = list(self.view_size) if isinstance(self.view_size, tuple) else self.view_size
        return {"view_size": size, "min_overlap": self.min_overlap, "augment": self.augment}

    # -- sizes -------------------------------------------------------------------------------
    def _crop_size(self, spatial: Sequence[int], requested: int | Sequence[int] | None,
                   default_fraction: float = 0.75) -> tuple[int, ...]:
        want = _sizes(requested, len(spatial))
        if want is None:
            want = tuple(max(1, int(math.floor(default_fraction * s))) for s in spatial)
        return fit_view_size(self.backbone, want)

    def _check_image(self, image: Tensor) -> None:
        dims = getattr(self.backbone, "spatial_dims", image.dim() - 2)
        if image.dim() != dims + 2:
            raise PluginError(f"batch['image'] has shape {tuple(image.shape)} but the backbone is {dims}D "
                              f"(expected (B, C, {', '.join('S' * dims)})).",
                              f"Feed {dims}D patches or build the backbone with spatial_dims={image.dim() - 2}.")

    def _require_batch(self, image: Tensor, minimum: int, why: str, fix: str) -> None:
        """Raise a one-line error when the global batch (over DDP processes) is below ``minimum``."""
        total = image.shape[0] * world_size()
        if total < minimum:
            raise PluginError(f"{type(self).__name__} needs at least {minimum} volumes per (global) batch, "
                              f"got {total}: {why}.", fix)

    # -- views -------------------------------------------------------------------------------
    def augment_views(self, x: Tensor) -> Tensor:
        return light_intensity_augment(x) if self.augment else x

    def two_views(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Two crops per volume overlapping >= ``min_overlap``, each augmented: two (B, C, *view)."""
        self._check_image(image)
        spatial = image.shape[2:]
        size = self._crop_size(spatial, self.view_size)
        if any(c > s for c, s in zip(size, spatial)):
            raise PluginError(f"The views ({list(size)}, what {type(self.backbone).__name__} accepts) do not fit "
                              f"in the patch {list(spatial)}.",
                              f"Use a patch_size of at least {list(size)} or a smaller view_size.")
        pair = overlapping_crop_pair(image, size, self.min_overlap)
        views = self.augment_views(torch.cat([pair.view1, pair.view2]))  # one batched call for both views
        v1, v2 = views.chunk(2)
        return v1, v2

    def embed_pair(self, backbone: nn.Module, v1: Tensor, v2: Tensor) -> tuple[Tensor, Tensor]:
        """``backbone.embed`` of both views in one forward pass: two (B, embed_dim)."""
        h = backbone.embed(torch.cat([v1, v2]))
        return h[: v1.shape[0]], h[v1.shape[0]:]

    # -- projection --------------------------------------------------------------------------
    def _init_projector(self, hidden_dim: int, projection_dim: int, num_layers: int, norm: str | None,
                        standardise: bool) -> None:
        """``self.projector``: the MLP on ``backbone.embed`` that two-view pretexts train (behind a
        :class:`RunningStandardiser` when ``standardise``); call it where the projector's parameters
        are to be drawn, so the initial weights follow the same random stream."""
        head = ProjectionHead(self.backbone.embed_dim, hidden_dim, projection_dim, num_layers, norm)
        self.projector = standardised(head, self.backbone.embed_dim, standardise)

    def project_views(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Two views of each volume, embedded in one pass and projected: ``(v1, v2, z)`` with ``z``
        (2B, P) the projections of the first views, then the second. ``z``, detached, is kept in
        ``last_embeddings`` for the collapse monitor."""
        v1, v2 = self.two_views(image)
        h1, h2 = self.embed_pair(self.backbone, v1, v2)
        z = self.projector(torch.cat([h1, h2]))
        self.last_embeddings = z.detach()
        return v1, v2, z


def alignment(a: Tensor, b: Tensor) -> Tensor:
    """Mean cosine between paired rows, detached: how alike the two views' outputs are (logged, not trained)."""
    return F.cosine_similarity(a.detach(), b.detach(), dim=-1).mean()

"""Rubik's cube+: order, orientation and masking of the sub-cubes of a volume.

Zhuang et al., "Self-supervised Feature Learning for 3D Medical Images by Playing a Rubik's Cube",
MICCAI 2019 (2x2x2 sub-cubes with gaps, permutation among K maximally separated permutations,
per-cube 180-degree horizontal / vertical rotation as binary targets); Zhu et al., "Rubik's Cube+:
A self-supervised feature learning framework for 3D medical image analysis", Medical Image Analysis
64, 2020 (adds cube-masking identification); Tao et al., "Revisiting Rubik's Cube: Self-supervised
Learning with Volume-wise Transformation for 3D Medical Image Segmentation", MICCAI 2020. The
permutation set is chosen greedily for maximal Hamming distance as in Noroozi & Favaro, "Unsupervised
Learning of Visual Representations by Solving Jigsaw Puzzles", ECCV 2016.

Siamese design of the papers: every sub-cube goes through the shared encoder on its own, the M
embeddings are concatenated in slot order, and one head per task reads the concatenation.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.pretext.heads import ProjectionHead
from monai_ssl_plugin.pretext.registry import register_pretext
from monai_ssl_plugin.pretext.predictive.rotation import standardise_default
from monai_ssl_plugin.pretext.views_mixin import RunningStandardiser
from monai_ssl_plugin.transforms._random import bernoulli, integers
from monai_ssl_plugin.transforms.masking import random_block_mask
from monai_ssl_plugin.transforms.views import cube_grid

__all__ = ["RubiksCube", "hamming_distances", "maximal_hamming_permutations"]


@functools.lru_cache(maxsize=16)
def _permutation_set(n: int, k: int) -> torch.Tensor:
    perms = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.int8)  # lexicographic, row 0 = identity
    chosen = [0]
    min_dist = (perms != perms[0]).sum(1)
    for _ in range(k - 1):
        i = int(torch.argmax(min_dist))  # first maximum: deterministic tie-breaking
        chosen.append(i)
        min_dist = torch.minimum(min_dist, (perms != perms[i]).sum(1))
    return perms[chosen].long()


def maximal_hamming_permutations(n: int = 8, k: int = 100) -> torch.Tensor:
    """K permutations of ``n`` items, greedily maximising the minimum pairwise Hamming distance.

    Noroozi & Favaro (ECCV 2016) / Zhuang et al. (MICCAI 2019): start from the identity, then add,
    one at a time, the permutation whose smallest Hamming distance to those already chosen is
    largest (ties: the lexicographically first). Deterministic and cached per ``(n, k)``.

    For n = 8 the greedy set reaches the best possible minimum distance for common K: 8 for K <= 8
    (a Latin square), 7 for K = 50 and 6 for K = 100 (a code with distance 7 holds at most
    n(n-1) = 56 permutations).

    Returns:
        (k, n) int64; row ``c`` is the permutation of class ``c``: slot ``i`` receives cube ``perm[i]``.
    """
    if n < 2 or not 1 <= k <= math.factorial(n):
        raise ValueError(f"need 1 <= k <= {n}! permutations of n >= 2 items, got n={n}, k={k}")
    return _permutation_set(int(n), int(k)).clone()


def hamming_distances(perms: torch.Tensor) -> torch.Tensor:
    """(K, K) pairwise Hamming distances of (K, n) permutations."""
    return (perms[:, None, :] != perms[None, :, :]).sum(-1)


@register_pretext("rubiks_cube", paradigm="predictive")
class RubiksCube(nn.Module):
    """Rubik's cube+ on a grid of 2 sub-cubes per axis (8 in 3D, 4 squares in 2D).

    Per sample, inside ``forward`` and batched: split into ``cube_grid(x, 2, gap)`` sub-cubes; pick a
    permutation class c in 0..K-1 and reorder the cubes (slot i receives cube ``perm_c[i]``); rotate
    each cube by 180 degrees about each rotation axis with probability 1/2 (3D: "horizontal" = in
    the plane of dims (-3, -1), "vertical" = in the plane (-3, -2); 2D: one in-plane half turn);
    mask each cube with probability ``mask_prob`` by zeroing ``mask_ratio`` of its blocks
    (:func:`~monai_ssl_plugin.transforms.masking.random_block_mask`, blocks of a quarter side).

    Targets and losses: permutation class (cross-entropy over K), per-slot rotation flags and
    per-slot mask flags (binary cross-entropy), weighted ``weights = (order, rotation, masking)``.

    Args:
        backbone: any adapter; ``embed`` runs on each sub-cube, so the sub-cube must suit it
            (ViT / UNETR: ``img_size`` = sub-cube size; SwinUNETR: multiples of 32).
        num_permutations: K (100 in the papers; at most (#cubes)!, i.e. 24 in 2D).
        gap: voxels between neighbouring cubes (int or per axis; the papers use about 10 at their
            sub-cube size; default 4 suits 64^3 patches). Sub-cube side ``(S - gap) // 2``.
        rotation, masking: enable the orientation and the masking tasks (cube+).
        mask_prob, mask_ratio: share of cubes masked, share of a masked cube's blocks zeroed.
        weights: loss weights of order / rotation / masking.
        head_hidden: width of the 2-layer heads (LayerNorm: any batch size).
        standardise: standardise each cube embedding with running statistics before the heads;
            ``"auto"``: for nnU-Net U-Nets only (see
            :func:`~monai_ssl_plugin.pretext.predictive.rotation.standardise_default`).

    Shapes: image (B, C, *S) -> cubes (B, M, C, *s) -> embed (B*M, D) -> concat (B, M*D) -> logits
    (B, K), (B, M*R), (B, M) with M = 2**dims, R = rotation flags per cube (2 in 3D, 1 in 2D).
    Returns ``{"loss", "order", "rotation", "masking", "order_accuracy"}``; ``last_embeddings`` holds
    the (B*M, D) per-cube head inputs (detached, for the collapse monitor).
    """

    needs = ("image",)
    trains_decoder = False

    def __init__(self, backbone: BackboneAdapter, num_permutations: int = 100, gap: int | Sequence[int] = 4,
                 rotation: bool = True, masking: bool = True, mask_prob: float = 0.5, mask_ratio: float = 0.5,
                 weights: Sequence[float] = (1.0, 1.0, 1.0), head_hidden: int = 512, standardise: bool | str = "auto"):
        super().__init__()
        dims = backbone.spatial_dims
        self.backbone = backbone
        self.dims = dims
        self.n_cubes = 2 ** dims
        if num_permutations > math.factorial(self.n_cubes):
            raise ValueError(f"{self.n_cubes} cubes have only {math.factorial(self.n_cubes)} permutations; "
                             f"num_permutations={num_permutations} is too many")
        self.num_permutations = int(num_permutations)
        self.gap = [int(gap)] * dims if isinstance(gap, int) else [int(g) for g in gap]
        self.rotation, self.masking = bool(rotation), bool(masking)
        self.mask_prob, self.mask_ratio = float(mask_prob), float(mask_ratio)
        self.weights = tuple(float(w) for w in weights)
        # 180-degree turns as pairs of flipped dims of a (N, C, *s) cube batch
        self.rotation_planes: list[tuple[int, int]] = [(-3, -1), (-3, -2)] if dims == 3 else [(-2, -1)]
        self.register_buffer("permutations", maximal_hamming_permutations(self.n_cubes, self.num_permutations),
                             persistent=False)
        self.standardise = standardise_default(backbone, standardise)
        self.standardiser = RunningStandardiser(backbone.embed_dim) if self.standardise else nn.Identity()
        width = self.n_cubes * backbone.embed_dim
        self.order_head = ProjectionHead(width, head_hidden, self.num_permutations, num_layers=2, norm="layer")
        self.rotation_head = (ProjectionHead(width, head_hidden, self.n_cubes * len(self.rotation_planes),
                                             num_layers=2, norm="layer") if self.rotation else None)
        self.mask_head = (ProjectionHead(width, head_hidden, self.n_cubes, num_layers=2, norm="layer")
                          if self.masking else None)
        self.last_outputs: dict[str, torch.Tensor] = {}
        self.last_embeddings: torch.Tensor | None = None

    def settings(self) -> dict[str, Any]:
        return {"grid": [2] * self.dims, "num_permutations": self.num_permutations, "gap": self.gap,
                "min_hamming_distance": int(self.min_hamming_distance()), "rotation": self.rotation,
                "rotation_planes": [list(p) for p in self.rotation_planes], "masking": self.masking,
                "mask_prob": self.mask_prob, "mask_ratio": self.mask_ratio, "weights": list(self.weights),
                "standardise": self.standardise}

    def min_hamming_distance(self) -> int:
        if self.num_permutations < 2:
            return self.n_cubes
        d = hamming_distances(self.permutations)
        return int(d[~torch.eye(len(d), dtype=torch.bool, device=d.device)].min())

    def make_puzzle(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The corrupted cubes and their targets (batched; all draws from torch's RNG on the device).

        Returns ``cubes`` (B, M, C, *s) in slot order, ``order`` (B,) permutation classes,
        ``rotated`` (B, M, R) float flags of the cube in each slot, ``masked`` (B, M) float flags.
        """
        cubes = cube_grid(image, 2, self.gap)  # (B, M, C, *s), row-major grid order
        batch, m, dev = cubes.shape[0], self.n_cubes, image.device
        order = integers(0, self.num_permutations - 1, (batch,), None, dev)
        perm = self.permutations.to(dev)[order]  # (B, M): slot i <- cube perm[b, i]
        cubes = cubes[torch.arange(batch, device=dev)[:, None], perm]
        flat = cubes.reshape(batch * m, *cubes.shape[2:])  # (B*M, C, *s)
        n_rot = len(self.rotation_planes)
        rotated = torch.zeros(batch, m, n_rot, device=dev)
        if self.rotation:
            rotated = bernoulli(0.5, (batch, m, n_rot), None, dev).float()
            shape = (batch * m,) + (1,) * (flat.dim() - 1)
            for r, plane in enumerate(self.rotation_planes):  # a half turn is a flip of both plane axes (exact)
                flat = torch.where(rotated[:, :, r].reshape(shape).bool(), flat.flip(plane), flat)
        masked = torch.zeros(batch, m, device=dev)
        if self.masking:
            masked = bernoulli(self.mask_prob, (batch, m), None, dev).float()
            side = [max(1, s // 4) for s in flat.shape[2:]]
            keep = random_block_mask(batch * m, flat.shape[2:], side, self.mask_ratio, device=dev).to(flat.dtype)
            keep = torch.where(masked.reshape(-1, *([1] * (keep.dim() - 1))).bool(), keep, torch.ones_like(keep))
            flat = flat * keep
        return {"cubes": flat.view_as(cubes), "order": order, "rotated": rotated, "masked": masked}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        puzzle = self.make_puzzle(batch["image"])
        cubes = puzzle["cubes"]
        b, m = cubes.shape[:2]
        embeddings = self.backbone.embed(cubes.reshape(b * m, *cubes.shape[2:])).reshape(b, m, -1)
        embeddings = self.standardiser(embeddings)
        self.last_embeddings = embeddings.detach().reshape(b * m, -1)  # per cube, for the collapse monitor
        features = embeddings.reshape(b, -1)  # concatenated in slot order
        order_logits = self.order_head(features)
        order_loss = F.cross_entropy(order_logits, puzzle["order"])
        zero = order_loss.new_zeros(())
        rot_loss = (F.binary_cross_entropy_with_logits(self.rotation_head(features).view(b, m, -1), puzzle["rotated"])
                    if self.rotation_head is not None else zero)
        mask_loss = (F.binary_cross_entropy_with_logits(self.mask_head(features), puzzle["masked"])
                     if self.mask_head is not None else zero)
        w_order, w_rot, w_mask = self.weights
        loss = w_order * order_loss + w_rot * rot_loss + w_mask * mask_loss
        accuracy = (order_logits.detach().argmax(1) == puzzle["order"]).float().mean()
        self.last_outputs = {"order_logits": order_logits.detach(), "order": puzzle["order"]}
        return {"loss": loss, "order": order_loss.detach(), "rotation": rot_loss.detach(),
                "masking": mask_loss.detach(), "order_accuracy": accuracy}

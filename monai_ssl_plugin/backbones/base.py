"""The face every backbone shows to pretexts, export and the downstream loaders.

A pretext never knows which network it trains: it asks the adapter for multi-scale encoder
features (``encode``), a dense output (``decode``, where the network has a decoder) or a pooled
embedding (``embed``). Export asks the adapter where the stem / encoder / decoder live.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class BackboneAdapter(nn.Module):
    """Wraps a downstream network (``self.network``) without changing its parameter names.

    Subclasses set ``family``, ``spatial_dims``, ``in_channels``, ``out_channels`` (dense output
    channels, 0 when there is no decoder), ``embed_dim`` and implement ``encode`` / ``decode``.
    ``self.network.state_dict()`` is exactly what the downstream pipeline loads.
    """

    family: str = ""
    has_decoder: bool = False

    def __init__(self, network: nn.Module, *, spatial_dims: int, in_channels: int, embed_dim: int,
                 out_channels: int = 0, constructor: dict[str, Any] | None = None):
        super().__init__()
        self.network = network
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.out_channels = out_channels
        self.constructor = constructor or {}

    # -- what pretexts call -------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features, shallow to deep: list of (B, C_s, *spatial_s)."""
        raise NotImplementedError

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Dense output (B, out_channels, *spatial) from ``encode``'s features."""
        raise NotImplementedError(f"{type(self).__name__} has no decoder; use a pretext that needs embeddings only.")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global embedding (B, embed_dim): the deepest features, average-pooled."""
        return self.encode(x)[-1].flatten(2).mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # -- what export and the masking hooks need ------------------------------------------
    def encoder_stages(self) -> list[nn.Module]:
        """Modules whose outputs are the encoder's resolution levels (SparK re-masks after each)."""
        raise NotImplementedError

    def divisor(self) -> list[int]:
        """Per axis, the number every input side must be a multiple of (the network's total stride)."""
        return [1] * self.spatial_dims

    def key_prefixes(self) -> dict[str, Any]:
        """Where the parts live in ``network.state_dict()``: stem, encoder, decoder, in_proj keys."""
        raise NotImplementedError

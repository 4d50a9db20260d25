"""The encoder of a pretrained backbone as a network of its own: what the bundles' ``inference.yaml``
builds (``encoder_network``), loads (``load_encoder_weights``, reported) and runs over a data source
(``encode_cases``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.backbones import backbone_from_record
from monai_ssl_plugin.checkpoint import atomic_save, safe_load
from monai_ssl_plugin.engine.network import DEFAULT_BACKBONE, build_backbone
from monai_ssl_plugin.transfer.loading import load_weights

logger = logging.getLogger(__name__)


class LatentEncoder(nn.Module):
    """The encoder of a backbone adapter as a single-tensor network: ``x -> deepest feature map``.

    This is what the bundles' ``inference.yaml`` exposes (``format: latent``), so
    ``python -m monai.bundle verify_net_in_out`` and TorchScript export work on it. Parameter names
    are those of the downstream network under ``backbone.network.``.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(x)[-1]

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Also accept the plugin's weight files, ``{"network": downstream state dict, "record": ...}``.

        A bundle's ``models/model.pt`` keeps that layout (the record travels with the weights), and
        MONAI's ``ckpt_export`` (ignite ``Checkpoint.load_objects``) hands the whole file to this
        method: the ``network`` entry is loaded into the downstream network, strictly when asked.
        """
        if "network" in state_dict and not any(k.startswith("backbone.") for k in state_dict):
            return self.backbone.network.load_state_dict(state_dict["network"], strict=strict, assign=assign)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def encoder_network(backbone: str = DEFAULT_BACKBONE, in_channels: int = 1, plans: str | None = None,
                    configuration: str = "3d_fullres", checkpoint: str | Path | None = None) -> LatentEncoder:
    """``LatentEncoder`` over the pretrained architecture.

    When ``checkpoint`` is an existing file with a record (a pretraining checkpoint or a packaged
    ``models/model.pt``), the record decides the architecture, whatever its family (the record is
    the contract; nothing is guessed), so the weights load into it; otherwise ``backbone`` / ``plans`` do.
    """
    if checkpoint and Path(checkpoint).is_file():
        record = safe_load(checkpoint).get("record") or {}
        if record.get("backbone_family"):
            logger.info("Encoder architecture from the record of %s: %s.", checkpoint, record["backbone_family"])
            return LatentEncoder(backbone_from_record(record["backbone_family"], record["backbone_kwargs"]))
    return LatentEncoder(build_backbone(backbone, {"in_channels": in_channels}, plans, configuration))


def load_encoder_weights(encoder: LatentEncoder, checkpoint: str | Path) -> LatentEncoder:
    """Load pretrained weights into ``encoder``: a pretraining checkpoint (``final.pt``, key ``network``)
    or a plain state dict of the downstream network. Reports what loaded; refuses a load of nothing."""
    state = safe_load(checkpoint)
    state = state.get("network", state)
    report = load_weights(encoder.backbone.network, state, include=lambda k: ".seg_layers." not in k and
                          not k.startswith("decoder."), log=logger.info)
    logger.info("Encoder weights from %s: %s", checkpoint, report.summary())
    return encoder


@torch.no_grad()
def encode_cases(encoder: nn.Module, source: Any, patch_size: Sequence[int], device: str | torch.device,
                 output_file: str | Path, inferer: Callable[..., torch.Tensor] | None = None) -> Path:
    """Embed every case of a data source: centre patch (zero-padded if smaller) -> encoder (through
    ``inferer`` if given, e.g. ``monai.inferers.SimpleInferer()``) -> mean over space.

    Writes ``{"case_ids": [...], "embeddings": (N, D)}`` to ``output_file`` (atomically)."""
    encoder = encoder.to(device).eval()
    patch = [int(p) for p in patch_size]
    rows = []
    for i in range(len(source)):
        image = torch.as_tensor(source.load(i), dtype=torch.float32)
        pads, slices = [], [slice(None)]
        for size, want in zip(image.shape[1:], patch):
            start = max(0, (size - want) // 2)
            slices.append(slice(start, start + want))
        image = image[tuple(slices)]
        for size, want in reversed(list(zip(image.shape[1:], patch))):
            pads += [0, max(0, want - size)]
        image = torch.nn.functional.pad(image, pads)
        batch = image[None].to(device)
        features = inferer(batch, encoder) if inferer is not None else encoder(batch)
        rows.append(features.flatten(2).mean(-1)[0].float().cpu())
    return atomic_save({"case_ids": list(source.case_ids), "embeddings": torch.stack(rows)}, output_file)

"""nnU-Net networks built on the meta device: shapes and key names only, no memory, no initialisation.

The reader needs them to rename a foreign file's prefixes to nnU-Net's; consumers compare a
checkpoint with the network a plans file builds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.checkpoint import CheckpointRecord


def meta_network(arch_class_name: str, arch_kwargs: dict[str, Any], req_import: list[str], in_channels: int,
                 out_channels: int) -> nn.Module:
    """The network nnU-Net's ``get_network_from_plans`` builds, with deep supervision, as the trainer does
    (Primus has none: its builder must not be given the argument)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # heavy: nnU-Net's trainer stack

    with torch.device("meta"):
        return get_network_from_plans(arch_class_name, arch_kwargs, req_import, in_channels, out_channels,
                                      allow_init=False, deep_supervision=deep_supervision_argument(arch_class_name))


def deep_supervision_argument(arch_class_name: str, enabled: bool = True) -> bool | None:
    """What to pass as ``get_network_from_plans(deep_supervision=...)``: None for networks without it (Primus)."""
    return None if arch_class_name.rsplit(".", 1)[-1].startswith("Primus") else enabled


def record_network(record: CheckpointRecord) -> nn.Module:
    """The network the record says was pretrained (meta device)."""
    c = record.backbone_kwargs
    return meta_network(c["arch_class_name"], c["arch_kwargs"], c["arch_kwargs_req_import"], int(record.in_channels),
                        int(c.get("out_channels") or record.in_channels))

"""Record checks: what a consumer refuses before any weight moves.

The record (:class:`~monai_ssl_plugin.checkpoint.CheckpointRecord`) is authoritative; a caller's
statement about a source may only agree with it, and a consumer needing a backbone family or an
axis order refuses a record that says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai_ssl_plugin.checkpoint import CheckpointRecord
from monai_ssl_plugin.errors import PluginError

_DROP_STATEMENT = "Drop the statement (the record is authoritative) or pick the right checkpoint."


def parse_record(record: Mapping[str, Any], origin: str) -> CheckpointRecord:
    """The record of ``origin`` as a :class:`CheckpointRecord`, or one line saying it is unreadable."""
    try:
        return CheckpointRecord.from_dict(dict(record))
    except (TypeError, PluginError) as e:
        raise PluginError(f"{origin} has an unreadable record ({str(e).splitlines()[0]}).",
                          "Re-export the weights from the original pretraining checkpoint.") from None


def check_statements(record: CheckpointRecord, origin: str, *, backbone_family: str | None = None,
                     in_channels: int | None = None, axis_order: str | None = None) -> None:
    """Refuse a caller's statement about ``origin`` that contradicts its record."""
    if backbone_family is not None and backbone_family != record.backbone_family:
        raise PluginError(f"{origin} records backbone {record.backbone_family!r}, but {backbone_family!r} was stated.",
                          "Drop backbone_family (the record is authoritative) or pick the right checkpoint.")
    if in_channels is not None and int(in_channels) != int(record.in_channels):
        raise PluginError(f"{origin} records {record.in_channels} input channel(s), but {in_channels} were stated.",
                          _DROP_STATEMENT)
    if axis_order is not None and axis_order != record.axis_order:
        raise PluginError(f"{origin} records axis order {record.axis_order!r}, but {axis_order!r} was stated.",
                          _DROP_STATEMENT)


def require_nnunet_backbone(record: CheckpointRecord, origin: str) -> CheckpointRecord:
    """An nnU-Net U-Net pretrained on (z, y, x) volumes, as nnU-Net feeds its networks; else one line."""
    if not record.backbone_family.startswith("nnunet."):
        raise PluginError(f"{origin} holds a {record.backbone_family} backbone, not an nnU-Net network.",
                          "nnU-Net needs a checkpoint pretrained on an nnU-Net backbone "
                          "(nnunet_* presets or NnUNetBackbone.from_plans).")
    if record.axis_order != "nnunet":  # read_weights(to_nnunet_order=True) converts what it can
        raise PluginError(f"{origin} was pretrained on {record.axis_order}-ordered volumes (x, y, z), but nnU-Net "
                          "feeds its network (z, y, x) volumes; the kernels would see transposed anatomy.",
                          "Pretrain on nnU-Net raw or preprocessed data (axis order 'nnunet') and export again.")
    return record

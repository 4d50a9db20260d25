"""Where published checkpoints are cached, and the small record of how each file was verified.

Layout (torch hub's convention: under ``$TORCH_HOME``, overridable)::

    $MONAI_SSL_PRETRAINED_HOME  (default $TORCH_HOME/monai_ssl/pretrained, TORCH_HOME default ~/.cache/torch)
      <name>/original/<filename>   the file as published (sha256-verified)
      <name>/converted.pt          the plugin's checkpoint (network + record), written once
      <name>/provenance.json       url, sha256, how it was checked, when, conversion summary

Every write is atomic (temporary file in the same folder, then rename), so an interrupted download
or conversion never leaves a file that looks complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from monai_ssl_plugin.checkpoint import atomic_write_text

ENV_HOME = "MONAI_SSL_PRETRAINED_HOME"


def cache_root() -> Path:
    """``$MONAI_SSL_PRETRAINED_HOME``, else ``$TORCH_HOME/monai_ssl/pretrained`` (torch hub's root)."""
    explicit = os.environ.get(ENV_HOME, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    torch_home = os.environ.get("TORCH_HOME", "").strip() or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache", "torch")
    return Path(torch_home).expanduser() / "monai_ssl" / "pretrained"


def entry_dir(name: str) -> Path:
    return cache_root() / name


def original_path(name: str, filename: str) -> Path:
    return entry_dir(name) / "original" / filename


def converted_path(name: str) -> Path:
    return entry_dir(name) / "converted.pt"


def provenance_path(name: str) -> Path:
    return entry_dir(name) / "provenance.json"


def read_provenance(name: str) -> dict[str, Any]:
    """The entry's provenance record, or ``{}`` before its first download (an unreadable one counts as absent)."""
    path = provenance_path(name)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_provenance(name: str, data: dict[str, Any]) -> Path:
    return atomic_write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", provenance_path(name))

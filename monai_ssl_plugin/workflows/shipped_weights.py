"""Weights pretrained once, long, and shipped the model zoo's way: ``<bundle>/models/model.pt``.

The file holds the pretrained network's state dict (``network``) and its checkpoint record
(``record``), whose ``data["provenance"]`` says exactly which command and which data made it. Its
sha256 is in the bundle's ``large_files.yml`` (the zoo's list of large files: ``path``,
``hash_val``, ``hash_type``), and :func:`load_shipped_weights` refuses a file that does not match
it, so weights that were swapped or damaged are never fine-tuned from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from monai_ssl_plugin.checkpoint import atomic_save, atomic_write_text, load_checked, safe_load, sha256_file
from monai_ssl_plugin.errors import PluginError

MODEL_FILE = "models/model.pt"
LARGE_FILES = "large_files.yml"


def write_shipped_weights(checkpoint: str | os.PathLike, bundle: str | os.PathLike,
                          provenance: dict[str, Any]) -> Path:
    """Strip a pretraining checkpoint to network + record (with ``provenance``) into ``bundle/models/model.pt``
    and record its sha256 in ``bundle/large_files.yml``; returns the model file."""
    ckpt = load_checked(checkpoint)
    record = dict(ckpt["record"])
    record["data"] = {**record.get("data", {}), "provenance": provenance}
    target = Path(bundle) / MODEL_FILE
    atomic_save({"network": ckpt["network"], "record": record}, target)
    listed = _large_files(bundle)
    entries = [e for e in listed if e.get("path") != MODEL_FILE]
    previous = next((e for e in listed if e.get("path") == MODEL_FILE), {})  # keeps its url (the zoo downloads from it)
    entries.append({**previous, "path": MODEL_FILE, "hash_val": sha256_file(target), "hash_type": "sha256"})
    atomic_write_text(yaml.safe_dump({"large_files": entries}, sort_keys=False), Path(bundle) / LARGE_FILES)
    return target


def _large_files(bundle: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(bundle) / LARGE_FILES
    if not path.is_file():
        return []
    entries = (yaml.safe_load(path.read_text()) or {}).get("large_files") or []
    if not isinstance(entries, list):
        raise PluginError(f"{path} has no list under 'large_files'.", "Rewrite it with write_shipped_weights.")
    return entries


def expected_sha256(bundle: str | os.PathLike, relative: str = MODEL_FILE) -> str:
    """The sha256 ``large_files.yml`` lists for ``relative``; refuses a bundle that lists none."""
    for entry in _large_files(bundle):
        if entry.get("path") == relative and str(entry.get("hash_type", "")).lower() == "sha256":
            return str(entry["hash_val"])
    raise PluginError(f"{Path(bundle) / LARGE_FILES} lists no sha256 for {relative}.",
                      "Use a bundle that ships weights (e.g. mae_ssl_pretraining) or regenerate them.")


def verified_model_file(bundle: str | os.PathLike) -> Path:
    """``bundle/models/model.pt`` after checking it against the sha256 in ``large_files.yml``."""
    path = Path(bundle) / MODEL_FILE
    if not path.is_file():
        raise PluginError(f"{path} does not exist.", "Reinstall the package or regenerate the weights "
                                                     "(monai-ssl demo-weights).")
    expected, actual = expected_sha256(bundle), sha256_file(path)
    if actual != expected:
        raise PluginError(f"{path} has sha256 {actual[:12]}..., not the {expected[:12]}... that "
                          f"{LARGE_FILES} lists: the file was changed or damaged.",
                          "Restore the file from the package (reinstall) or regenerate it with monai-ssl demo-weights.")
    return path


def load_shipped_weights(bundle: str | os.PathLike) -> dict[str, Any]:
    """The verified ``{"network", "record"}`` of a bundle's shipped weights (read with weights_only=True)."""
    return safe_load(verified_model_file(bundle))

"""The manifest of a packaged bundle: the sha256 of every file it holds.

A shared bundle is code as much as weights: ``python -m monai.bundle run`` evaluates every ``$``
expression and imports every ``_target_`` of its configs. So the manifest covers every file
(configs, docs, LICENSE, weights, metadata), and a check refuses a bundle with a changed, missing
or added file, or with a symbolic link (a link could point anywhere after the check).
``manifest.json`` is the one file it does not list (it cannot hold its own hash); a publisher's
``--sha256`` of the zip, or of ``manifest.json`` for a folder, covers it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from monai_ssl_plugin.checkpoint import atomic_write_text, sha256_file
from monai_ssl_plugin.errors import PluginError

MANIFEST_FILE = "manifest.json"
_REPACKAGE = "Download the bundle again from the publisher (or re-package it with monai-ssl package-bundle)."


def bundle_files(folder: Path) -> list[str]:
    """Every file under ``folder`` (posix paths relative to it) except the manifest; refuses links."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                raise PluginError(f"{path} is a symbolic link: a bundle may hold only plain files.",
                                  "Replace the link by the file it points to, or remove it.")
        out += [(Path(root) / f).relative_to(folder).as_posix() for f in files]
    return sorted(f for f in out if f != MANIFEST_FILE)


def write_manifest(folder: Path) -> Path:
    """Write ``folder/manifest.json`` over every file now in ``folder``."""
    files = {rel: sha256_file(folder / rel) for rel in bundle_files(folder)}
    return atomic_write_text(json.dumps({"hash_type": "sha256", "files": files}, indent=2) + "\n",
                             folder / MANIFEST_FILE)


def read_manifest(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from ``folder/manifest.json``; one-line errors when absent or malformed."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise PluginError(f"{folder.name} has no {MANIFEST_FILE}: its configs (code that `monai.bundle run` "
                          "executes) cannot be verified.", _REPACKAGE)
    try:
        files = json.loads(path.read_text()).get("files")
    except (ValueError, AttributeError) as e:
        raise PluginError(f"{path} is not a valid manifest ({e}).", _REPACKAGE) from None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise PluginError(f"{path} lists no files with their sha256.", _REPACKAGE)
    return files


def check_manifest(folder: Path) -> list[str]:
    """Refuse any difference between ``folder`` and its manifest; returns the files checked."""
    listed = read_manifest(folder)
    present = bundle_files(folder)
    added = sorted(set(present) - set(listed))
    missing = sorted(set(listed) - set(present))
    changed = [f for f in present if f in listed and sha256_file(folder / f) != listed[f].lower()]
    for what, files in (("changed", changed), ("added", added), ("missing", missing)):
        if files:
            shown = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
            raise PluginError(f"{folder.name}: {len(files)} file(s) {what} since packaging ({shown}): refusing a "
                              "tampered or corrupt bundle.", _REPACKAGE)
    return present

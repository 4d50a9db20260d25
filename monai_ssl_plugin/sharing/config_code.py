"""The Python a bundle's configs make MONAI run, and which of it the plugin did not ship.

``python -m monai.bundle run`` ``eval``s every string starting with ``$``, imports and calls every
``_target_``, and ``%`` pulls in content from other files. A bundle from someone else is therefore
code. :func:`foreign_code` lists the entries that are neither the plugin's and MONAI's own
(``_target_`` / ``import`` under ``monai`` or ``monai_ssl_plugin``) nor written verbatim in a
config the plugin ships (``bundles/*/configs``): those are what a user must read before trusting
the bundle, and what ``install-bundle`` refuses without ``--trust_code``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from monai_ssl_plugin.bundles import BUNDLES_DIR
from monai_ssl_plugin.errors import PluginError

OWN_ROOTS = ("monai", "monai_ssl_plugin")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _entries(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """``(id, code)`` for every ``$`` / ``%`` string and ``_target_`` value in a parsed config."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{where}#{key}" if where else str(key)
            if key == "_target_" and isinstance(value, str):
                yield where, f"_target_: {value.strip()}"
            else:
                yield from _entries(value, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _entries(value, f"{where}#{i}" if where else str(i))
    elif isinstance(node, str) and node.strip()[:1] in ("$", "%"):
        yield where, " ".join(node.split())


def _load(path: Path) -> Any:
    try:
        text = path.read_text()
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise PluginError(f"Cannot parse config {path} ({type(e).__name__}).", "Download the bundle again.") from None


def config_entries(folder: Path) -> list[tuple[str, str]]:
    """``("configs/FILE:id", code)`` for every config file under ``folder/configs``."""
    out = []
    for path in sorted((folder / "configs").rglob("*")):
        if path.is_file() and path.suffix in CONFIG_SUFFIXES:
            rel = path.relative_to(folder).as_posix()
            out += [(f"{rel}:{where}", code) for where, code in _entries(_load(path), "")]
    return out


@functools.lru_cache(maxsize=1)
def shipped_code() -> frozenset[str]:
    """Every code entry of the configs the plugin ships (its own bundles)."""
    return frozenset(code for bundle in sorted(BUNDLES_DIR.glob("*/")) if (bundle / "configs").is_dir()
                     for _, code in config_entries(bundle))


def _own(code: str) -> bool:
    """``_target_`` / ``import`` / ``from ... import`` of the plugin's or MONAI's own modules."""
    m = re.fullmatch(r"(?:_target_:\s*|\$\s*import\s+|\$\s*from\s+)([A-Za-z_][\w.]*)(?:\s+(?:as|import)\s+[\w, ]+)?",
                     code)
    return bool(m) and m[1].split(".")[0] in OWN_ROOTS


def foreign_code(folder: str | Path) -> list[tuple[str, str]]:
    """The config entries of the bundle at ``folder`` that the plugin and MONAI did not write."""
    known = shipped_code()
    return [(where, code) for where, code in config_entries(Path(folder)) if code not in known and not _own(code)]

"""Writing the recommender's benchmark file, ``guide/measured.yaml`` (read by ``load_measured``).

Only the benchmarks write it (``benchmarks/bench_pretexts.py --write-measured``): each measured
cell becomes one entry under its bundle, and an entry with the same (device, patch, batch,
backbone) replaces the older one, so re-running a cell refreshes it and other cells stay.
The write is atomic (``checkpoint.atomic_write_text``, imported lazily: the guide stays torch-free).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.guide.recommender import DEFAULT_MEASURED_PATH, load_measured

__all__ = ["REQUIRED_KEYS", "entry_key", "merge_measured", "write_measured"]

REQUIRED_KEYS = ("device", "patch", "batch", "volumes_per_s", "peak_mem_mb")
HEADER = (
    "# GENERATED FILE - do not edit by hand. Written by `python benchmarks/bench_pretexts.py --write-measured`\n"
    "# (regenerate the packaged figures: `OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_pretexts.py --bundles all\n"
    "# --patch 32 --steps 3 --write-measured`). Each entry records the command, date, host and load it was measured\n"
    "# with; the recommender copies these figures into its time / memory column (docs/guide.md).\n"
)


def entry_key(entry: Mapping[str, Any]) -> tuple[str, tuple[int, ...], int, str | None]:
    """Identity of a measurement: (device, patch, batch, backbone); a newer one with the same key replaces it."""
    bb = entry.get("backbone")
    return (str(entry["device"]).strip().lower(), tuple(int(v) for v in entry["patch"]), int(entry["batch"]),
            None if bb is None else str(bb))


def _check(bundle: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    if missing:
        raise PluginError(f"Measured entry for {bundle} lacks {', '.join(missing)}: {dict(entry)!r}.",
                          f"Give every entry {', '.join(REQUIRED_KEYS)} (the layout load_measured reads).")
    if float(entry["volumes_per_s"]) <= 0 or float(entry["peak_mem_mb"]) <= 0:
        raise PluginError(f"Measured entry for {bundle} has a non-positive figure: {dict(entry)!r}.",
                          "Write only cells that ran (refused or failed cells are not measurements).")
    out = dict(entry)
    out["patch"] = [int(v) for v in entry["patch"]]
    out["batch"] = int(entry["batch"])
    return out


def merge_measured(existing: Mapping[str, list[dict[str, Any]]],
                   new: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """``existing`` (``load_measured``'s layout) with ``new`` merged in; same key -> the new entry wins.

    Bundles may be given by short name (``mae``); the result is keyed by bundle name, sorted, with each
    bundle's entries ordered by backbone, device, patch volume and batch (a stable, diffable file).
    """
    out: dict[str, dict[tuple, dict[str, Any]]] = {}
    for source in (existing, new):
        for name, entries in source.items():
            bundle = name if str(name).endswith("_ssl_pretraining") else f"{name}_ssl_pretraining"
            slot = out.setdefault(bundle, {})
            for e in entries:
                e = _check(bundle, e)
                slot[entry_key(e)] = e

    def order(e: dict[str, Any]) -> tuple:
        vox = 1
        for v in e["patch"]:
            vox *= int(v)
        return (str(e.get("backbone", "")), str(e["device"]), len(e["patch"]), vox, int(e["batch"]))

    return {b: sorted(slot.values(), key=order) for b, slot in sorted(out.items())}


def write_measured(new: Mapping[str, Iterable[Mapping[str, Any]]], path: str | Path | None = None) -> Path:
    """Merge ``new`` entries into the measured file at ``path`` (default: the packaged one), atomically.

    The existing file is read through ``load_measured`` (so what is kept is exactly what the
    recommender sees); the result is written with a generated-file header.
    """
    from monai_ssl_plugin.checkpoint import atomic_write_text  # lazy: keeps the guide free of torch

    p = Path(path or DEFAULT_MEASURED_PATH)
    if p.exists() and not p.is_file():
        raise PluginError(f"Measured-figures path {p} is not a file.", "Pass a YAML file path to --write-measured.")
    merged = merge_measured(load_measured(p), new)
    body = yaml.safe_dump({"methods": merged}, sort_keys=False, default_flow_style=None, width=120)
    return atomic_write_text(HEADER + body, p)

"""``get``: a catalog entry -> a verified original in the cache -> the plugin's checkpoint, converted once.

The converted file (``<cache>/<name>/converted.pt``) is what consumers read: the nnU-Net trainers
through ``nnUNet_SSL_pretrained``, the MONAI overlay / ``load_pretrained`` by path. A second ``get``
returns it without touching the network.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from monai_ssl_plugin.checkpoint import atomic_save, safe_load, seal, sha256_file
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretrained import cache
from monai_ssl_plugin.pretrained.catalog import PretrainedEntry, get_entry
from monai_ssl_plugin.pretrained.convert import VERIFIERS, converted_checkpoint
from monai_ssl_plugin.pretrained.download import download, hub_sha256, place_verified


def expected_sha256(entry: PretrainedEntry, known: dict[str, Any]) -> tuple[str | None, str]:
    """(sha256, where it comes from): the publisher's, else the Hub's, else the first download's, else none yet."""
    if entry.sha256:
        return entry.sha256, "published by the authors"
    hub = hub_sha256(entry)
    if hub:
        return hub, "published by the Hugging Face Hub for this file"
    if known.get("sha256"):
        return known["sha256"], f"recorded at the first download on {known.get('first_downloaded', '?')} (trust on first use)"
    return None, "none published: trust on first use"


def _obtain_original(entry: PretrainedEntry, file: str | None, known: dict[str, Any], force: bool
                     ) -> tuple[Path, str, str]:
    """The verified original in the cache: (path, sha256, how it was checked); a cached original that still has
    its recorded sha256 is reused without the network unless ``force``."""
    final = cache.original_path(entry.name, entry.filename)
    if file is None and not force and known.get("sha256") and final.is_file() and sha256_file(final) == known["sha256"]:
        return final, known["sha256"], str(known.get("sha256_source"))
    expected, source = expected_sha256(entry, known)
    if file is not None:
        given = Path(file).expanduser()
        if not given.is_file():
            raise PluginError(f"--file {file} does not exist.", f"Pass the downloaded {entry.filename}.")
        got = place_verified(given, final, expected, entry, source, move=False)
    else:
        got = download(entry, final, expected, source)
    return final, got, source if expected else "trust on first use: no published sha256; this download's is recorded"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cached(entry: PretrainedEntry, known: dict[str, Any]) -> Path | None:
    """The converted file when it is there and intact (its sha256 as recorded at conversion); for an entry used as
    published, the verified original."""
    if entry.converter in VERIFIERS:
        original = cache.original_path(entry.name, entry.filename)
        intact = known.get("verified") and original.is_file() and known.get("sha256") == sha256_file(original)
        return original if intact else None
    converted = cache.converted_path(entry.name)
    intact = converted.is_file() and known.get("converted_sha256") == sha256_file(converted)
    return converted if intact else None


def _verify_only(entry: PretrainedEntry, original: Path, record: dict[str, Any], log: Any) -> Path:
    """Check an entry used as published (no conversion) and record that it was checked."""
    summary = VERIFIERS[entry.converter](safe_load(original), entry)
    cache.write_provenance(entry.name, {**record, "verified": True, "converted": None, **summary})
    log(f"[monai-ssl] {entry.name}: {summary['architecture']} checkpoint with the published layout "
        f"({summary['source_tensors']} tensors); not converted (the plugin has no backbone for it)")
    return original


def get(name: str, file: str | None = None, force: bool = False, log: Any = print) -> Path:
    """Download (or take ``file``), verify, convert once and cache ``name``; returns the converted checkpoint (for an
    entry used as published: the verified original)."""
    entry = get_entry(name)
    known = cache.read_provenance(entry.name)
    log = log or (lambda _message: None)
    if not force and file is None and (done := _cached(entry, known)) is not None:
        log(f"[monai-ssl] {entry.name}: cached at {done} (sha256 {known.get('sha256')}, {known.get('sha256_source')})")
        return done
    original, sha, how = _obtain_original(entry, file, known, force)  # --force downloads again, still checked
    record = {"name": entry.name, "location": entry.location, "sha256": sha, "sha256_source": how,
              "first_downloaded": known.get("first_downloaded") if known.get("sha256") == sha else _now()}
    log(f"[monai-ssl] {entry.name}: {original} sha256 {sha} ({how})")
    if entry.converter in VERIFIERS:
        return _verify_only(entry, original, record, log)
    checkpoint, summary = converted_checkpoint(safe_load(original), entry, record)
    converted = atomic_save(seal(checkpoint), cache.converted_path(entry.name))
    cache.write_provenance(entry.name, {**record, "converted": str(converted), "converted_sha256": sha256_file(converted),
                                        "converted_at": _now(), **summary})
    log(f"[monai-ssl] {entry.name}: converted {summary['converted_tensors']} tensor(s) "
        f"({summary['dropped_tensors']} pretext-head tensor(s) dropped) -> {converted}")
    return converted


def info(name: str) -> dict[str, Any]:
    """Everything the catalog and the cache know about ``name``, for ``monai-ssl pretrained info``."""
    entry = get_entry(name)
    known = cache.read_provenance(entry.name)
    return {"name": entry.name, "title": entry.title, "location": entry.location, "paper": entry.paper,
            "data": entry.data, "licence": entry.licence, "architecture": entry.architecture, "key map": entry.key_map,
            "use with": entry.consumer,
            "converted": ("no: used as published (the plugin has no backbone for it); `get` checks its layout and "
                          "caches the verified original" if entry.converter in VERIFIERS
                          else "once, into the plugin's checkpoint (network + record)"),
            "sha256": entry.hash_policy, "homepage": entry.homepage, "notes": entry.notes,
            "cache": str(cache.entry_dir(entry.name)),
            "cached": (f"yes, sha256 {known.get('sha256')} ({known.get('sha256_source')})" if _cached(entry, known)
                       else "no (run `monai-ssl pretrained get " + entry.name + "`)")}

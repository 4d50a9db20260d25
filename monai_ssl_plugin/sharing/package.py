"""Package a pretraining run as a MONAI model-zoo bundle: ``OUT/NAME/`` and ``OUT/NAME.zip``.

Layout written (the zoo's)::

    NAME/configs/{train.yaml, inference.yaml, logging.conf, ...}   copied from the bundle
    NAME/configs/metadata.json     version bumped, changelog entry, schema kept, versions, provenance
    NAME/models/model.pt           {"network": state dict, "record": CheckpointRecord dict}
                                   (plain tensors and containers: loads with weights_only=True)
    NAME/large_files.yml           only when model.pt exceeds 25 MB (path, url, hash_val, hash_type)
    NAME/docs/, NAME/LICENSE       copied from the bundle when present
    NAME/manifest.json             the sha256 of every other file (install and verify refuse any change)
    NAME.zip                       unpacks to NAME/... (what `python -m monai.bundle download --url` expects)

Every file is written atomically: the folder is assembled in a hidden staging folder next to the
target and renamed into place; the zip is written to a temporary file and renamed. An interrupted
packaging never leaves a half-written bundle under ``NAME``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from monai_ssl_plugin.bundles import bundle_dir
from monai_ssl_plugin.checkpoint import (atomic_save, atomic_write_stream, atomic_write_text, safe_load, sha256_file,
                                         software_versions)
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.sharing.manifest import write_manifest

logger = logging.getLogger(__name__)

LARGE_FILE_BYTES = 25 * 1024 * 1024  # the model zoo keeps files above 25 MB out of git (large_files.yml)
# large_files.yml needs a download address the packager cannot know: this placeholder is written
# and must be replaced by the release URL of model.pt before the bundle is submitted to the zoo.
URL_PLACEHOLDER = "https://REPLACE-WITH-RELEASE-URL/{name}/models/model.pt"
MODEL_FILE = "models/model.pt"
PROVENANCE_KEY = "provenance"


def resolve_checkpoint(run_or_ckpt: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/final.pt`` (else ``latest.pt``)."""
    path = Path(run_or_ckpt).expanduser()
    if path.is_file():
        return path
    for candidate in (path / "checkpoints" / "final.pt", path / "checkpoints" / "latest.pt",
                      path / "final.pt", path / "latest.pt"):
        if candidate.is_file():
            return candidate
    raise PluginError(f"No checkpoint at {path} (looked for the file, checkpoints/final.pt and checkpoints/latest.pt).",
                      "Pass a pretraining output folder or a .pt checkpoint written by monai-ssl pretrain.")


def _bump(version: str) -> str:
    parts = str(version).split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return f"{parts[0]}.{parts[1]}.{int(parts[2]) + 1}"
    return str(version)


def _json(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def provenance(record: dict[str, Any], model_sha256: str, checkpoint: Path, network: dict[str, Any]) -> dict[str, Any]:
    """What a stranger needs to judge the weights: data, pretext + settings, steps, versions, hashes."""
    return _json({
        "data": record.get("data", {}),
        "pretext": record.get("pretext"),
        "pretext_settings": record.get("pretext_settings", {}),
        "steps": record.get("steps"),
        "backbone_family": record.get("backbone_family"),
        "backbone_kwargs": record.get("backbone_kwargs", {}),
        "patch_size": record.get("patch_size"),
        "spacing": record.get("spacing"),
        "axis_order": record.get("axis_order"),
        "normalization": record.get("normalization"),
        "plugin_version": software_versions()["monai_ssl_plugin"],
        "training_versions": record.get("versions", {}),
        "source_checkpoint": checkpoint.name,
        "parameters": int(sum(v.numel() for v in network.values() if hasattr(v, "numel"))),
        "hashes": {MODEL_FILE: {"sha256": model_sha256}},
        "model_sha256": model_sha256,
        "packaged_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    })


def _large_files_yaml(name: str, sha: str, url: str | None) -> str:
    url = url or URL_PLACEHOLDER.format(name=name)
    return ("large_files:\n"
            f'  - path: "{MODEL_FILE}"\n'
            f'    url: "{url}"\n'
            f'    hash_val: "{sha}"\n'
            '    hash_type: "sha256"\n')


def _write_zip(folder: Path, name: str, zip_path: Path) -> Path:
    """Zip ``folder`` as ``name/...`` into ``zip_path`` atomically (temporary file + rename)."""
    def write(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                zf.write(file, f"{name}/{file.relative_to(folder).as_posix()}")

    return atomic_write_stream(write, zip_path)


def _read_run(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record (as plain JSON) and network state of a plugin checkpoint; refuses anything else."""
    ckpt = safe_load(checkpoint)
    if "network" not in ckpt or "record" not in ckpt:
        raise PluginError(f"{checkpoint} has no 'network' and 'record' entries.",
                          "Package a checkpoint written by monai-ssl pretrain (RUN/checkpoints/final.pt).")
    return _json(ckpt["record"]), ckpt["network"]


def _bundle_name(name: str | None, src: Path, record: dict[str, Any]) -> str:
    """The zoo bundle name: the caller's, else ``<bundle>_<pretext>_<steps>steps``; one plain folder name."""
    name = name or f"{src.name}_{record.get('pretext', 'ssl')}_{record.get('steps', 0)}steps"
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise PluginError(f"Bundle name {name!r} is not a plain folder name.", "Use letters, digits, '_' and '-'.")
    return name


def _copy_bundle_files(src: Path, stage: Path) -> None:
    """The source bundle's configs, docs, licence and README: what the zoo expects next to the weights."""
    for item in ("configs", "docs", "LICENSE", "README.md"):
        if (src / item).is_dir():
            shutil.copytree(src / item, stage / item, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        elif (src / item).is_file():
            shutil.copy2(src / item, stage / item)


def _metadata(meta: dict[str, Any], name: str, version: str | None, changelog: str | None,
              record: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with the new version and changelog line, the schema and the versions the weights were made with."""
    version = str(version or _bump(meta.get("version", "0.1.0")))
    versions = {**software_versions(), **record.get("versions", {})}
    meta["version"] = version
    meta["changelog"] = {version: changelog or (
        f"pretrained weights: {record.get('pretext')} for {record.get('steps')} steps on "
        f"{record.get('data', {}).get('description') or record.get('data', {}).get('kind') or 'user data'}"),
        **meta.get("changelog", {})}
    meta.setdefault("schema", "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                              "meta_schema_20240725.json")
    meta["monai_version"] = versions.get("monai", meta.get("monai_version"))
    meta["pytorch_version"] = str(versions.get("torch", meta.get("pytorch_version"))).split("+")[0]
    meta["numpy_version"] = versions.get("numpy", meta.get("numpy_version"))
    meta.setdefault("required_packages_version", {})["monai-ssl-plugin"] = versions.get("monai_ssl_plugin")
    meta["name"] = name
    return meta


def _swap_into_place(stage: Path, target: Path) -> None:
    """Rename the staged folder to ``target``; an old ``target`` is moved aside first, then removed."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def package_bundle(run_or_ckpt: str | os.PathLike, bundle: str = "mae_ssl_pretraining", name: str | None = None,
                   out: str | os.PathLike = ".", version: str | None = None, changelog: str | None = None,
                   url: str | None = None, large_file_bytes: int = LARGE_FILE_BYTES) -> Path:
    """Package the weights of ``run_or_ckpt`` with ``bundle``'s configs; returns ``OUT/NAME.zip``.

    Args:
        run_or_ckpt: a pretraining output folder (uses ``checkpoints/final.pt``, else ``latest.pt``) or a checkpoint.
        bundle: the bundle the run used (name in ``bundles/`` or a folder).
        name: the zoo bundle name (folder and zip name); default ``<bundle>_<pretext>_<steps>steps``.
        out: where ``NAME/`` and ``NAME.zip`` are written (an existing ``NAME/`` is replaced).
        version: the bundle version; default the source bundle's version with the patch number bumped.
        changelog: the changelog line for this version (default: a line naming pretext and steps).
        url: the download URL of model.pt for ``large_files.yml`` (default: :data:`URL_PLACEHOLDER`).
        large_file_bytes: size above which ``large_files.yml`` is written (the zoo's 25 MB).
    """
    src = bundle_dir(bundle)
    checkpoint = resolve_checkpoint(run_or_ckpt)
    record, network = _read_run(checkpoint)
    name = _bundle_name(name, src, record)
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = out / name

    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".staging", dir=out))
    try:
        _copy_bundle_files(src, stage)
        model = atomic_save({"network": network, "record": record}, stage / MODEL_FILE)
        sha = sha256_file(model)
        meta_path = stage / "configs" / "metadata.json"
        meta = _metadata(json.loads(meta_path.read_text()) if meta_path.is_file() else {},
                         name, version, changelog, record)
        meta[PROVENANCE_KEY] = provenance(record, sha, checkpoint, network)
        atomic_write_text(json.dumps(meta, indent=4) + "\n", meta_path)
        if model.stat().st_size > large_file_bytes:
            atomic_write_text(_large_files_yaml(name, sha, url), stage / "large_files.yml")
        write_manifest(stage)  # last: it covers every file above
        _swap_into_place(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    zip_path = _write_zip(target, name, out / f"{name}.zip")
    logger.info("Packaged %s (model.pt sha256 %s) and %s.", target, sha, zip_path)
    return zip_path

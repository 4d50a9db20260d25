"""Install a shared bundle from a folder, a zip or a URL, verified before use.

Checks, in order (each failure is one-line :class:`PluginError`; nothing is left under ``DEST``,
not even a hidden copy):

1. ``--sha256`` given: the sha256 of the archive (zip / URL) or, for a folder, of ``models/model.pt``
   or ``manifest.json``.
2. zip members stay inside the destination: absolute paths, ``..`` components, drive letters and
   symbolic links are refused before anything is extracted; every member lives in one top folder
   ``NAME/``; a damaged member (CRC error, truncated data) refuses the archive. A folder source may
   hold no symbolic link (nothing outside it is ever copied).
3. every file matches ``manifest.json`` (:mod:`~monai_ssl_plugin.sharing.manifest`): configs, docs,
   metadata and weights; a changed, added or missing file refuses the bundle.
4. ``models/model.pt`` matches the sha256 in ``configs/metadata.json`` (``provenance.model_sha256``)
   and in ``large_files.yml`` when present.
5. ``models/model.pt`` loads with ``weights_only=True`` (:func:`~monai_ssl_plugin.checkpoint.safe_load`):
   pickled code is never executed.
6. the configs run no Python beyond the plugin's and MONAI's own
   (:mod:`~monai_ssl_plugin.sharing.config_code`) unless ``trust_code`` is given.

The bundle is unpacked into a hidden staging folder in ``DEST`` and renamed to ``DEST/NAME`` only
after every check passed. A full or read-only disk is one line too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from monai_ssl_plugin.checkpoint import safe_load, sha256_file
from monai_ssl_plugin.errors import PluginError, disk_error
from monai_ssl_plugin.sharing.config_code import foreign_code
from monai_ssl_plugin.sharing.manifest import MANIFEST_FILE, bundle_files, check_manifest
from monai_ssl_plugin.sharing.package import MODEL_FILE, PROVENANCE_KEY

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60


def _check_hex(sha256: str | None) -> str | None:
    if sha256 in (None, "", "null", "None"):
        return None
    value = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise PluginError(f"--sha256 {sha256!r} is not a sha256 hex digest.", "Pass the 64 hex digits the publisher gave.")
    return value


def _expect_hash(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise PluginError(f"{what} {path.name} fails its sha256 check (expected {expected[:16]}…, got {actual[:16]}…): "
                          "refusing a tampered or corrupt file.", "Download it again from the publisher.")


def _safe_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The members, after refusing any that would land outside the destination."""
    members = zf.infolist()
    for info in members:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        mode = info.external_attr >> 16
        if (name.startswith("/") or ".." in parts or (parts and re.match(r"^[A-Za-z]:", parts[0]))
                or stat.S_ISLNK(mode)):
            raise PluginError(f"Zip member {info.filename!r} would be written outside the destination "
                              "(path traversal or link): refusing the archive.", "Use an archive from a trusted publisher.")
    return members


def _bundle_root_of(folder: Path) -> Path:
    """The bundle folder given by the user: ``folder`` itself or its single child holding configs/."""
    if (folder / "configs").is_dir():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "configs").is_dir():
        return children[0]
    raise PluginError(f"{folder} does not hold a bundle (no NAME/configs/ folder).", "Install a zip made by monai-ssl package-bundle.")


def _zip_top_folder(members: list[zipfile.ZipInfo], archive: Path) -> str:
    """The one top-level folder every member of a bundle zip lives in (what package-bundle writes)."""
    tops = {PurePosixPath(m.filename.replace("\\", "/")).parts[0] for m in members if m.filename.strip("/")}
    nested = all(len(PurePosixPath(m.filename.replace("\\", "/")).parts) > 1 or m.is_dir() for m in members)
    if len(tops) != 1 or not nested:
        raise PluginError(f"{archive.name} has no single top-level bundle folder (found {sorted(tops)[:5]}).",
                          "Install a zip made by monai-ssl package-bundle (it unpacks to NAME/configs/...).")
    return tops.pop()


def verify_bundle(folder: str | os.PathLike, sha256: str | None = None) -> dict[str, Any]:
    """Check a bundle folder (every file against its manifest, the weights' hashes, then a
    ``weights_only`` load); returns its ``model.pt`` content.

    ``sha256`` (optional) is the expected digest of ``models/model.pt`` or of ``manifest.json``.
    The Python its configs run is listed by :func:`~monai_ssl_plugin.sharing.config_code.foreign_code`.
    """
    folder = Path(folder)
    model = folder / MODEL_FILE
    meta_path = folder / "configs" / "metadata.json"
    if not model.is_file() or not meta_path.is_file():
        raise PluginError(f"{folder} lacks {MODEL_FILE} or configs/metadata.json.", "Install a bundle made by monai-ssl package-bundle.")
    expected = _check_hex(sha256)
    check_manifest(folder)
    if expected and sha256_file(folder / MANIFEST_FILE) != expected:
        _expect_hash(model, expected, "Weights")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise PluginError(f"{meta_path} is not valid JSON ({e}).", "Download the bundle again.") from None
    recorded = _check_hex((meta.get(PROVENANCE_KEY) or {}).get("model_sha256"))
    large = folder / "large_files.yml"
    if large.is_file():
        for entry in (yaml.safe_load(large.read_text()) or {}).get("large_files", []):
            if entry.get("path") == MODEL_FILE and str(entry.get("hash_type", "")).lower() == "sha256":
                listed = _check_hex(entry.get("hash_val"))
                if recorded and listed and listed != recorded:
                    raise PluginError(f"{folder.name}: large_files.yml and metadata.json disagree on the sha256 of "
                                      f"{MODEL_FILE}: refusing.", "Download the bundle again from the publisher.")
                recorded = recorded or listed
    if not recorded and not expected:
        raise PluginError(f"{folder.name} carries no sha256 for {MODEL_FILE} and none was given: cannot verify it.",
                          "Pass --sha256 HEX from the publisher.")
    if recorded:
        _expect_hash(model, recorded, "Weights")
    state = safe_load(model)  # weights_only=True: a pickled payload is refused, never run
    if not isinstance(state, dict) or "network" not in state:
        raise PluginError(f"{model} holds no 'network' state dict.", "Install a bundle made by monai-ssl package-bundle.")
    return state


def load_shared_weights(folder: str | os.PathLike, sha256: str | None = None) -> dict[str, Any]:
    """The verified ``{"network": state dict, "record": dict}`` of an installed bundle."""
    return verify_bundle(folder, sha256)


def _download(url: str, directory: Path) -> Path:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise PluginError(f"Cannot install from {url!r}: only http(s):// and file:// URLs.", "Download it yourself and pass the file.")
    fd, tmp = tempfile.mkstemp(prefix=".download.", suffix=".zip", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
            shutil.copyfileobj(response, f)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError):
            raise PluginError(f"Cannot download {url} ({type(e).__name__}: {e}).", "Check the URL and the network.") from None
        raise
    return Path(tmp)


def _stage_folder(source: Path, stage: Path) -> Path:
    root = _bundle_root_of(source)
    bundle_files(root)  # refuses symbolic links: nothing outside the folder is ever copied
    shutil.copytree(root, stage / root.name, symlinks=True)  # links were refused; a new one stays a link (refused later)
    return stage / root.name


def _stage_zip(archive: Path, stage: Path, expected: str | None, text: str) -> Path:
    if expected:
        _expect_hash(archive, expected, "Archive")
    if not zipfile.is_zipfile(archive):
        raise PluginError(f"{text} is not a zip archive.", "Pass a zip made by monai-ssl package-bundle.")
    try:
        with zipfile.ZipFile(archive) as zf:
            members = _safe_members(zf)
            top = _zip_top_folder(members, archive)
            zf.extractall(stage, members=members)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise PluginError(f"{archive.name} is damaged ({type(e).__name__}: {str(e)[:120]}).",
                          "Download it again from the publisher.") from None
    root = stage / top
    if not (root / "configs").is_dir():
        raise PluginError(f"{archive.name}: {top}/ holds no configs/ folder.", "Install a zip made by monai-ssl package-bundle.")
    return root


def _swap_into_place(root: Path, dest: Path) -> Path:
    """Rename the verified ``root`` to ``dest/NAME``; an older ``NAME`` is moved aside, then removed
    (or put back if the rename fails), so no hidden copy outlives the call."""
    target = dest / root.name
    if not target.exists():
        os.replace(root, target)
        return target
    old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=dest))
    try:
        os.replace(target, old / root.name)
        try:
            os.replace(root, target)
        except BaseException:
            os.replace(old / root.name, target)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _check_code(root: Path, trust_code: bool) -> None:
    foreign = foreign_code(root)
    if foreign and not trust_code:
        shown = "; ".join(f"{where}: {code[:80]}" for where, code in foreign[:3]) + ("; ..." if len(foreign) > 3 else "")
        raise PluginError(f"{root.name} runs {len(foreign)} piece(s) of Python that neither the plugin nor MONAI "
                          f"ships ({shown}).", "Read them (monai-ssl verify-bundle FOLDER lists them all) and pass "
                          "--trust_code true only if you trust the publisher.")
    for where, code in foreign:
        logger.warning("Trusted by --trust_code: %s: %s", where, code)


def install_bundle(source: str | os.PathLike, dest: str | os.PathLike, sha256: str | None = None,
                   trust_code: bool = False) -> Path:
    """Install ``source`` (bundle folder, ``.zip`` file, or http(s)/file URL) as ``DEST/NAME``; returns it.

    ``sha256``: for a zip or URL the expected digest of the archive; for a folder that of
    ``models/model.pt`` or ``manifest.json``. The manifest (every file) and the digest recorded in
    the metadata are always checked. ``trust_code``: accept configs that run Python beyond the
    plugin's and MONAI's own (listed by ``verify-bundle``).
    """
    expected = _check_hex(sha256)
    dest = Path(dest).expanduser().resolve()
    text = str(source)
    downloaded = None
    try:
        dest.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".install.", suffix=".staging", dir=dest))
    except OSError as e:
        raise (disk_error(e) or e) from None
    try:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
            downloaded = archive = _download(text, dest)
        else:
            archive = Path(text).expanduser()
            if not archive.exists():
                raise PluginError(f"{archive} does not exist.", "Pass a bundle folder, a .zip or a URL.")
        root = _stage_folder(archive, stage) if archive.is_dir() else _stage_zip(archive, stage, expected, text)
        verify_bundle(root, expected if archive.is_dir() else None)  # the staged copy is what gets used
        _check_code(root, bool(trust_code))
        target = _swap_into_place(root, dest)
    except OSError as e:
        raise (disk_error(e) or e) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if downloaded is not None and downloaded.exists():
            downloaded.unlink()
    logger.info("Installed and verified %s.", target)
    return target

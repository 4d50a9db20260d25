"""Downloads: Hugging Face Hub (``huggingface_hub``, optional) or plain HTTPS, sha256-verified, atomic.

A download lands in a temporary file beside its final place and is renamed only after its sha256
matched; a failed or interrupted download leaves nothing that looks complete. Which sha256 is
expected, in order: the one the publisher gives (catalog), the one the Hub publishes for the file
(its LFS object id, when online), the one recorded at the first download (trust on first use).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretrained.catalog import PretrainedEntry

CHUNK = 1 << 20


def _offline_fix(entry: PretrainedEntry) -> str:
    return (f"Connect to the internet (or set HTTPS_PROXY), or download {entry.location} by hand and pass it: "
            f"`monai-ssl pretrained get {entry.name} --file PATH`.")


def _network_error(entry: PretrainedEntry, error: BaseException) -> PluginError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return PluginError(f"Cannot download {entry.name} from {entry.location} ({type(error).__name__}: {reason[:160]}).",
                       _offline_fix(entry))


def hub_sha256(entry: PretrainedEntry) -> str | None:
    """The sha256 the Hub publishes for an LFS file (``None`` for non-Hub entries or when the Hub cannot say)."""
    if entry.source != "hf":
        return None
    try:
        from huggingface_hub import HfApi
    except ImportError:
        return None
    try:
        infos = HfApi().get_paths_info(entry.repo_id, [entry.filename], revision=entry.revision)
    except Exception:  # offline or refused: the download itself reports the network problem
        return None
    lfs = getattr(infos[0], "lfs", None) if infos else None
    return getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)


def _fetch_hf(entry: PretrainedEntry, folder: Path) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise PluginError(f"{entry.name} is on the Hugging Face Hub and huggingface_hub is not installed.",
                          f"pip install huggingface_hub (the plugin's [hub] extra), or download {entry.location} by "
                          f"hand and pass it: `monai-ssl pretrained get {entry.name} --file PATH`.") from None
    try:
        return Path(hf_hub_download(repo_id=entry.repo_id, filename=entry.filename, revision=entry.revision,
                                    local_dir=folder))
    except (OSError, ValueError) as e:  # HfHubHTTPError and OfflineModeIsEnabled are OSErrors
        raise _network_error(entry, e) from None


def _fetch_https(entry: PretrainedEntry, folder: Path) -> Path:
    import urllib.request

    target = folder / entry.filename
    try:
        with urllib.request.urlopen(str(entry.url), timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, CHUNK)
    except OSError as e:  # URLError, HTTPError, timeouts and resets are OSErrors
        raise _network_error(entry, e) from None
    return target


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def mismatch_error(entry: PretrainedEntry, got: str, expected: str, source: str) -> PluginError:
    return PluginError(f"{entry.name}: the file's sha256 is {got}, expected {expected} ({source}); it was not used.",
                       f"Run `monai-ssl pretrained get {entry.name} --force` to download it again; if the hash still "
                       f"differs, the file changed upstream or in transit: check {entry.homepage or entry.location} (to trust a "
                       f"new file, delete its cache folder {entry.name}/ first).")


def place_verified(source: Path, final: Path, expected: str | None, entry: PretrainedEntry, expected_source: str,
                   move: bool) -> str:
    """Copy (or move) ``source`` to ``final`` atomically once its sha256 matches ``expected`` (if any); its sha256."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        (shutil.move if move else shutil.copyfile)(str(source), tmp)
        got = sha256_of(Path(tmp))
        if expected and got != expected.lower():
            raise mismatch_error(entry, got, expected, expected_source)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return got


def download(entry: PretrainedEntry, final: Path, expected: str | None, expected_source: str) -> str:
    """Fetch ``entry`` into ``final`` (sha256-checked, atomic); returns the file's sha256."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=final.parent) as folder:
        fetched = (_fetch_hf if entry.source == "hf" else _fetch_https)(entry, Path(folder))
        return place_verified(fetched, final, expected, entry, expected_source, move=True)

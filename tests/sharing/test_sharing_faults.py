"""Fault injection on shared bundles: crafted configs, malformed archives, links, full and read-only disks.

Every refusal is one line, and nothing is left in the destination (no bundle, no hidden copy).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.sharing import foreign_code, install_bundle, verify_bundle
from monai_ssl_plugin.sharing.manifest import write_manifest
from sharing_helpers import NAME

PAYLOAD = "x: \"$__import__('os').system('touch {marker}')\"\n"


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Fix:" in text
    return text


def _left_in(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.is_dir() else []


def test_every_file_is_covered_by_the_manifest(packaged, tmp_path):
    installed = install_bundle(packaged, tmp_path / "dest")
    for rel in ("configs/inference.yaml", "docs/README.md", "LICENSE", "configs/metadata.json"):
        copy = tmp_path / "copy"
        shutil.copytree(installed, copy)
        with open(copy / rel, "a") as f:
            f.write("\n# edited\n")
        with pytest.raises(PluginError, match="changed since packaging") as err:
            verify_bundle(copy)
        assert rel in _one_line(err)
        shutil.rmtree(copy)
    (installed / "configs" / "extra.yaml").write_text("a: 1\n")
    with pytest.raises(PluginError, match="added"):
        verify_bundle(installed)


def test_config_payload_is_refused_or_listed_never_run(packaged, tmp_path):
    marker = tmp_path / "pwned"
    installed = install_bundle(packaged, tmp_path / "dest")
    assert foreign_code(installed) == []  # the plugin's own configs need no trust
    with open(installed / "configs" / "inference.yaml", "a") as f:
        f.write(PAYLOAD.format(marker=marker))
    with pytest.raises(PluginError, match="changed since packaging"):
        verify_bundle(installed)
    write_manifest(installed)  # an attacker who also rewrites the manifest: the code is still named
    verify_bundle(installed)
    listed = foreign_code(installed)
    assert [w for w, _ in listed] == ["configs/inference.yaml:x"] and "system" in listed[0][1]
    with pytest.raises(PluginError, match="trust_code") as err:
        install_bundle(installed, tmp_path / "dest2")
    assert "inference.yaml:x" in _one_line(err) and _left_in(tmp_path / "dest2") == []
    assert install_bundle(installed, tmp_path / "dest3", trust_code=True).is_dir()
    assert not marker.exists()  # nothing of the config was evaluated by install or verify


def test_verify_cli_lists_the_foreign_code(packaged, tmp_path):
    installed = install_bundle(packaged, tmp_path / "dest")
    with open(installed / "configs" / "train.yaml", "a") as f:
        f.write("y:\n  _target_: subprocess.run\n  args: [ls]\n")
    write_manifest(installed)
    out = subprocess.run([sys.executable, "-m", "monai_ssl_plugin.cli", "verify-bundle", str(installed)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "runs: configs/train.yaml:y: _target_: subprocess.run" in out.stdout


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_without_top_folder_is_one_line_and_leaves_nothing(packaged, tmp_path):
    with zipfile.ZipFile(packaged) as zf:
        flat = {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}
    dest = tmp_path / "dest"
    with pytest.raises(PluginError, match="top-level bundle folder") as err:
        install_bundle(_zip(tmp_path / "flat.zip", flat), dest)
    _one_line(err)
    assert _left_in(dest) == []


def test_crc_error_is_one_line_and_leaves_nothing(packaged, tmp_path):
    with zipfile.ZipFile(packaged) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    bad = _zip(tmp_path / "bad.zip", members)
    data = bytearray(bad.read_bytes())
    pos = data.find(b"model") + 200  # inside the stored bytes of a member, not a header
    data[pos] ^= 0xFF
    bad.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    install_bundle(packaged, dest)  # an older copy in place must survive the failed install
    with pytest.raises(PluginError) as err:
        install_bundle(bad, dest)
    assert "damaged (BadZipFile: Bad CRC-32" in _one_line(err)
    assert _left_in(dest) == [NAME]
    verify_bundle(dest / NAME)


def test_reinstall_leaves_no_hidden_copy(packaged, tmp_path):
    dest = tmp_path / "dest"
    for _ in range(3):
        install_bundle(packaged, dest)
    assert _left_in(dest) == [NAME]


def test_folder_with_a_link_is_refused(packaged, tmp_path):
    installed = install_bundle(packaged, tmp_path / "dest")
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    os.symlink(secret, installed / "docs" / "notes.txt")
    with pytest.raises(PluginError, match="symbolic link") as err:
        install_bundle(installed, tmp_path / "dest2")
    _one_line(err)
    assert _left_in(tmp_path / "dest2") == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_full_or_read_only_disk_is_one_line(packaged, tmp_path, monkeypatch, code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "dest" / NAME))

    monkeypatch.setattr(zipfile.ZipFile, "extractall", fail)
    dest = tmp_path / "dest"
    with pytest.raises(PluginError, match="Cannot write") as err:
        install_bundle(packaged, dest)
    _one_line(err)
    assert _left_in(dest) == []


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_real_full_or_read_only_disk_via_the_cli(packaged, tmp_path, fault):
    """`monai-ssl install-bundle` onto a small tmpfs that is full, or mounted read-only."""
    from fault_fs import fill, small_filesystem

    with small_filesystem(tmp_path / "fs", size_kb=64, read_only=fault == "read-only") as fs:
        if fault == "full":
            fill(fs)
        dest = fs / "dest" if fault == "full" else fs
        out = subprocess.run([sys.executable, "-m", "monai_ssl_plugin.cli", "install-bundle", str(packaged),
                              "--dest", str(dest)], capture_output=True, text=True, timeout=600)
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and "monai-ssl: error: Cannot write" in out.stderr
        assert ("no space left" if fault == "full" else "read-only") in out.stderr
        assert _left_in(dest) in ([], ["filler"])

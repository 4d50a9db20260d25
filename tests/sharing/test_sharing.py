"""Sharing: package a run as a zoo bundle, install it from a folder / zip / URL, verified; refuse
tampered files, path-traversal archives and pickled code; `python -m monai.bundle download --url`."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from monai_ssl_plugin.checkpoint import atomic_save, safe_load, sha256_file
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.sharing import URL_PLACEHOLDER, install_bundle, package_bundle, verify_bundle
from monai_ssl_plugin.sharing.manifest import write_manifest

from sharing_helpers import NAME, _record


def test_package_writes_a_zoo_bundle(packaged, tmp_path):
    folder = packaged.parent / NAME
    assert packaged.name == f"{NAME}.zip" and folder.is_dir()
    assert (folder / "configs" / "train.yaml").is_file() and (folder / "configs" / "inference.yaml").is_file()
    model = safe_load(folder / "models" / "model.pt")  # weights_only
    assert set(model) == {"network", "record"} and model["record"]["steps"] == 8
    assert torch.equal(model["network"]["encoder.w"], safe_load(tmp_path / "run/checkpoints/final.pt")["network"]["encoder.w"])
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.2.1" and "0.2.1" in meta["changelog"] and "0.2.0" in meta["changelog"]
    assert meta["schema"].endswith(".json") and meta["monai_version"] and meta["pytorch_version"]
    prov = meta["provenance"]
    assert prov["model_sha256"] == sha256_file(folder / "models" / "model.pt")
    assert prov["pretext"] == "mae" and prov["pretext_settings"]["mask_ratio"] == 0.75 and prov["steps"] == 8
    assert prov["data"]["description"] == "6 synthetic MRI volumes" and prov["plugin_version"] == "0.1.0"
    assert not (folder / "large_files.yml").exists()  # a few bytes of weights
    with zipfile.ZipFile(packaged) as zf:
        names = zf.namelist()
    assert all(n.startswith(f"{NAME}/") for n in names) and f"{NAME}/models/model.pt" in names
    assert not [p for p in packaged.parent.iterdir() if p.name.startswith(".")]  # no staging / temp left


def test_large_files_yml_above_threshold(run_dir, tmp_path):
    zip_path = package_bundle(run_dir, name=NAME, out=tmp_path / "big", large_file_bytes=16)
    text = (zip_path.parent / NAME / "large_files.yml").read_text()
    import yaml

    entry = yaml.safe_load(text)["large_files"][0]
    sha = sha256_file(zip_path.parent / NAME / "models" / "model.pt")
    assert entry == {"path": "models/model.pt", "url": URL_PLACEHOLDER.format(name=NAME), "hash_val": sha,
                     "hash_type": "sha256"}


def test_install_from_folder_and_zip_verifies(packaged, tmp_path):
    folder = packaged.parent / NAME
    a = install_bundle(folder, tmp_path / "dest_a")
    b = install_bundle(packaged, tmp_path / "dest_b", sha256=sha256_file(packaged))
    for target in (a, b):
        assert target.name == NAME and verify_bundle(target)["record"]["pretext"] == "mae"
        assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]
    with pytest.raises(PluginError, match="sha256"):
        install_bundle(packaged, tmp_path / "dest_c", sha256="0" * 64)
    assert not (tmp_path / "dest_c" / NAME).exists()


def test_tampered_weights_are_refused(packaged, tmp_path):
    installed = install_bundle(packaged, tmp_path / "dest")
    model = installed / "models" / "model.pt"
    data = bytearray(model.read_bytes())
    data[-40] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(PluginError) as err:
        verify_bundle(installed)
    assert "tampered" in str(err.value) and "\n" not in str(err.value)
    # a tampered zip (model.pt swapped, metadata untouched) is refused and nothing is installed
    bad_zip = tmp_path / "bad.zip"
    with zipfile.ZipFile(packaged) as src, zipfile.ZipFile(bad_zip, "w") as dst:
        for info in src.infolist():
            payload = src.read(info)
            if info.filename.endswith("model.pt"):
                payload = model.read_bytes()
            dst.writestr(info, payload)
    with pytest.raises(PluginError, match="tampered"):
        install_bundle(bad_zip, tmp_path / "dest2")
    assert not (tmp_path / "dest2" / NAME).exists()


def test_zip_path_traversal_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr(f"{NAME}/configs/metadata.json", "{}")
        zf.writestr("../escaped.txt", "gotcha")
    with pytest.raises(PluginError, match="outside the destination"):
        install_bundle(evil, tmp_path / "dest" / "inner")
    assert not (tmp_path / "dest" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    abs_zip = tmp_path / "abs.zip"
    with zipfile.ZipFile(abs_zip, "w") as zf:
        zf.writestr("/tmp/escaped_abs.txt", "gotcha")
    with pytest.raises(PluginError, match="outside the destination"):
        install_bundle(abs_zip, tmp_path / "dest")


class _Payload:
    """Pickled code: unpickling it would create a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused(packaged, tmp_path):
    marker = tmp_path / "pwned"
    installed = install_bundle(packaged, tmp_path / "dest")
    model = installed / "models" / "model.pt"
    torch.save({"network": {"w": torch.zeros(1)}, "record": _Payload(marker)}, model)
    # the attacker also rewrites the recorded hash, so only weights_only loading stands in the way
    meta_path = installed / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["provenance"]["model_sha256"] = sha256_file(model)
    meta_path.write_text(json.dumps(meta))
    write_manifest(installed)  # and the manifest
    with pytest.raises(PluginError, match="safely"):
        verify_bundle(installed)
    with pytest.raises(PluginError, match="safely"):
        install_bundle(installed, tmp_path / "dest2")
    with pytest.raises(PluginError, match="safely"):
        safe_load(model)
    assert not marker.exists()  # the payload never ran


@pytest.fixture
def http_server(packaged):
    """A loopback HTTP server over the packaging folder, in a thread; stops itself after the test."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(packaged.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 1
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    timer = threading.Timer(120, server.shutdown)  # bounded even if the test hangs
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_monai_bundle_download_from_loopback_then_verify(packaged, http_server, tmp_path):
    url = f"{http_server}/{NAME}.zip"
    bundle_dir = tmp_path / "downloaded"
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "download", "--name", NAME, "--url", url,
                           "--bundle_dir", str(bundle_dir), "--progress", "False"],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (bundle_dir / NAME / "models" / "model.pt").is_file()
    assert verify_bundle(bundle_dir / NAME)["record"]["steps"] == 8
    installed = install_bundle(bundle_dir / NAME, tmp_path / "installed")
    assert (installed / "configs" / "train.yaml").is_file()
    # the installer's own URL path (http and file://), with the archive digest
    via_url = install_bundle(url, tmp_path / "via_url", sha256=sha256_file(packaged))
    via_file = install_bundle(packaged.resolve().as_uri(), tmp_path / "via_file")
    assert verify_bundle(via_url) and verify_bundle(via_file)
    with pytest.raises(PluginError, match="sha256"):
        install_bundle(url, tmp_path / "via_url_bad", sha256="f" * 64)

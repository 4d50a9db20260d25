"""Downloads with the transport mocked at the boundary (``huggingface_hub``, ``urllib``): sha256 policy,
cache reuse, atomicity, and one-line errors for a bad name, no network or a hash mismatch."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from monai_ssl_plugin.cli import main
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretrained import CATALOG, get, get_entry
from monai_ssl_plugin.pretrained.cache import ENV_HOME, read_provenance

from published_layouts import write_model_swinvit, write_openmind, write_primus, write_voco_head


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv(ENV_HOME, str(home))
    return home


def leftovers(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file() and (p.name.endswith(".tmp") or "original" in p.parts)]


def fake_urlopen(payload: bytes, calls: list[str]):
    def urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(payload)
    return urlopen


def test_https_entry_trusts_first_use_then_reuses_the_cache_and_refuses_a_changed_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_home: Path):
    published, _ = write_model_swinvit(tmp_path / "model_swinvit.pt")
    data, calls = published.read_bytes(), []
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(data, calls))
    first = get("monai-swinunetr-ssl", log=None)
    prov = read_provenance("monai-swinunetr-ssl")
    assert calls == [get_entry("monai-swinunetr-ssl").url]
    assert prov["sha256"] == hashlib.sha256(data).hexdigest() and "trust on first use" in prov["sha256_source"]
    assert get("monai-swinunetr-ssl", log=None) == first and len(calls) == 1  # cached: no network
    first.write_bytes(b"torn")  # a damaged converted file is converted again from the verified original, offline
    assert get("monai-swinunetr-ssl", log=None) == first and len(calls) == 1
    assert "network" in torch.load(first, weights_only=True)
    changed, _ = write_model_swinvit(tmp_path / "other.pt")
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(changed.read_bytes(), calls))
    with pytest.raises(PluginError, match="recorded at the first download") as err:
        get("monai-swinunetr-ssl", file=str(changed), log=None)
    assert "\n" not in str(err.value) and "--force" in str(err.value)
    assert not [p for p in cache_home.rglob("*.tmp")]


def test_hub_entry_is_checked_against_the_hubs_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      cache_home: Path):
    import huggingface_hub

    published, _ = write_voco_head(tmp_path / "VoCo_B_SSL_head.pt")
    data = published.read_bytes()
    hub_sha = {"value": hashlib.sha256(data).hexdigest()}
    requested = []

    def hf_hub_download(repo_id, filename, revision=None, local_dir=None):
        requested.append((repo_id, filename))
        (Path(local_dir) / filename).write_bytes(data)
        return str(Path(local_dir) / filename)

    def get_paths_info(self, repo_id, paths, revision=None):
        return [SimpleNamespace(path=paths[0], lfs=SimpleNamespace(sha256=hub_sha["value"]))]

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", get_paths_info)
    get("voco-b-ssl", log=None)
    assert requested == [("Luffy503/VoCo", "VoCo_B_SSL_head.pt")]
    assert read_provenance("voco-b-ssl")["sha256_source"] == "published by the Hugging Face Hub for this file"
    hub_sha["value"] = "0" * 64  # the Hub now publishes another file: the download must not be used
    with pytest.raises(PluginError, match="expected 0000") as err:
        get("voco-b-ssl", force=True, log=None)
    assert "\n" not in str(err.value)
    assert not [p for p in cache_home.rglob("*.tmp")]


def test_no_network_is_one_line_with_the_manual_route(monkeypatch: pytest.MonkeyPatch, cache_home: Path):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(PluginError) as err:
        get("monai-swinunetr-ssl", log=None)
    message = str(err.value)
    assert "Cannot download monai-swinunetr-ssl" in message and "--file PATH" in message and "\n" not in message
    assert leftovers(cache_home) == []


def test_cli_bad_name_and_bad_action_are_one_line(capsys: pytest.CaptureFixture):
    for argv, expected in ((["pretrained", "get", "voco-b"], "Did you mean voco-b-ssl?"),
                           (["pretrained", "fetch"], "not an action")):
        with pytest.raises(SystemExit) as code:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert code.value.code == 2 and expected in err and len(err.splitlines()) == 1
    main(["pretrained", "list"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in CATALOG)


def test_catalog_states_provenance_and_invents_no_hash():
    for entry in CATALOG.values():
        assert entry.paper and entry.data and entry.licence and entry.architecture and entry.key_map, entry.name
        assert entry.location.startswith("https://"), entry.name
        assert entry.sha256 is None  # no publisher of these files gives one: the policy must say so
        assert "no sha256 published" in entry.hash_policy


def printed(out: str) -> list[str]:
    """What the command printed, without the progress lines logged before it."""
    return [line for line in out.splitlines() if not line.startswith("[monai-ssl]")]


def test_primus_entry_is_downloaded_verified_converted_and_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_home: Path, capsys: pytest.CaptureFixture):
    import huggingface_hub

    published, plan = write_primus(tmp_path / "checkpoint_final.pth")
    data, requested = published.read_bytes(), []

    def hf_hub_download(repo_id, filename, revision=None, local_dir=None):
        requested.append((repo_id, filename))
        (Path(local_dir) / filename).write_bytes(data)
        return str(Path(local_dir) / filename)

    def get_paths_info(self, repo_id, paths, revision=None):
        return [SimpleNamespace(path=paths[0], lfs=SimpleNamespace(sha256=hashlib.sha256(data).hexdigest()))]

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", get_paths_info)
    main(["pretrained", "get", "openmind-primusm-simmim"])
    out = capsys.readouterr().out
    assert requested == [("AnonRes/PrimusM-OpenMind-SimMIM", "checkpoint_final.pth")]
    path = Path(printed(out)[0])
    assert path == cache_home / "openmind-primusm-simmim" / "converted.pt"
    assert "-tr nnUNetTrainerSSL" in out and f"monai-ssl nnunet-plans DATASET --checkpoint {path}" in out
    assert "-tr PretrainedTrainer_Primusx" in out  # the original still serves nnU-Net master
    prov = read_provenance("openmind-primusm-simmim")
    assert prov["sha256"] == hashlib.sha256(data).hexdigest() and prov["converted"] == str(path)
    main(["pretrained", "get", "openmind-primusm-simmim"])  # cached: no second download
    assert len(requested) == 1 and Path(printed(capsys.readouterr().out)[0]) == path
    main(["pretrained", "info", "openmind-primusm-simmim"])
    info = capsys.readouterr().out
    assert "converted:" in info and "once, into the plugin's checkpoint" in info and "PretrainedTrainer_Primusx" in info
    assert plan["architecture_plans"]["arch_class_name"] == "PrimusM" and plan["key_to_encoder"] == "eva"


def test_a_resencl_file_offered_as_primus_is_refused_in_one_line(tmp_path: Path, cache_home: Path):
    path, _ = write_openmind(tmp_path / "checkpoint_final.pth", "MAE")
    with pytest.raises(PluginError) as err:
        get("openmind-primusm-simmim", file=str(path), log=None)
    assert "names 'ResEncL', the catalog 'PrimusM'" in str(err.value) and "\n" not in str(err.value)
    assert not read_provenance("openmind-primusm-simmim").get("verified")

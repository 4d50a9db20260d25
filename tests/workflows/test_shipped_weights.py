from pathlib import Path

import pytest
import torch
import yaml

from monai_ssl_plugin.checkpoint import sha256_file
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.workflows.shipped_weights import (MODEL_FILE, load_shipped_weights, verified_model_file,
                                                        write_shipped_weights)


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    ckpt = tmp_path / "final.pt"
    torch.save({"network": {"w": torch.arange(4.0)}, "optimizer": {"state": {}}, "record": {"pretext": "mae", "data": {
        "case_counts": {"imagesTr": 3}}}}, ckpt)
    bundle = tmp_path / "bundle"
    write_shipped_weights(ckpt, bundle, {"command": "monai-ssl demo-weights --steps 5", "steps": 5})
    return bundle


def test_written_file_holds_network_and_record_with_provenance_and_its_sha256(shipped: Path):
    data = load_shipped_weights(shipped)
    assert set(data) == {"network", "record"}  # optimizer state stripped
    assert torch.equal(data["network"]["w"], torch.arange(4.0))
    assert data["record"]["data"]["provenance"]["command"] == "monai-ssl demo-weights --steps 5"
    assert data["record"]["data"]["case_counts"] == {"imagesTr": 3}
    entries = yaml.safe_load((shipped / "large_files.yml").read_text())["large_files"]
    assert entries == [{"path": MODEL_FILE, "hash_val": sha256_file(shipped / MODEL_FILE), "hash_type": "sha256"}]


def test_a_changed_file_is_refused(shipped: Path):
    path = shipped / MODEL_FILE
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(PluginError, match="was changed or damaged"):
        verified_model_file(shipped)


def test_a_bundle_without_a_listed_hash_is_refused(shipped: Path):
    (shipped / "large_files.yml").write_text("large_files: []\n")
    with pytest.raises(PluginError, match="lists no sha256"):
        load_shipped_weights(shipped)

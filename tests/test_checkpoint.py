import os

import pytest
import torch

from monai_ssl_plugin.checkpoint import CheckpointRecord, atomic_save, safe_load, sha256_file
from monai_ssl_plugin.errors import PluginError


def test_atomic_save_roundtrip_and_no_temp_files(tmp_path):
    path = atomic_save({"w": torch.arange(3)}, tmp_path / "a" / "ckpt.pt")
    assert torch.equal(safe_load(path)["w"], torch.arange(3))
    assert os.listdir(path.parent) == ["ckpt.pt"]


def test_crash_during_save_keeps_previous_file(tmp_path, monkeypatch):
    path = atomic_save({"w": torch.zeros(2)}, tmp_path / "ckpt.pt")
    before = sha256_file(path)

    def torn_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError):
        atomic_save({"w": torch.ones(2)}, path)
    assert sha256_file(path) == before
    assert os.listdir(tmp_path) == ["ckpt.pt"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_safe_load_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": _Evil()}, path)
    with pytest.raises(PluginError, match="cannot load|Cannot load"):
        safe_load(path)


def test_safe_load_missing_and_truncated(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        safe_load(tmp_path / "nope.pt")
    good = atomic_save({"w": torch.randn(100)}, tmp_path / "g.pt")
    (tmp_path / "t.pt").write_bytes(good.read_bytes()[:50])
    with pytest.raises(PluginError, match="corrupt"):
        safe_load(tmp_path / "t.pt")


def test_record_rejects_unknown_axis_order():
    with pytest.raises(PluginError, match="axis order"):
        CheckpointRecord("f", {}, 1, 3, "xyz", None, [], [32] * 3, "mae", {}, {}, [])


def test_record_survives_weights_only_roundtrip(tmp_path):
    from monai_ssl_plugin.backbones import create_backbone
    from monai_ssl_plugin.checkpoint import build_record
    from monai_ssl_plugin.pretext import create_pretext

    backbone = create_backbone("nnunet_plain_tiny")
    record = build_record(backbone, create_pretext("mae", backbone=backbone), {"axis_order": "nnunet"}, [32, 32, 32])
    path = atomic_save({"record": record.to_dict()}, tmp_path / "r.pt")
    back = CheckpointRecord.from_dict(safe_load(path)["record"])
    assert back == record and back.pretrained_parts == ["stem", "encoder", "decoder"]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    path = atomic_save({"w": torch.zeros(1)}, tmp_path / "p.pt")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

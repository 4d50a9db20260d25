"""The benchmark file the recommender reads: written by the benchmark, merged, used for time/memory.

Every test uses its own tmp measured file, never the packaged one, so none depends on the
benchmark's figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.guide import load_measured, load_rules, recommend
from monai_ssl_plugin.guide.measured import HEADER, write_measured
from monai_ssl_plugin.guide.recommender import format_duration, registry_backbone

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "/nonexistent/measured.yaml"
QUERY = dict(modality="mri", task="segmentation", n_labelled=10, n_unlabelled=500, device="cpu", top_k=17)


def _entry(patch, batch, vps, mem, backbone="nnunet_plain_small", device="cpu", **extra):
    return {"device": device, "patch": list(patch), "batch": batch, "volumes_per_s": vps, "peak_mem_mb": mem,
            "backbone": backbone, **extra}


def _plan():
    """The recommender's own settings per bundle (what a 'matching' measurement must match)."""
    return {it.bundle: it for it in recommend(**QUERY, measured_path=NOWHERE).items}


def test_writer_merges_replaces_and_round_trips(tmp_path: Path):
    path = tmp_path / "measured.yaml"
    write_measured({"rotation": [_entry((32,) * 3, 2, 2.5, 1000.0, command="first")]}, path)
    assert path.read_text().startswith(HEADER)  # generated-file header naming the command
    write_measured({"rotation_ssl_pretraining": [
        _entry((32,) * 3, 2, 3.0, 1100.0, command="second"),          # same key: replaces
        _entry((32,) * 3, 2, 9.0, 500.0, backbone="nnunet_plain_tiny"),  # other backbone: kept beside it
        _entry((64,) * 3, 2, 0.4, 2000.0)]}, path)                    # other patch: added
    write_measured({"mae": [_entry((64,) * 3, 2, 0.1, 4000.0, backbone="nnunet_resenc_l")]}, path)

    got = load_measured(path)
    assert set(got) == {"rotation_ssl_pretraining", "mae_ssl_pretraining"}
    rot = got["rotation_ssl_pretraining"]
    assert len(rot) == 3
    small32 = [e for e in rot if e["backbone"] == "nnunet_plain_small" and e["patch"] == [32, 32, 32]]
    assert len(small32) == 1 and small32[0]["volumes_per_s"] == 3.0 and small32[0]["command"] == "second"
    assert {e["volumes_per_s"] for e in rot} == {3.0, 9.0, 0.4}
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write leaves no temporary file


def test_writer_refuses_incomplete_or_failed_cells(tmp_path: Path):
    path = tmp_path / "measured.yaml"
    with pytest.raises(PluginError, match="lacks peak_mem_mb"):
        write_measured({"mae": [{"device": "cpu", "patch": [32] * 3, "batch": 2, "volumes_per_s": 1.0}]}, path)
    with pytest.raises(PluginError, match="non-positive"):
        write_measured({"mae": [_entry((32,) * 3, 2, 0.0, 100.0)]}, path)
    assert not path.exists()


def test_recommend_copies_matching_and_closest_figures(tmp_path: Path):
    plan = _plan()
    genesis, simclr = plan["models_genesis_ssl_pretraining"], plan["simclr_ssl_pretraining"]
    gb = registry_backbone(genesis.backbone)
    path = tmp_path / "measured.yaml"
    write_measured({
        "models_genesis_ssl_pretraining": [_entry(genesis.settings.patch, genesis.settings.batch, 4.0, 1234.5,
                                                  backbone=gb)],
        "simclr_ssl_pretraining": [_entry((32,) * 3, 2, 2.0, 999.0, backbone=registry_backbone(simclr.backbone))],
    }, path)
    items = {it.bundle: it for it in recommend(**QUERY, measured_path=path).items}

    e = items["models_genesis_ssl_pretraining"].estimate
    assert e.status == "measured" and (e.volumes_per_s, e.peak_mem_mb, e.backbone) == (4.0, 1234.5, gb)
    hours = genesis.settings.steps * genesis.settings.batch / 4.0 / 3600.0
    assert e.hours_for_steps == pytest.approx(hours, abs=1e-4)
    assert format_duration(hours) in e.text and "min" in e.text

    o = items["simclr_ssl_pretraining"].estimate
    assert o.status == "measured_other" and o.patch == (32, 32, 32) and o.batch == 2
    assert (o.volumes_per_s, o.peak_mem_mb) == (2.0, 999.0)
    assert "closest measurement" in o.text and "32x32x32" in o.text
    assert o.hours_for_steps == pytest.approx(simclr.settings.steps * 2 / 2.0 / 3600.0, abs=1e-4)
    assert items["dino_ssl_pretraining"].estimate.status == "not_measured"


def test_estimate_prefers_the_recommended_backbone(tmp_path: Path):
    plan = _plan()["rotation_ssl_pretraining"]
    default = registry_backbone(load_rules()["bundles"]["rotation_ssl_pretraining"]["default_backbone"])
    assert default == registry_backbone(plan.backbone) == "nnunet_plain_small"
    path = tmp_path / "measured.yaml"
    # another backbone measured at exactly the planned setting, the default one only at patch 32
    write_measured({"rotation": [_entry(plan.settings.patch, plan.settings.batch, 50.0, 100.0, backbone="monai_resnet10"),
                                 _entry((32,) * 3, 2, 3.0, 800.0, backbone=default)]}, path)
    e = {it.bundle: it for it in recommend(**QUERY, measured_path=path).items}["rotation_ssl_pretraining"].estimate
    assert e.status == "measured_other" and e.backbone == default and e.volumes_per_s == 3.0

    # only another backbone measured: reported, labelled as not the recommended one, never "measured"
    only = tmp_path / "other.yaml"
    write_measured({"rotation": [_entry(plan.settings.patch, plan.settings.batch, 50.0, 100.0,
                                        backbone="monai_resnet10")]}, only)
    e = {it.bundle: it for it in recommend(**QUERY, measured_path=only).items}["rotation_ssl_pretraining"].estimate
    assert e.status == "measured_other" and e.backbone == "monai_resnet10"
    assert "not on the recommended nnunet_plain_small" in e.text


@pytest.mark.parametrize("hours, text", [(0.004, "under 1 min"), (0.5, "about 30 min"), (2.26, "about 2 h 16 min")])
def test_format_duration(hours: float, text: str):
    assert format_duration(hours) == text


def test_cli_reports_measured_figures(tmp_path: Path):
    plan = _plan()
    path = tmp_path / "measured.yaml"
    measured = {b: [_entry((32,) * 3, 2, 1.5, 777.0, backbone=registry_backbone(plan[b].backbone))]
                for b in ("mae_ssl_pretraining", "models_genesis_ssl_pretraining")}
    write_measured(measured, path)
    args = ["recommend", "--modality", "MRI", "--task", "segmentation", "--n_labelled", "10", "--n_unlabelled",
            "500", "--top_k", "17"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "monai_ssl_plugin.cli", *args, "--measured", str(path)],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=True).stdout
    table = out.split("\nWhy:")[0]
    rows = {ln.split()[1]: ln for ln in table.splitlines() if ln[:2].strip().isdigit()}
    assert len(rows) == 17
    for bundle in measured:
        assert "not measured yet" not in rows[bundle] and "777 MB*" in rows[bundle]
    assert "not measured yet" in rows["dino_ssl_pretraining"]
    assert "closest measurement: 1.5 volumes/s, peak 777 MB on cpu (nnunet_resenc_l) at patch 32x32x32" in out


def test_benchmark_writes_only_measured_cells(tmp_path: Path):
    """The real benchmark script: one measured cell is merged in, a refused one (ResEnc-L at 32^3) is not."""
    path = tmp_path / "measured.yaml"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "benchmarks/bench_pretexts.py", "--bundles", "rotation,mae", "--patch", "32",
                           "--steps", "1", "--write-measured", str(path)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused" in proc.stdout  # mae's default backbone, ResEnc-L, cannot downsample a 32^3 patch
    got = load_measured(path)
    assert list(got) == ["rotation_ssl_pretraining"]
    (e,) = got["rotation_ssl_pretraining"]
    assert e["backbone"] == "nnunet_plain_small" and e["patch"] == [32, 32, 32] and e["threads"] == 1
    assert e["volumes_per_s"] > 0 and e["peak_mem_mb"] > 0 and e["host_cpus"] == os.cpu_count()
    assert len(e["load_avg"]) == 3 and e["date"].endswith("Z")
    assert "--bundles rotation_ssl_pretraining" in e["command"] and "--write-measured" in e["command"]

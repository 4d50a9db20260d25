"""bench_loader: the plugin's data path and nnU-Net's loader on the same files, tiny sizes."""

from __future__ import annotations

import json

import bench_loader
import pytest


def test_workers_needed_is_the_batch_time_over_the_step() -> None:
    assert bench_loader.workers_needed(50.0, 2, 100.0) == 1  # 100 ms of data per 100 ms step
    assert bench_loader.workers_needed(50.0, 4, 100.0) == 2
    assert bench_loader.workers_needed(1.0, 2, 1000.0) == 1  # never fewer than one worker
    assert bench_loader.workers_needed(300.0, 2, 100.0) == 6


def test_every_bundle_has_a_published_patch_and_a_tiny_one() -> None:
    from monai_ssl_plugin.bundles import list_bundles

    pretraining = {b for b in list_bundles() if b.endswith("_ssl_pretraining")}
    assert pretraining <= set(bench_loader.BUNDLES)
    for patch, batch, _, _ in bench_loader.BUNDLES.values():
        assert len(patch) == 3 and batch >= 1
        assert all(8 <= t <= p for t, p in zip(bench_loader.tiny(patch), patch))


def test_tiny_run_times_every_column_on_the_same_files(tmp_path) -> None:
    out = tmp_path / "loader.json"
    assert bench_loader.main(["--tiny", "--only", "mae_ssl_pretraining", "--repeats", "1", "--cases", "2",
                              "--step-ms", "1", "1000", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["patch"] == [20, 20, 20] and result["batch"] == 2
    assert set(result["ms_per_patch"]) == set(bench_loader.COLUMNS)
    assert all(v > 0 for v in result["ms_per_patch"].values())
    assert set(result["cpu_ms_per_patch"]) == set(bench_loader.COLUMNS)
    # a 1 ms step needs at least as many workers as a 1 s step
    assert result["workers"]["1.0"] >= result["workers"]["1000.0"] >= 1


def test_written_data_reads_back_identically_in_both_formats(tmp_path) -> None:
    from monai_ssl_plugin.data.sources import NiftiFolderSource, NnUNetPreprocessedSource

    pre, nifti = bench_loader.write_data(tmp_path, (12, 10, 8), (8, 8, 8), cases=2)
    a, b = NnUNetPreprocessedSource(pre), NiftiFolderSource(nifti)
    assert len(a) == len(b) == 2
    va, vb = a.load(1), b.load(1)
    assert va.shape == vb.shape == (1, 12, 10, 8)
    assert va == pytest.approx(vb, abs=1e-4)  # both z-scored: the same volume

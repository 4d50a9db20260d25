"""Streaming a dataset of many small volumes with a bounded memory footprint.

    python benchmarks/bench_streaming.py [--cases 3000] [--size 16] [--samples 3000] [--folder DIR]

Generates ``--cases`` NIfTI volumes of ``--size``³ voxels (once, in ``--folder``), opens them as a
``NiftiFolderSource`` (only the first 64 headers are read at open), and draws ``--samples`` random
patches through ``RandomPatchDataset`` (the loader's dataset) in a fresh process per cache
setting: the bounded LRU cache (``cache_size=16``, the default) and a cache as large as the
dataset (what keeping everything in memory costs). Reports the resident set size after opening,
at every 20% of the samples, and the peak (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import rss_mb


def generate(folder: Path, cases: int, size: int) -> Path:
    import nibabel as nib
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(cases):
        path = folder / f"case_{i:05d}.nii.gz"
        if not path.exists():
            vol = rng.standard_normal((size, size, size)).astype(np.float32)
            nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return folder


def measure(folder: Path, size: int, samples: int, cache: int) -> dict:
    import torch

    from monai_ssl_plugin.data.dataset import RandomPatchDataset
    from monai_ssl_plugin.data.sources import NiftiFolderSource

    torch.set_num_threads(1)
    start = rss_mb()
    t = time.perf_counter()
    source = NiftiFolderSource(folder)
    opened = rss_mb()
    open_s = time.perf_counter() - t
    patch = [size] * 3
    ds = RandomPatchDataset(source, patch, num_samples=samples, seed=0, cache_size=cache)
    trace = []
    t = time.perf_counter()
    for i in range(samples):
        ds[i]
        if (i + 1) % max(1, samples // 5) == 0:
            trace.append(round(rss_mb(), 1))
    return {"cases": len(source), "cache_size": cache, "rss_start_mb": round(start, 1), "rss_opened_mb": round(opened, 1),
            "open_s": round(open_s, 2), "rss_trace_mb": trace, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "samples": samples, "samples_per_s": round(samples / (time.perf_counter() - t), 1),
            "cached_volumes": len(ds._cache)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=3000)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "monai_ssl_streaming_bench"))
    ap.add_argument("--cache", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    folder = Path(a.folder) / f"{a.cases}x{a.size}"
    if a.cache is not None:
        print(json.dumps(measure(folder, a.size, a.samples, a.cache)))
        return
    t = time.perf_counter()
    generate(folder, a.cases, a.size)
    disk = sum(p.stat().st_size for p in folder.glob("*.nii.gz")) / 2**20
    print(f"{a.cases} volumes of {a.size}³ float32 in {folder} ({disk:.0f} MB on disk, "
          f"{a.cases * a.size ** 3 * 4 / 2**20:.0f} MB as arrays; generated/checked in {time.perf_counter() - t:.0f} s)")
    for cache in (16, a.cases):
        out = subprocess.run([sys.executable, __file__, "--cases", str(a.cases), "--size", str(a.size), "--samples",
                              str(a.samples), "--folder", a.folder, "--cache", str(cache)], capture_output=True, text=True,
                             check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()

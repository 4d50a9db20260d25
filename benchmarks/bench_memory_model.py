"""Fit and check the GPU memory model of every pretraining bundle (``monai_ssl_plugin/guide/memory.py``).

Run from the repository root::

    python benchmarks/bench_memory_model.py                      # fit, check, print the table
    python benchmarks/bench_memory_model.py --write              # ... and write guide/memory.yaml
    python benchmarks/bench_memory_model.py --only mae,swin --no-check

Per bundle, with the backbone the recommender plans (``guide/rules.yaml``; the bundle's own where
that one cannot be built for it) and the bundle's own heads and optimiser, built from its config:

* parameters: trainable (weights, gradients, optimiser state: 1 value per parameter for SGD with
  momentum, 2 for Adam / AdamW) and frozen ones (an EMA teacher: weights only);
* activations: the bytes autograd saves for the backward pass during one forward, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` (each storage once, parameters excluded), at three
  small patches on CPU, per sample, fitted as a + b v + c v^2 in the voxels v (exact counts, not
  timings: the fit is not disturbed by the machine's load); the ratio under bf16 autocast at the
  smallest patch is the ``amp_factor``;
* the check: in a fresh process per bundle, at the second fitted patch, the peak resident set size
  of a training step (forward, backward, optimiser step; polled every millisecond) above the
  resident size before it (weights, gradients and optimiser state allocated by a first step),
  against the modelled activations at that patch. Parameters, gradients and optimiser state are
  counted, not estimated. The generators run their tensor form (``HAVE_NUMBA`` off), as on a
  GPU, so no compiler memory enters the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_gpu  # noqa: E402

from monai_ssl_plugin.guide import memory  # noqa: E402
from monai_ssl_plugin.transforms import _cpu_kernels  # noqa: E402

_cpu_kernels.HAVE_NUMBA = False  # the tensor form, as on a GPU


def fit_patches(bundle: str) -> list[list[int]]:
    """Small patches (z, y, x) that keep the bundle's constraints, smallest first: three where
    attention can grow with the square of the voxels, two (a straight line) for the large CNN."""
    short = bundle.removesuffix("_ssl_pretraining")
    if bench_gpu.published(bundle)[2] == "nnunet_resenc_l":  # six stages: 64^3 leaves a 2^3 bottleneck
        return [[s] * 3 for s in (64, 96)]
    if short == "swin_unetr":
        return [[s] * 3 for s in (32, 64, 96)]
    if short == "voco":
        return [[32, s, s] for s in (64, 96, 128)]
    if short == "models_genesis":
        return [[s // 2, s, s] for s in (32, 48, 64)]
    if short in ("relative_position", "rubiks_cube"):
        return [[s] * 3 for s in (64, 80, 96)]
    return [[s] * 3 for s in (32, 48, 64)]


def min_batch(bundle: str) -> int:
    """The smallest batch the bundle's pretext accepts (in-batch negatives and statistics)."""
    return 3 if "barlow" in bundle else 2 if any(k in bundle for k in ("simclr", "vicreg", "hybrid")) else 1


def optimizer_states(optimizer: torch.optim.Optimizer) -> int:
    """Values of optimiser state per trainable parameter (SGD momentum 1, Adam / AdamW 2)."""
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return 2
    return 1 if float(optimizer.defaults.get("momentum", 0) or 0) > 0 else 0


def saved_bytes(pretext: torch.nn.Module, x: torch.Tensor, amp: bool = False) -> int:
    """Bytes autograd saves for the backward of one forward (each storage once, no parameters)."""
    params = {p.untyped_storage().data_ptr() for p in pretext.parameters()}
    seen: set[int] = set()
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            total[0] += storage.nbytes()
        return t

    pretext.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=amp):
        out = pretext({"image": x})
    del out
    return total[0]


def build_planned(bundle: str, work: Path, patch: list[int], batch: int) -> tuple[Any, Any, str, dict]:
    """The bundle's pretext and optimiser on the planned backbone (the bundle's own if that fails)."""
    _, _, backbone = bench_gpu.published(bundle)
    dataset = bench_gpu.write_dataset(work / "data", [16, 16, 16], cases=1) if not (work / "data").exists() \
        else next((work / "data").glob("Dataset*"))
    ids = bench_gpu.bundle_overrides(bundle, patch, batch, backbone, tiny=False)
    try:
        pretext, optimizer = bench_gpu.build(bundle, dataset, work, torch.device("cpu"), ids)
    except Exception:  # the planned backbone does not fit this bundle's config: its own default
        ids.pop("backbone", None)
        pretext, optimizer = bench_gpu.build(bundle, dataset, work, torch.device("cpu"), ids)
    return pretext, optimizer, ids.get("backbone") or bundle_backbone(bundle), ids


def bundle_backbone(bundle: str) -> str:
    """The backbone id in the bundle's own config (``auto``: the default for raw data)."""
    from monai.bundle import ConfigParser

    from monai_ssl_plugin.bundles import bundle_dir, train_configs
    from monai_ssl_plugin.engine.network import DEFAULT_BACKBONE

    parser = ConfigParser()
    parser.read_config([str(f) for f in train_configs(bundle_dir(bundle))])
    name = str(parser.get("backbone", "auto"))
    return DEFAULT_BACKBONE if name == "auto" else name


def fit_bundle(bundle: str, work: Path) -> dict[str, Any]:
    """Parameter counts, optimiser state and the saved-bytes fit of one bundle (forward passes on CPU)."""
    patches, batch = fit_patches(bundle), min_batch(bundle)
    voxels, per_sample = [], []
    for i, patch in enumerate(patches):
        torch.manual_seed(0)
        pretext, optimizer, backbone, _ = build_planned(bundle, work, patch, batch)
        x = torch.randn(batch, int(getattr(pretext, "in_channels", 1) or 1), *patch)
        per_sample.append(saved_bytes(pretext, x) / batch)
        voxels.append(float(np.prod(patch)))
        if i == 0:
            amp_factor = saved_bytes(pretext, x, amp=True) / batch / per_sample[0]
            trainable = sum(p.numel() for p in pretext.parameters() if p.requires_grad)
            frozen = sum(p.numel() for p in pretext.parameters() if not p.requires_grad)
            states = optimizer_states(optimizer)
        del pretext, optimizer, x
    mv, y = np.array(voxels) / 1e6, np.array(per_sample)  # in megavoxels: a well-conditioned fit
    c, b, a = np.polyfit(mv, y, 2) if len(mv) > 2 else (0.0, *np.polyfit(mv, y, 1))
    if c < 0:  # no quadratic growth: a straight line through the points
        c, (b, a) = 0.0, np.polyfit(mv, y, 1)
    return {"backbone": backbone, "trainable_params": int(trainable), "frozen_params": 0,
            "teacher_params": int(frozen), "optimizer_states_per_param": states,
            "saved_bytes_fit": [float(a), float(b) / 1e6, float(c) / 1e12], "amp_factor": round(float(amp_factor), 4),
            "fit_patches": patches, "fit_batch": batch, "saved_bytes_per_sample": [int(v) for v in per_sample]}


class RssPeak:
    """The peak resident set size of a block, polled every millisecond by a thread (torch ops
    release the GIL, so the poller runs while they allocate)."""

    def __enter__(self) -> RssPeak:
        import threading

        self.peak, self._stop = bench_gpu._rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, bench_gpu._rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, bench_gpu._rss_bytes())


def _train_step(pretext: Any, optimizer: Any, x: torch.Tensor, i: int) -> None:
    optimizer.zero_grad(set_to_none=True)
    pretext({"image": x})["loss"].backward()
    optimizer.step()
    if hasattr(pretext, "after_step"):
        pretext.after_step(i)


def check_one(bundle: str, patch: list[int], batch: int) -> dict[str, float]:
    """In this (fresh) process: the peak resident memory of a training step above the resident size
    before it (after a first step: weights, gradients and optimiser state are already allocated), i.e.
    the activations and the step's temporaries. Large blocks are mmapped and returned on free (glibc
    thresholds lowered), so the resident size follows the live tensors."""
    import ctypes
    import gc

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: blocks above 64 KiB are mapped, unmapped on free
    libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="memcheck_") as work:
        bench_gpu.write_dataset(Path(work) / "data", [16, 16, 16], cases=1)
        torch.manual_seed(0)
        pretext, optimizer, _, _ = build_planned(bundle, Path(work), patch, batch)
        x = torch.randn(batch, int(getattr(pretext, "in_channels", 1) or 1), *patch)
        _train_step(pretext, optimizer, x, 0)
        gc.collect()
        before = bench_gpu._rss_bytes()
        with RssPeak() as peak:
            _train_step(pretext, optimizer, x, 1)
    return {"activations_mb": (peak.peak - before) / 2**20}


def check(bundle: str, entry: dict[str, Any]) -> dict[str, float]:
    """Measured CPU peak (fresh process) against the model at the smallest fitted patch."""
    patch, batch = entry["fit_patches"][1], entry["fit_batch"]
    proc = subprocess.run([sys.executable, __file__, "--check-one", bundle], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        return {"failed": (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]}
    measured = json.loads(lines[-1])
    act = memory.activation_bytes(entry, patch, batch, False) / 2**20
    return {**measured, "model_activations_mb": act, "activations_ratio": measured["activations_mb"] / act}


def planned(bundle: str, entry: dict[str, Any]) -> str:
    """The model at the recommender's plan, and the cards it fits."""
    patch, batch, _ = bench_gpu.published(bundle)
    est = memory.estimate_memory(bundle, entry["backbone"], patch, batch, False, {bundle: {entry["backbone"]: entry}})
    half = memory.estimate_memory(bundle, entry["backbone"], patch, batch, True, {bundle: {entry["backbone"]: entry}})
    fits = ", ".join(f"{c}: {'yes' if est.fits(c) else 'bf16' if half.fits(c) else 'no'}" for c in memory.CARDS_GB)
    return (f"{'x'.join(map(str, patch))} | {batch} | {est.static_gb:.2f} | {est.activations_gb:.2f} | "
            f"{est.planned_gb:.1f} | {half.planned_gb:.1f} | {fits}")


def write_yaml(entries: dict[str, dict[str, Any]], command: str) -> Path:
    """Merge ``entries`` into ``guide/memory.yaml`` (same bundle and backbone: the new entry wins)."""
    import yaml

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    merged = {b: dict(v) for b, v in memory.load_memory_model().items()}
    for b, e in entries.items():
        merged.setdefault(b, {})[e["backbone"]] = {**e, "date": stamp, "command": command,
                                                   "load_avg": [round(v, 2) for v in os.getloadavg()]}
    body = {"bundles": {b: merged[b] for b in sorted(merged)}}
    memory._load.cache_clear()
    memory.MEMORY_FILE.write_text(
        "# GENERATED FILE - do not edit by hand. Written by `python benchmarks/bench_memory_model.py --write`\n"
        "# (the GPU memory model of guide/memory.py: parameter counts, optimiser state, saved-for-backward bytes\n"
        "# per sample fitted on CPU as a + b v + c v^2 in the voxels v; docs/performance.md).\n"
        + yaml.safe_dump(body, sort_keys=False, width=120))
    return memory.MEMORY_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated substrings of bundle names")
    parser.add_argument("--write", action="store_true", help="write monai_ssl_plugin/guide/memory.yaml")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the measured CPU peaks")
    parser.add_argument("--check-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.check_one:
        entry = fit_patches(args.check_one)[1], min_batch(args.check_one)
        print(json.dumps(check_one(args.check_one, *entry)))
        return 0
    from monai_ssl_plugin.bundles import list_bundles

    wanted = [w for w in args.only.split(",") if w]
    bundles = [b for b in list_bundles() if b.endswith("_ssl_pretraining") and (not wanted or any(w in b for w in wanted))]
    print(f"# CPU, torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.2f}; GB = 10^9 bytes; "
          f"planned = static + {memory.ACTIVATION_FACTOR} x activations + {memory.CONTEXT_GB} GB CUDA context")
    print("| bundle | backbone | params (M) | teacher (M) | opt. states | fit patches (batch) | activations at the 2nd fit patch: "
          "model MB | measured MB (RSS peak of a step) | measured / model | planned patch | batch | static GB | activations GB | planned GB fp32 | "
          "planned GB bf16 | fits 24 / 40 / 80 GB |")
    print("|" + " --- |" * 16, flush=True)
    entries = {}
    with tempfile.TemporaryDirectory(prefix="memmodel_") as work:
        for bundle in bundles:
            try:
                e = fit_bundle(bundle, Path(work))
            except Exception as err:  # a bundle that cannot be built is a result, not the end of the run
                print(f"| {bundle} | failed: {type(err).__name__}: {str(err).strip()[:160]} |", flush=True)
                continue
            entries[bundle] = e
            c = check(bundle, e) if args.check else {}
            cells = ([f"{c['model_activations_mb']:.0f}", f"{c['activations_mb']:.0f}", f"{c['activations_ratio']:.2f}"]
                     if "activations_ratio" in c else [c.get("failed", "not checked"), "", ""])
            e["check"] = {k: round(v, 3) for k, v in c.items() if isinstance(v, float)}
            if args.write:  # after every bundle: a long run that is stopped keeps what it measured
                write_yaml({bundle: e}, "python benchmarks/bench_memory_model.py --write")
            print(f"| {bundle} | {e['backbone']} | {e['trainable_params'] / 1e6:.1f} | {e['teacher_params'] / 1e6:.1f} | "
                  f"{e['optimizer_states_per_param']} | {', '.join('x'.join(map(str, p)) for p in e['fit_patches'])} "
                  f"({e['fit_batch']}) | " + " | ".join(cells) + f" | {planned(bundle, e)} |", flush=True)
    if args.write:
        print(f"wrote {memory.MEMORY_FILE} ({len(entries)} bundle(s) merged)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

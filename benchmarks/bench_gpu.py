"""Every pretraining bundle at its published size on one GPU: step time, data wait, peak memory, and
what bf16 / fp16 autocast, channels_last_3d and torch.compile change, against the bare step.

Run from the repository root (one GPU, about 10 minutes with the defaults)::

    python benchmarks/bench_gpu.py --device cuda --json gpu.json
    python benchmarks/bench_gpu.py --device cuda --only mae,swin --steps 40
    python benchmarks/bench_gpu.py --tiny --steps 2 --variants fp32   # CPU, tiny sizes (the test's setting)

Per bundle (published patch, batch and backbone from ``guide/rules.yaml``, the recommender's
plan; the bundle's own backbone where that one cannot be built for it):

* ``bundle``: the real bundle run (``pretrain()``, what ``monai-ssl pretrain`` runs) on a synthetic
  nnU-Net raw dataset for ``--steps`` steps, the first ``--warmup`` excluded: seconds per step and
  data wait (the bundle's ``timing.csv``: time in ``next(loader)`` / step time), peak memory.
* ``bare fp32``: the same pretext, network and optimiser built from the bundle's config, stepped on
  one batch already on the device (forward, backward, optimiser step, ``after_step``): no loader,
  no handlers. ``bundle / bare`` = what the data path and the handlers add.
* the variants, each a bare loop: ``bf16`` and ``fp16`` autocast (fp16 with a gradient scaler; CUDA
  only), ``channels_last`` (``engine.acceleration.channels_last_3d``), ``compile``
  (``engine.acceleration.compile_network``; its first step, the compilation, is reported apart).

Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA (reset before each measurement); on CPU the
growth of the resident set size over the measurement (coarse: it is the process's, allocator
included). ``--budget-s`` stops starting new bundles when the time is spent, and says so.
``--device cuda`` on a machine without a GPU exits with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_corruptions.py

import torch  # noqa: E402

from _common import check_device as _check_device  # noqa: E402
from _common import run_cli, select, use_checkout  # noqa: E402

use_checkout()

from monai_ssl_plugin.errors import PluginError  # noqa: E402

VARIANTS = ("fp32", "bf16", "fp16", "channels_last", "compile")
TINY_BACKBONE = "nnunet_plain_tiny"
# tiny heads per bundle, so that a CPU run of every bundle takes seconds (the bundle tests' sizes)
TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "barlow_twins": {"pretext#projection_dim": 64, "pretext#hidden_dim": 64, "batch_size": 4},
    "byol": {"pretext#projection_dim": 32, "pretext#hidden_dim": 64},
    "dino": {"pretext#out_dim": 256, "pretext#bottleneck_dim": 32, "pretext#n_local": 2, "pretext#hidden_dim": 64},
    "moco": {"pretext#queue_size": 8, "pretext#hidden_dim": 64},
    "models_genesis": {"pretext#n_blocks": 2000},
    "relative_position": {"pretext#head_hidden": 64},
    "rubiks_cube": {"pretext#head_hidden": 64, "pretext#num_permutations": 10},
    "simclr": {"pretext#hidden_dim": 64},
    "simsiam": {"pretext#projection_dim": 64, "pretext#predictor_dim": 16, "pretext#hidden_dim": 64},
    "vicreg": {"pretext#projection_dim": 64, "pretext#hidden_dim": 64},
    "voco": {"pretext#out_dim": 64},
}


def check_device(name: str) -> torch.device:
    """The device to run on; a CUDA device without a GPU is refused in one line."""
    return _check_device(name, "Run on a machine with a GPU, or use --device cpu --tiny for the CPU check.")


def published(bundle: str) -> tuple[list[int], int, str]:
    """(patch in the plugin's z, y, x order, batch, backbone) that the recommender plans for ``bundle``
    in 3D (``guide/rules.yaml``: published settings, sides given x, y, z)."""
    from monai_ssl_plugin.guide import load_rules
    from monai_ssl_plugin.guide.recommender import registry_backbone

    entry = load_rules()["bundles"][bundle]
    setting = entry["settings"]["3d"]
    return [int(p) for p in reversed(setting["patch"])], int(setting["batch"]), registry_backbone(
        entry.get("default_backbone", "auto"))


def tiny_patch(bundle: str, patch: list[int]) -> list[int]:
    """A CPU-sized patch that keeps the bundle's constraints (square rotation plane, grids, strides)."""
    if "swin_unetr" in bundle or "voco" in bundle:
        return [32, 64, 64] if "voco" in bundle else [32, 32, 32]
    if "mae_vit" in bundle:
        return [32, 32, 32]
    side = 64 if any(k in bundle for k in ("relative_position", "rubiks")) else 32
    return [side if patch[0] == patch[-1] else side // 2, side, side]


# ------------------------------------------------------------------------------------------
# building a bundle's pretext and optimiser, and the synthetic data
# ------------------------------------------------------------------------------------------


def write_dataset(root: Path, shape: list[int], cases: int = 2) -> Path:
    """A synthetic nnU-Net raw dataset of ``cases`` volumes of ``shape`` (z, y, x)."""
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    if root.is_dir():  # written for an earlier bundle of the same size
        return next(root.glob("Dataset*"))
    return make_synthetic_dataset(root, 993, "GpuBench", n_labelled=0, n_unlabelled=cases, shape=tuple(shape),
                                  spacing=(1.0, 1.0, 1.0), seed=0)


def bundle_overrides(bundle: str, patch: list[int], batch: int, backbone: str | None, tiny: bool) -> dict[str, Any]:
    """Config ids that set the size (and, with ``tiny``, a tiny network and heads)."""
    short = bundle.removesuffix("_ssl_pretraining")
    ids: dict[str, Any] = {"patch_size": patch, "batch_size": batch}
    if backbone and short not in ("mae_vit", "swin_unetr"):
        ids["backbone"] = TINY_BACKBONE if tiny else backbone
    if tiny:
        ids.update(TINY_OVERRIDES.get(short, {}))
        if short == "swin_unetr":
            ids.update({"swin_kwargs": {"feature_size": 12, "depths": [1, 1, 1, 1], "window_size": 4},
                        "pretext#decoder_width": 16, "pretext#projection_dim": 64})
        if short == "mae_vit":
            ids.update({"backbone_kwargs": {"num_layers": 2}, "pretext#decoder_hidden_size": 96,
                        "pretext#decoder_num_layers": 1, "pretext#decoder_num_heads": 4})
    return ids


def build(bundle: str, dataset: Path, work: Path, device: torch.device, ids: dict[str, Any]
          ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The bundle's pretext (with its network) and optimiser, parsed from its own config."""
    from monai.bundle import ConfigParser

    from monai_ssl_plugin.bundles import bundle_dir, train_configs

    root = bundle_dir(bundle)
    parser = ConfigParser()
    parser.read_config([str(f) for f in train_configs(root)])
    parser.update({"bundle_root": str(root), "dataset_dir": str(dataset), "output_dir": str(work / "parsed"),
                   "device": str(device), **ids})
    return parser.get_parsed_content("pretext"), parser.get_parsed_content("optimizer")


# ------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of a block: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the growth of the
    peak resident set size over the block (0 when an earlier block already reached higher)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak_mb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self._before) / 2**20


def bare_steps(pretext: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, steps: int,
               amp: str | None) -> dict[str, float]:
    """Median seconds of a bare step (forward, backward, optimiser step, ``after_step``) on one batch;
    the first step (allocations, compilation) is timed apart."""
    device = x.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    pretext.train()

    def step(iteration: int) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = pretext({"image": x})["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if hasattr(pretext, "after_step"):
            pretext.after_step(iteration)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    first = step(0)
    with PeakMemory(device) as peak:
        times = [step(i) for i in range(1, max(2, steps))]
    return {"step_s": statistics.median(times), "first_step_s": first, "peak_mb": peak.peak_mb}


def bundle_run(bundle: str, dataset: Path, work: Path, device: torch.device, ids: dict[str, Any], steps: int,
               warmup: int) -> dict[str, float]:
    """The real bundle run for ``steps`` steps: median step time and data wait after ``warmup``."""
    from monai_ssl_plugin.engine.run import pretrain

    out = work / f"run_{bundle}"
    overrides = {**ids, "train#epoch_length": steps, "train#trainer#max_epochs": 1, "save_every_n_iters": 0}
    with PeakMemory(device) as peak:
        pretrain(bundle, dataset, out, quiet=True, device=str(device), **overrides)
    rows = [line.split(",") for line in (out / "timing.csv").read_text().splitlines()[1:]][warmup:]
    if not rows:
        raise PluginError(f"{bundle}: no step after the {warmup} warm-up step(s).", "Raise --steps above --warmup.")
    wait, step = sum(float(r[1]) for r in rows), sum(float(r[2]) for r in rows)
    return {"step_s": statistics.median(float(r[2]) for r in rows), "data_wait_share": wait / step,
            "peak_mb": peak.peak_mb, "steps_timed": len(rows)}


def variant_ids(variant: str) -> dict[str, Any]:
    """Config ids a variant changes in the built network (the amp variants change the loop instead)."""
    return {"channels_last": {"channels_last": True}, "compile": {"torch_compile": True}}.get(variant, {})


def bench_bundle(bundle: str, args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """Every measurement of one bundle: the bundle run, then the bare loop per variant."""
    patch, batch, backbone = published(bundle)
    if args.tiny:
        patch, batch = tiny_patch(bundle, patch), min(batch, 2 if "barlow" not in bundle else 4)
    ids = bundle_overrides(bundle, patch, batch, backbone, args.tiny)
    dataset = write_dataset(work / f"data_{'x'.join(map(str, patch))}", [int(p * 1.25) for p in patch])
    result: dict[str, Any] = {"bundle": bundle, "patch": patch, "batch": ids["batch_size"],
                              "backbone": ids.get("backbone", "bundle default")}
    try:
        result["bundle_run"] = bundle_run(bundle, dataset, work, device, ids, args.steps, args.warmup)
    except Exception as e:  # the bare loops still say what the network costs
        result["bundle_run"] = {"failed": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}"}
    for variant in args.variants:
        if variant == "fp16" and device.type != "cuda":
            result[variant] = {"skipped": "fp16 autocast is a CUDA setting"}
            continue
        result[variant] = bare_variant(bundle, variant, dataset, work, device, ids, patch, args.steps)
    return result


def bare_variant(bundle: str, variant: str, dataset: Path, work: Path, device: torch.device, ids: dict[str, Any],
                 patch: list[int], steps: int) -> dict[str, Any]:
    """One variant's bare loop; a failure (e.g. bf16 on a GPU without it) is recorded, not raised."""
    import gc

    torch.manual_seed(0)
    try:
        pretext, optimizer = build(bundle, dataset, work, device, {**ids, **variant_ids(variant)})
        in_channels = int(getattr(pretext, "in_channels", 1) or 1)
        x = torch.randn(ids["batch_size"], in_channels, *patch, device=device)
        return bare_steps(pretext, optimizer, x, steps, variant if variant in ("bf16", "fp16") else None)
    except Exception as e:  # one variant's failure is a result
        return {"failed": f"{type(e).__name__}: {str(e).strip()[:160]}"}
    finally:  # free this variant's network before the next one's peak is measured
        pretext = optimizer = x = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------


def row(r: dict[str, Any], variants: list[str]) -> str:
    """One Markdown row: bundle run, bare fp32, and each variant as speed-up over bare fp32 (peak MB)."""
    run, bare = r["bundle_run"], r.get("fp32", {})
    cells = [r["bundle"], "x".join(map(str, r["patch"])), str(r["batch"]), r["backbone"]]
    cells += ([f"{run['step_s']:.3f}", f"{100 * run['data_wait_share']:.1f} %", f"{run['peak_mb']:.0f}"]
              if "step_s" in run else [f"failed: {run.get('failed', '')}", "", ""])
    base = bare.get("step_s")
    cells += [f"{base:.3f}", f"{run['step_s'] / base:.2f}" if "step_s" in run else ""] if base else ["", ""]
    for v in variants:
        m = r.get(v, {})
        if v == "fp32":
            cells.append(f"{m['peak_mb']:.0f} MB" if "peak_mb" in m else "")
        elif "step_s" in m and base:
            extra = f", first {m['first_step_s']:.0f} s" if v == "compile" else ""
            cells.append(f"{base / m['step_s']:.2f}x, {m['peak_mb']:.0f} MB{extra}")
        else:
            cells.append(m.get("skipped", m.get("failed", "")))
    return "| " + " | ".join(cells) + " |"


def header(device: torch.device, args: argparse.Namespace) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    return (f"# {name}, {os.cpu_count()} CPU cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}, "
            f"{args.steps} steps ({args.warmup} excluded from the bundle run, 1 from the bare loops), "
            f"{'tiny sizes' if args.tiny else 'published sizes'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only", default="", help="comma-separated substrings of bundle names")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=3, help="bundle-run steps excluded (start-up, cuDNN tuning)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--tiny", action="store_true", help="tiny patches, network and heads (a CPU check)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="start no new bundle after this many seconds")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    device = check_device(args.device)
    if "fp32" not in args.variants:
        args.variants.insert(0, "fp32")  # the bare reference every variant is compared with
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    from monai_ssl_plugin.bundles import list_bundles

    bundles = select([b for b in list_bundles() if b.endswith("_ssl_pretraining")], args.only)
    print(header(device, args), flush=True)
    cols = ["bundle", "patch", "batch", "backbone", "bundle s/step", "data wait", "bundle peak MB", "bare s/step",
            "bundle / bare"] + [f"{v} (speed-up, peak)" if v != "fp32" else "bare fp32 peak" for v in args.variants]
    print("| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols), flush=True)
    results, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as work:
        for bundle in bundles:
            if time.perf_counter() - start > args.budget_s:
                results.append({"bundle": bundle, "skipped": f"time budget of {args.budget_s:.0f} s spent"})
                print(f"| {bundle} | skipped: time budget of {args.budget_s:.0f} s spent |", flush=True)
                continue
            try:
                r = bench_bundle(bundle, args, device, Path(work))
            except Exception as e:  # one bundle's failure is a result, not the end of the run
                msg = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
                results.append({"bundle": bundle, "failed": f"{type(e).__name__}: {msg}"})
                print(f"| {bundle} | failed: {type(e).__name__}: {msg} |", flush=True)
                continue
            results.append(r)
            print(row(r, args.variants), flush=True)
    print(f"# {time.perf_counter() - start:.0f} s, load average after {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header(device, args), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)

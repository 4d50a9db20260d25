"""Throughput and peak memory of one training step, per pretext × backbone.

Run from the repository root::

    python benchmarks/bench_pretexts.py                                   # every pretext on the default backbones
    python benchmarks/bench_pretexts.py --backbones nnunet_plain_small,monai_resnet10 --patch 32
    python benchmarks/bench_pretexts.py --pretexts simclr,mae --dims 2 --patch 64
    python benchmarks/bench_pretexts.py --bundles all --patch 32 --write-measured   # the recommender's figures

``--bundles`` measures each pretraining bundle (``all`` = every bundle in ``guide/rules.yaml``) with
the pretext its ``configs/train.yaml`` creates, on the default backbone the recommender names for
it. ``--write-measured [PATH]`` merges every measured cell into the recommender's benchmark file
(default: the packaged ``monai_ssl_plugin/guide/measured.yaml``; ``guide.measured.write_measured``),
one entry per (device, patch, batch, backbone), with the host, load average, date and command.

Every cell (pretext, backbone) runs in a fresh subprocess with one torch thread: build
``create_pretext(name, backbone=create_backbone(backbone, spatial_dims=dims))`` with the pretext's
own defaults (the published head widths), an SGD optimiser over all its parameters, then one
warm-up step and ``--steps`` timed steps (forward, backward, optimiser step, ``after_step``) on
random ``(batch, 1, patch^dims)`` inputs. It reports volumes/s (``batch × steps / time``) and the
peak resident set size (``ru_maxrss``, which sees torch's allocations; tracemalloc does not), plus
the peak above the resident size measured after the model was built. On CUDA (``--device cuda``)
the peak is ``torch.cuda.max_memory_allocated``.

A pretext that refuses the backbone (``PluginError`` / ``ValueError``) is listed as refused (see
docs/compatibility.md). Barlow Twins needs 3 volumes per batch and gets ``max(batch, 3)``.
ViT / UNETR backbones are built with ``img_size = patch``. ``OMP_WAIT_POLICY`` defaults to
``PASSIVE`` (shared machines).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _common import rss_mb

DEFAULT_BACKBONES = ["nnunet_plain_small", "monai_resnet10", "monai_segresnet", "monai_unetr_small"]
MIN_BATCH = {"barlow_twins": 3}


def run_cell(pretext: str, backbone: str, dims: int, patch: int, batch: int, steps: int, device: str,
             pretext_kwargs: dict | None = None) -> dict:
    """Measure one cell in this process (the parent calls this through a subprocess)."""
    import resource

    import torch

    torch.set_num_threads(1)
    from monai_ssl_plugin.backbones import create_backbone
    from monai_ssl_plugin.errors import PluginError
    from monai_ssl_plugin.pretext import create_pretext

    torch.manual_seed(0)
    kw = {"img_size": patch} if backbone.startswith(("monai_vit", "monai_unetr")) else {}
    extra = {"num_permutations": 10} if pretext == "rubiks_cube" and dims == 2 else {}
    extra.update(pretext_kwargs or {})
    batch = max(batch, MIN_BATCH.get(pretext, 1))
    try:
        bb = create_backbone(backbone, spatial_dims=dims, **kw)
        model = create_pretext(pretext, backbone=bb, **extra).to(device).train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        x = torch.randn(batch, 1, *([patch] * dims), device=device)

        def step(i: int) -> float:
            opt.zero_grad(set_to_none=True)
            loss = model({"image": x})["loss"]
            loss.backward()
            opt.step()
            if hasattr(model, "after_step"):
                model.after_step(i)
            return float(loss.detach())

        base = rss_mb()
        step(0)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for i in range(1, steps + 1):
            loss = step(i)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    except (PluginError, ValueError) as err:
        return {"status": "refused", "reason": str(err).splitlines()[0][:160]}
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    return {"status": "ok", "vol_per_s": batch * steps / dt, "s_per_step": dt / steps, "batch": batch,
            "peak_mb": peak, "above_built_mb": peak - base if not device.startswith("cuda") else None,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "loss": loss}


def bundle_cells(names: str, dims: int, patch: int) -> list[tuple[str, str, str, dict]]:
    """(bundle, pretext, backbone, pretext kwargs) for ``--bundles``: the bundle's own pretext, the recommender's backbone.

    Pretext arguments are taken from the bundle only where the pretext has no defaults (the hybrid
    bundle's ``terms``), resolved by MONAI's ConfigParser at this patch size.
    """
    from monai_ssl_plugin.guide import load_rules
    from monai_ssl_plugin.guide.recommender import registry_backbone

    rules = load_rules()["bundles"]
    chosen = list(rules) if names == "all" else [n if n.endswith("_ssl_pretraining") else f"{n}_ssl_pretraining"
                                                  for n in names.split(",")]
    from monai_ssl_plugin.bundles import bundle_dir, train_configs

    cells = []
    for name in chosen:
        if name not in rules:
            raise SystemExit(f"unknown bundle {name!r}; choose from: {', '.join(rules)}")
        if dims not in rules[name]["dims"]:
            print(f"# skip {name}: {dims}D not supported", flush=True)
            continue
        import yaml

        cfg = yaml.safe_load((bundle_dir(name) / "configs" / "train.yaml").read_text())  # the method's part
        kwargs: dict = {}
        if "terms" in cfg:
            from monai.bundle import ConfigParser

            parser = ConfigParser()
            parser.read_config(train_configs(name))
            parser["patch_size"] = [patch] * dims
            kwargs["terms"] = parser.get_parsed_content("terms")
        cells.append((name, cfg["pretext"]["name"], registry_backbone(rules[name]["default_backbone"]), kwargs))
    return cells


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretexts", default="", help="comma-separated; default: all registered except composed")
    ap.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES))
    ap.add_argument("--bundles", default="", help="'all' or comma-separated bundles, each on its default backbone "
                                                  "(replaces --pretexts/--backbones)")
    ap.add_argument("--dims", type=int, default=3)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per cell")
    ap.add_argument("--write-measured", nargs="?", const="", default=None, metavar="PATH",
                    help="merge measured cells into PATH (default: the packaged guide/measured.yaml)")
    ap.add_argument("--cell", nargs=2, metavar=("PRETEXT", "BACKBONE"), help=argparse.SUPPRESS)
    ap.add_argument("--pretext-kwargs", default="{}", help=argparse.SUPPRESS)
    return ap.parse_args()


def cells(args: argparse.Namespace) -> list[tuple[str, str, str, dict]]:
    """(bundle, pretext, backbone, pretext kwargs) to measure: the bundles' own, or pretexts × backbones."""
    if args.bundles:
        return bundle_cells(args.bundles, args.dims, args.patch)
    if args.pretexts:
        pretexts = args.pretexts.split(",")
    else:
        from monai_ssl_plugin.pretext import list_pretexts
        pretexts = [p for p in list_pretexts() if p != "composed"]
    return [(f"{p}_ssl_pretraining", p, b, {}) for b in args.backbones.split(",") for p in pretexts]


def measure(args: argparse.Namespace, p: str, b: str, kwargs: dict, env: dict[str, str]) -> dict:
    """One cell in a fresh single-threaded process; a crash or timeout is a result, not the end of the run."""
    cmd = [sys.executable, __file__, "--cell", p, b, "--dims", str(args.dims), "--patch", str(args.patch),
           "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device,
           "--pretext-kwargs", json.dumps(kwargs)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {"status": "error", "reason": proc.stderr.strip()[-200:]}
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timeout after {args.timeout:.0f} s"}


def measured_entry(args: argparse.Namespace, bundle: str, p: str, b: str, r: dict, load: list[float]) -> dict:
    """The recommender's record of one measured cell, with the command that measures it again."""
    again = ("OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_pretexts.py "
             + (f"--bundles {bundle}" if args.bundles else f"--pretexts {p} --backbones {b}")
             + f" --dims {args.dims} --patch {args.patch} --batch {args.batch} --steps {args.steps}"
             f" --device {args.device} --write-measured"
             + (f" {shlex.quote(args.write_measured)}" if args.write_measured else ""))
    return {"device": args.device, "patch": [args.patch] * args.dims, "batch": int(r["batch"]),
            "volumes_per_s": round(r["vol_per_s"], 4), "peak_mem_mb": round(r["peak_mb"], 1),
            "backbone": b, "pretext": p, "threads": 1, "steps": args.steps,
            "s_per_step": round(r["s_per_step"], 4),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "host_cpus": os.cpu_count(), "load_avg": load, "command": again}


def main() -> None:
    args = parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    if args.cell:
        print(json.dumps(run_cell(*args.cell, args.dims, args.patch, args.batch, args.steps, args.device,
                                  json.loads(args.pretext_kwargs))))
        return

    todo = cells(args)
    measured_path = None
    if args.write_measured is not None:
        from monai_ssl_plugin.guide.recommender import DEFAULT_MEASURED_PATH

        measured_path = Path(args.write_measured or DEFAULT_MEASURED_PATH)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"patch {args.patch}^{args.dims}, batch {args.batch}, {args.steps} timed steps after 1 warm-up, "
          f"1 thread, device {args.device}", flush=True)
    print("| pretext | backbone | volumes/s | s/step | peak RSS (MB) | above built (MB) | params (M) |")
    print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]}
    for bundle, p, b, kwargs in todo:
        load = [round(v, 2) for v in os.getloadavg()]
        r = measure(args, p, b, kwargs, env)
        if r["status"] != "ok":
            print(f"| `{p}` | `{b}` | {r['status']}: {r['reason']} | | | | |", flush=True)
            continue
        above = "" if r["above_built_mb"] is None else f"{r['above_built_mb']:.0f}"
        batch_note = f" (batch {r['batch']})" if r["batch"] != args.batch else ""
        print(f"| `{p}`{batch_note} | `{b}` | {r['vol_per_s']:.2f} | {r['s_per_step']:.2f} | "
              f"{r['peak_mb']:.0f} | {above} | {r['params_m']:.1f} |", flush=True)
        if measured_path is not None:  # after every cell: an interrupted run keeps what it measured
            from monai_ssl_plugin.guide.measured import write_measured

            write_measured({bundle: [measured_entry(args, bundle, p, b, r, load)]}, measured_path)
    if measured_path is not None:
        print(f"# measured figures merged into {measured_path}", flush=True)


if __name__ == "__main__":
    main()

"""Pretraining throughput of the MAE bundle: volumes/s, peak memory and data-wait share per patch size.

Runs the real bundle (``monai_ssl_plugin.engine.run.pretrain``, i.e. what ``monai-ssl pretrain``
does) on a synthetic nnU-Net raw dataset written to a temporary folder, one child process per
configuration so that each peak-memory figure is its own:

    python benchmarks/bench_pretraining.py                      # 48^3 and 64^3, nnunet_plain_small, batch 2
    python benchmarks/bench_pretraining.py --patches 64 96 --steps 20 --num_workers 2

Figures: volumes/s = batch / mean step time over the steps after the first ``--warmup`` (which
pay worker start-up and allocator warm-up); CPU s/step = CPU time of the training process per
step (all its threads; with ``--threads 1`` this is the step time of an otherwise idle core, so
it is robust to other jobs sharing the machine); peak RSS of the training process (``resource``,
no psutil; each loader worker is a separate process, its peak is read from /proc while it runs); on GPU also
``torch.cuda.max_memory_allocated``; data wait = share of the step spent in ``next(loader)``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import add_child_args, child_result, print_result


def run_one(args: argparse.Namespace) -> dict:
    """One configuration in this process; returns the figures."""
    import torch

    from monai_ssl_plugin.engine.handlers.data_wait import DataWaitHandler
    from monai_ssl_plugin.engine.run import pretrain

    torch.set_num_threads(args.threads)
    cpu_marks: list[float] = []  # process CPU time at each step's start (the step boundaries DataWaitHandler uses)
    batch_started = DataWaitHandler._batch_started

    worker_peak = [0.0]

    def marked(self, engine):
        cpu_marks.append(time.process_time())
        worker_peak[0] = max(worker_peak[0], _children_peak_rss_mib())
        batch_started(self, engine)

    DataWaitHandler._batch_started = marked
    out = Path(args.work) / f"run_{args.patch}"
    t0 = time.perf_counter()
    pretrain("mae_ssl_pretraining", args.dataset, out, backbone=args.backbone,
             patch_size=[args.patch] * 3, batch_size=args.batch_size, quiet=True, device=args.device,
             **{"train#epoch_length": args.steps, "train#trainer#max_epochs": 1,
                "train#num_workers": args.num_workers, "save_every_n_iters": 0})
    wall = time.perf_counter() - t0
    rows = [line.split(",") for line in (out / "timing.csv").read_text().splitlines()[1:]]
    steady = [(float(w), float(s)) for _, w, s in rows][args.warmup:]
    step = sum(s for _, s in steady) / len(steady)
    wait = sum(w for w, _ in steady) / sum(s for _, s in steady)
    cpu_steps = [b - a for a, b in zip(cpu_marks, cpu_marks[1:])][args.warmup:]
    cpu_step = sum(cpu_steps) / max(1, len(cpu_steps))
    ru_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    result = {"patch": args.patch, "backbone": args.backbone, "batch_size": args.batch_size, "steps": len(rows),
              "device": args.device, "num_workers": args.num_workers, "threads": args.threads,
              "step_s": round(step, 3), "volumes_per_s": round(args.batch_size / step, 3),
              "cpu_s_per_step": round(cpu_step, 3), "data_wait_share": round(wait, 4),
              "peak_rss_mib": round(ru_self), "worker_peak_rss_mib": round(worker_peak[0]),
              "wall_s": round(wall, 1)}
    if torch.cuda.is_available() and str(args.device).startswith("cuda"):
        result["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return result


def _children_peak_rss_mib() -> float:
    """Largest peak RSS (VmHWM) among this process's live children, i.e. the loader workers (Linux /proc)."""
    peak = 0.0
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids = children.read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
            except OSError:
                pass
    return peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, nargs="+", default=[48, 64])
    p.add_argument("--backbone", default="nnunet_plain_small")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--device", default="cuda:0" if _cuda() else "cpu")
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--shape", type=int, default=96, help="side of the synthetic volumes")
    p.add_argument("--json", help="also write the results here")
    # internal: one configuration per child process
    add_child_args(p)
    p.add_argument("--patch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print_result(run_one(args))
        return

    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_pretraining_") as work:
        dataset = make_synthetic_dataset(Path(work) / "raw", 990, "Bench", n_labelled=0, n_unlabelled=args.cases,
                                         shape=(args.shape,) * 3, spacing=(1.0, 1.0, 1.0), seed=0)
        for patch in args.patches:
            cmd = [sys.executable, __file__, "--one", "--patch", str(patch), "--dataset", str(dataset), "--work", work,
                   "--backbone", args.backbone, "--batch_size", str(args.batch_size), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--num_workers", str(args.num_workers), "--threads", str(args.threads),
                   "--device", args.device]
            r, proc = child_result(cmd)
            if r is None:
                sys.exit(f"patch {patch} failed:\n{proc.stderr[-3000:]}")
            results.append(r)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| patch | backbone | batch | device | workers | step (s) | volumes/s | CPU s/step | data wait | peak RSS (MiB) "
          "| worker RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['patch']}³ | {r['backbone']} | {r['batch_size']} | {r['device']} | {r['num_workers']} | {r['step_s']} | "
              f"{r['volumes_per_s']} | {r['cpu_s_per_step']} | {100 * r['data_wait_share']:.1f}% | {r['peak_rss_mib']} | "
              f"{r['worker_peak_rss_mib']} |"
              + (f" cuda max allocated {r['cuda_max_allocated_mib']} MiB" if "cuda_max_allocated_mib" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


if __name__ == "__main__":
    main()

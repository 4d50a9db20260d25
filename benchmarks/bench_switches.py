"""Speed and peak memory of one MAE training step with the ``channels_last_3d`` and ``torch.compile`` switches.

    python benchmarks/bench_switches.py [--backbone nnunet_plain_small] [--patch 48] [--batch 2] [--steps 3]

Each configuration runs in its own process (so each peak is its own): build the backbone + MAE
pretext with the switches of ``monai_ssl_plugin.engine.acceleration`` (what the bundles' ``channels_last``
/ ``compile`` ids call), run one warm-up step (for ``torch.compile`` this is where compilation
happens; its time is reported), then ``--steps`` timed training steps (forward, backward, SGD
step) on the same batch: min and median step time, and the peak resident set size above the
resident size before the timed steps (``ru_maxrss``; on CUDA ``torch.cuda.max_memory_allocated``).
Mixed precision and activation checkpointing: ``bench_memory.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from _common import rss_mb

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads on a shared CPU: see bench_corruptions.py

# name -> (channels_last_3d, torch.compile, glibc allocator thresholds raised)
CONFIGS = {"fp32 (reference)": (False, False, False), "channels_last_3d": (True, False, False),
           "torch.compile": (False, True, False), "channels_last_3d + torch.compile": (True, True, False),
           "allocator thresholds raised (mallopt)": (False, False, True)}


def one(backbone: str, patch: int, batch: int, steps: int, channels_last: bool, compiled: bool, mallopt: bool,
        device: str, threads: int) -> dict:
    if mallopt:  # keep freed activation buffers in the heap instead of unmapping them (glibc)
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD
    import torch

    from monai_ssl_plugin.backbones import create_backbone
    from monai_ssl_plugin.engine.acceleration import channels_last_3d, compile_network
    from monai_ssl_plugin.engine.run import mae_block_size
    from monai_ssl_plugin.pretext import create_pretext

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = create_backbone(backbone, in_channels=1)
    net = compile_network(channels_last_3d(net, channels_last), compiled).to(device)
    pretext = create_pretext("mae", backbone=net, mask_ratio=0.75, block_size=mae_block_size([patch] * 3)).to(device)
    optimizer = torch.optim.SGD(pretext.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
    x = torch.randn(batch, 1, patch, patch, patch, device=device)
    cuda = device.startswith("cuda")

    def step() -> float:
        torch.manual_seed(0)  # same mask every step: same work
        optimizer.zero_grad(set_to_none=True)
        loss = pretext({"image": x})["loss"]
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return float(loss.detach())

    t = time.perf_counter()
    step()  # warm-up: allocator pools, gradients and optimiser state; torch.compile compiles here
    warmup = time.perf_counter() - t
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = rss_mb()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    if cuda:
        peak_above = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak_above = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base  # kB -> MB (Linux)
    return {"warmup_s": warmup, "step_min_s": min(times), "step_median_s": statistics.median(times),
            "peak_above_base_mb": peak_above}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="nnunet_plain_small")
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default="", help="only configurations whose name contains this")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        cl, comp, mallopt = CONFIGS[a.one]
        print(json.dumps(one(a.backbone, a.patch, a.batch, a.steps, cl, comp, mallopt, a.device, a.threads)))
        return
    print(f"# {os.cpu_count()} cores, {a.threads} torch thread(s), {a.device}, load average {os.getloadavg()[0]:.1f}")
    print(f"| switch ({a.backbone}, MAE, batch {a.batch}, patch {a.patch}³, {a.device}) | first step (s) | step min (s) "
          f"| step median (s) | vs reference (min) | step peak above base (MB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |", flush=True)
    ref = None
    for name in CONFIGS:
        if a.only not in name:
            continue
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--backbone", a.backbone, "--patch", str(a.patch),
                               "--batch", str(a.batch), "--steps", str(a.steps), "--threads", str(a.threads),
                               "--device", a.device], capture_output=True, text=True)
        if proc.returncode:
            print(f"| {name} | failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:120]} | | | | |", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        ref = ref or r["step_min_s"]
        print(f"| {name} | {r['warmup_s']:.1f} | {r['step_min_s']:.2f} | {r['step_median_s']:.2f} | "
              f"{r['step_min_s'] / ref:.2f}× | {r['peak_above_base_mb']:.0f} |", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

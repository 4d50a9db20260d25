"""Peak memory of one pretext training step with and without mixed precision / activation checkpointing.

    python benchmarks/bench_memory.py [--pretext mae] [--backbone nnunet_plain_small] [--patch 64] [--batch 2]
        [--configs fp32,checkpointing]

``--pretext`` is any registered pretext with its own defaults (MAE: the bundle's block size); with
an EMA teacher (BYOL, MoCo, DINO, VoCo) the teacher is a deep copy of the checkpointed backbone.

Each configuration runs in its own process (CPU): build the backbone + MAE pretext, run one warm-up
step, then measure the peak resident set size (``ru_maxrss``) of a second forward + backward
above the resident size just before it. On CUDA the same script reports
``torch.cuda.max_memory_allocated`` instead (``--device cuda``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from _common import rss_mb

CONFIGS = {"fp32": (False, False), "bf16 autocast": (True, False), "checkpointing": (False, True),
           "bf16 + checkpointing": (True, True)}


def one(backbone: str, patch: int, batch: int, amp: bool, ckpt: bool, device: str, pretext_name: str = "mae") -> dict:
    import torch

    from monai_ssl_plugin.backbones import create_backbone
    from monai_ssl_plugin.engine.memory import activation_checkpointing
    from monai_ssl_plugin.engine.run import mae_block_size
    from monai_ssl_plugin.pretext import create_pretext

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = activation_checkpointing(create_backbone(backbone, in_channels=1), ckpt).to(device)
    kwargs = {"mask_ratio": 0.75, "block_size": mae_block_size([patch] * 3)} if pretext_name == "mae" else {}
    pretext = create_pretext(pretext_name, backbone=net, **kwargs).to(device)
    x = torch.randn(batch, 1, patch, patch, patch, device=device)

    def step() -> float:
        pretext.zero_grad(set_to_none=True)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            loss = pretext({"image": x})["loss"]
        loss.backward()
        return float(loss.detach())

    step()  # warm-up: allocator pools, gradients allocated
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
        t = time.perf_counter()
        step()
        torch.cuda.synchronize()
        return {"peak_above_base_mb": torch.cuda.max_memory_allocated() / 2**20 - base, "step_s": time.perf_counter() - t}
    base = rss_mb()
    t = time.perf_counter()
    step()
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB (Linux)
    return {"peak_above_base_mb": peak - base, "peak_rss_mb": peak, "step_s": elapsed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretext", default="mae")
    ap.add_argument("--backbone", default="nnunet_plain_small")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {list(CONFIGS)}")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        amp, ckpt = CONFIGS[a.one]
        print(json.dumps(one(a.backbone, a.patch, a.batch, amp, ckpt, a.device, a.pretext)))
        return
    rows = []
    for name in a.configs.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", name, "--pretext", a.pretext, "--backbone", a.backbone,
                              "--patch", str(a.patch),
                              "--batch", str(a.batch), "--device", a.device], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
        rows.append((name, json.loads(out.stdout.strip().splitlines()[-1])))
    ref = rows[0][1]["peak_above_base_mb"]
    print(f"| configuration ({a.pretext}, {a.backbone}, batch {a.batch}, patch {a.patch}³, {a.device}) | step peak above base (MB) | vs fp32 | step time (s) |")
    print("| --- | --- | --- | --- |")
    for name, r in rows:
        print(f"| {name} | {r['peak_above_base_mb']:.0f} | {r['peak_above_base_mb'] / ref:.2f}× | {r['step_s']:.1f} |")


if __name__ == "__main__":
    main()

"""Time the batched corruptions and view generators against the per-sample reference code.

Run from the repository root::

    python benchmarks/bench_corruptions.py                 # CPU, 2 threads, batch 4
    python benchmarks/bench_corruptions.py --only genesis  # a subset (substring of the name)
    python benchmarks/bench_corruptions.py --device cuda   # unchanged code on a GPU

Each generator runs on a float32 batch of ``--batch`` samples per size (64x64x32, 96^3, 160^3);
after one warm-up call the median of ``--repeats`` calls is divided by the batch size, giving
milliseconds per sample. The reference column holds figures measured on the project machine for
the published per-sample code (Models Genesis, the MONAI tutorial transforms, the Swin UNETR
pretraining augmentation, nnssl's MAE mask); the goal is a 10x speed-up per sample.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai_ssl_plugin.transforms import corruptions as C  # noqa: E402
from monai_ssl_plugin.transforms import views as V  # noqa: E402

try:  # owned by another module; benchmark it only once it exists
    from monai_ssl_plugin.transforms.masking import random_block_mask
except ImportError:  # pragma: no cover - depends on the checkout
    random_block_mask = None

SIZES = {"64x64x32": (64, 64, 32), "96^3": (96, 96, 96), "160^3": (160, 160, 160)}

# (name, size) -> reference milliseconds per sample of the published per-sample code, measured on
# this machine; "per batch" figures are converted below.
REFERENCE_MS = {
    ("models_genesis (full pipeline)", "64x64x32"): 55.0,
    ("models_genesis (full pipeline)", "96^3"): 194.0,
    ("local_pixel_shuffle", "96^3"): 101.0,
    ("bezier_intensity", "96^3"): 174.0,
    ("monai tutorial: 2 views", "96^3"): 17.8,
    ("swin_unetr_augment (2 views)", "96^3"): 25.0,
}
MAE_REFERENCE_MS_PER_BATCH = 31.0  # nnssl MAE mask, batch 2 x 160^3


def generators() -> dict[str, Callable[[torch.Tensor, torch.Generator], object]]:
    """Name -> callable(x, generator) for every generator benchmarked on a (B, 1, *size) batch."""
    return {
        "random_flip": lambda x, g: C.random_flip(x, None, g),
        "local_pixel_shuffle": lambda x, g: C.local_pixel_shuffle(x, g),
        "bezier_intensity": lambda x, g: C.bezier_intensity(x, g),
        "in_painting": lambda x, g: C.in_painting(x, g),
        "out_painting": lambda x, g: C.out_painting(x, g),
        "models_genesis (full pipeline)": lambda x, g: C.models_genesis(x, g),
        "coarse_dropout (in, 6 holes 5-32)": lambda x, g: C.coarse_dropout(
            x, g, holes=6, spatial_size=5, max_spatial_size=32
        ),
        "coarse_dropout (out, 6 holes 20-64)": lambda x, g: C.coarse_dropout(
            x, g, holes=6, spatial_size=20, max_spatial_size=64, dropout_holes=False
        ),
        "coarse_shuffle (10 holes 8)": lambda x, g: C.coarse_shuffle(x, g, holes=10, spatial_size=8),
        "monai tutorial: 2 views": lambda x, g: (C.monai_ssl_view(x, g), C.monai_ssl_view(x, g)),
        "swin_unetr_augment (2 views)": lambda x, g: C.swin_unetr_augment(x, g),
        "random_rotation90": lambda x, g: V.random_rotation90(x, (-2, -1), g),
        "cube_grid (2x2x2, gap 2)": lambda x, g: V.cube_grid(x, 2, 2),
        "multi_crop (2 global + 8 local)": lambda x, g: V.multi_crop(
            x, 2, [s // 2 for s in x.shape[2:]], 8, [s // 4 for s in x.shape[2:]], generator=g
        ),
        "overlapping_crop_pair (1/3 side)": lambda x, g: V.overlapping_crop_pair(
            x, [s // 3 for s in x.shape[2:]], 0.5, g
        ),
        "voco crops (4x4 bases + 4 random)": lambda x, g: (
            V.base_crops_grid(x),
            V.random_crop_with_overlap_targets(x, 4, generator=g),
        ),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time in ms of ``fn`` after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, load average {load:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--only", default="", help="only generators whose name contains this string")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"machine: {machine()}")
    print(f"device {device}, batch {args.batch}, float32, median of {args.repeats} after 1 warm-up\n")
    header = f"| {'generator':36s} | {'size':9s} | {'ms/sample':>9s} | {'reference':>9s} | {'speed-up':>8s} | 10x? |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")

    def row(name: str, size: str, ms: float, ref: float | None) -> None:
        ref_s = f"{ref:9.1f}" if ref is not None else f"{'':9s}"
        speed = f"{ref / ms:7.1f}x" if ref is not None else f"{'':8s}"
        met = ("yes " if ref / ms >= 10 else "no  ") if ref is not None else "    "
        print(f"| {name:36s} | {size:9s} | {ms:9.2f} | {ref_s} | {speed} | {met} |", flush=True)

    gen = torch.Generator(device=device)
    for name, fn in generators().items():
        if args.only not in name:
            continue
        for size_name in args.sizes:
            shape = SIZES[size_name]
            if "rotation" in name or "swin" in name:
                if shape[-1] != shape[-2]:  # 90-degree rotations need a square plane
                    continue
            x = torch.rand(args.batch, 1, *shape, generator=torch.Generator().manual_seed(args.seed)).to(device)
            gen.manual_seed(args.seed)
            ms = time_call(lambda: fn(x, gen), device, args.repeats) / args.batch
            row(name, size_name, ms, REFERENCE_MS.get((name, size_name)))

    if random_block_mask is not None and args.only in "mae mask (random_block_mask, batch 2)":
        gen.manual_seed(args.seed)
        ms = time_call(
            lambda: random_block_mask(2, (160, 160, 160), 16, 0.75, generator=gen, device=device), device, args.repeats
        )
        row("mae mask (random_block_mask, batch 2)", "160^3", ms / 2, MAE_REFERENCE_MS_PER_BATCH / 2)
    elif random_block_mask is None:
        print("(masking.random_block_mask not available: MAE mask row skipped)")
    print(f"\nafter: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time the batched corruptions and view generators against the per-sample reference code.

Run from the repository root::

    python benchmarks/bench_corruptions.py                 # CPU, 2 threads, batch 4
    python benchmarks/bench_corruptions.py --only genesis  # a subset (substring of the name)
    python benchmarks/bench_corruptions.py --no-baseline   # skip the same-run references
    python benchmarks/bench_corruptions.py --device cuda   # the tensor form of every generator on a GPU
    python benchmarks/bench_corruptions.py --tensor-path   # the same tensor form on the CPU

Each generator runs on a float32 batch of ``--batch`` samples per size (64x64x32, 96^3, 160^3);
after one warm-up call the minimum and the median of ``--repeats`` calls are divided by the batch
size, giving milliseconds per sample. Ours is timed alone (as the references were), and the
10x verdict holds our median against the reference median (the same-run one where there is one).

Two comparisons are printed where a reference exists:

* ``recorded``: earlier measurements on the project machine (quiet) of the published per-sample
  code (Models Genesis, the MONAI tutorial transforms, the Swin UNETR pretraining augmentation,
  nnssl's MAE mask); ``x``: against our minimum and our median timed alone.
* ``same-run``: the published per-sample work timed in this run, interleaved call by call with
  ours so that both see the same machine load; ``x same-run`` is the ratio of the two medians
  there, and the 10x verdict uses it; ``x CPU time``: the ratio of the two processes' minimum CPU
  times in that round (what each costs a dedicated core, not stretched by waiting for one). Models Genesis: NumPy loops written here from the published
  settings; the MONAI ViTAutoEnc tutorial: its view pipeline after the crop with MONAI's own
  dictionary transforms (``CopyItemsd``, ``OneOf`` of two ``RandCoarseDropoutd``,
  ``RandCoarseShuffled``) on a ``MetaTensor`` per sample; Swin UNETR: its per-sample rotate and
  cut-out loops (a detached clone each, NumPy ``randint``, normal noise min-max scaled per block),
  written here from the published description. Without a same-run reference (``--no-baseline``,
  the MAE mask) the verdict holds our median against the recorded figure.

``--device cuda`` runs every generator's tensor form on the GPU (one line and exit 2 when torch
sees no GPU); ``--tensor-path`` runs the same tensor form on the CPU instead of the compiled loops.

The allocator is tuned by default (``--no-mallopt`` to compare): glibc's mmap and trim thresholds
are raised (like ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``), since batch tensors above
32 MB (4 x 160^3 float32 is 65 MB) are otherwise mapped fresh for every allocation and
page-faulted in, which dominated the 160^3 timings here. ``--only floor`` prints the memory
bandwidth floor (a plain ``x.clone()`` of the batch) for each size; it is part of every full run.

``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` here (set it in the environment to override): with
the default spinning policy, two OpenMP threads on a shared 2-core machine wait for each other
while the peer is preempted, and every parallel op got 10-20x slower at load 7.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import check_device as _check_device  # noqa: E402
from _common import interleaved_ms, run_cli, use_checkout  # noqa: E402

use_checkout()

from monai_ssl_plugin import transforms as C  # noqa: E402
from monai_ssl_plugin.transforms import _cpu_kernels  # noqa: E402
from monai_ssl_plugin.transforms import views as V  # noqa: E402

try:  # owned by another module; benchmark it only once it exists
    from monai_ssl_plugin.transforms.masking import random_block_mask
except ImportError:  # pragma: no cover - depends on the checkout
    random_block_mask = None

SIZES = {"64x64x32": (64, 64, 32), "96^3": (96, 96, 96), "160^3": (160, 160, 160)}

MG_FULL = "models_genesis (full pipeline)"
MG_SHUFFLE = "local_pixel_shuffle"
MG_BEZIER = "bezier_intensity"
MONAI_VIEWS = "monai tutorial: 2 views"
SWIN = "swin_unetr_augment (2 views)"
MAE = "mae mask (random_block_mask, batch 2)"

# (name, size) -> reference ms per sample of the published per-sample code, measured on this
# machine by the project (the MAE figure is 31 ms per batch of 2).
REFERENCE_MS = {
    (MG_FULL, "64x64x32"): 55.0,
    (MG_FULL, "96^3"): 194.0,
    (MG_SHUFFLE, "96^3"): 101.0,
    (MG_BEZIER, "96^3"): 174.0,
    (MONAI_VIEWS, "96^3"): 17.8,
    (SWIN, "96^3"): 25.0,
    (MAE, "160^3"): 31.0 / 2,
}


def generators() -> dict[str, Callable[[torch.Tensor, torch.Generator], object]]:
    """Name -> callable(x, generator) for every generator benchmarked on a (B, 1, *size) batch."""
    return {
        "random_flip": lambda x, g: C.random_flip(x, None, g),
        MG_SHUFFLE: lambda x, g: C.local_pixel_shuffle(x, g),
        MG_BEZIER: lambda x, g: C.bezier_intensity(x, g),
        "in_painting": lambda x, g: C.in_painting(x, g),
        "out_painting": lambda x, g: C.out_painting(x, g),
        MG_FULL: lambda x, g: C.models_genesis(x, g),
        "coarse_dropout (in, 6 holes 5-32)": lambda x, g: C.coarse_dropout(
            x, g, holes=6, spatial_size=5, max_spatial_size=32
        ),
        "coarse_dropout (out, 6 holes 20-64)": lambda x, g: C.coarse_dropout(
            x, g, holes=6, spatial_size=20, max_spatial_size=64, dropout_holes=False
        ),
        "coarse_shuffle (10 holes 8)": lambda x, g: C.coarse_shuffle(x, g, holes=10, spatial_size=8),
        MONAI_VIEWS: lambda x, g: C.monai_ssl_views(x, g, 2),
        SWIN: lambda x, g: C.swin_unetr_augment(x, g),
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


# ------------------------------------------------------------------------------------------
# per-sample baselines, written from the published settings (docs: ssl_recipes.md)
# ------------------------------------------------------------------------------------------


def _np_local_shuffle(img: np.ndarray, n_blocks: int = 10_000) -> np.ndarray:
    """Models Genesis loop: read each block from the original, shuffle, write to the output."""
    out = img.copy()
    spatial = img.shape[1:]
    for _ in range(n_blocks):
        size = [random.randint(1, max(1, s // 10)) for s in spatial]
        start = [random.randint(0, s - z) for s, z in zip(spatial, size)]
        region = (0, *[slice(a, a + z) for a, z in zip(start, size)])
        window = img[region].flatten()
        np.random.shuffle(window)
        out[region] = window.reshape(size)
    return out


def _np_bezier(img: np.ndarray, n_times: int = 100_000) -> np.ndarray:
    """Models Genesis: Bezier curve sampled at ``n_times`` points, applied with ``np.interp``."""
    pts = np.array([[0.0, 0.0], [random.random(), random.random()], [random.random(), random.random()], [1.0, 1.0]])
    t = np.linspace(0.0, 1.0, n_times)
    basis = np.array([math.comb(3, i) * t ** (3 - i) * (1 - t) ** i for i in range(4)])
    xs, ys = pts[:, 0] @ basis, pts[:, 1] @ basis  # runs from (1, 1) to (0, 0)
    if random.random() < 0.5:
        xs = np.sort(xs)  # inverted mapping
    else:
        xs, ys = np.sort(xs), np.sort(ys)
    return np.interp(img, xs, ys)


def _np_paint(img: np.ndarray) -> np.ndarray:
    spatial = img.shape[1:]
    out = img.copy()
    if random.random() < 0.2:  # in-painting
        count = 5
        while count > 0 and random.random() < 0.95:
            size = [random.randint(s // 6, s // 3) for s in spatial]
            start = [random.randint(3, s - z - 3) for s, z in zip(spatial, size)]
            region = (slice(None), *[slice(a, a + z) for a, z in zip(start, size)])
            out[region] = np.random.rand(*size)
            count -= 1
        return out
    noise = np.random.rand(*img.shape)  # out-painting
    for i in range(random.randint(1, 5)):
        size = [s - random.randint(3 * s // 7, 4 * s // 7) for s in spatial]
        start = [random.randint(3, s - z - 3) for s, z in zip(spatial, size)]
        region = (slice(None), *[slice(a, a + z) for a, z in zip(start, size)])
        noise[region] = img[region]
    return noise


def _np_models_genesis(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = img, img
    count = 3
    while random.random() < 0.4 and count > 0:
        axis = random.randint(1, img.ndim - 1)
        x, y = np.flip(x, axis), np.flip(y, axis)
        count -= 1
    if random.random() < 0.5:
        x = _np_local_shuffle(x)
    if random.random() < 0.9:
        x = _np_bezier(x)
    if random.random() < 0.9:
        x = _np_paint(x)
    return x, y


def _swin_cutout_reference(x: torch.Tensor, donor: torch.Tensor | None) -> torch.Tensor:
    """The Swin UNETR cut-out loop on one (C, *spatial) sample, in place: NumPy's ``randint`` (upper
    bound exclusive) for the target, corners and sides; blocks until the target volume is reached;
    each noise block standard normal, min-max scaled to [0, 1]; or the donor's block pasted."""
    spatial = x.shape[1:]
    target = np.random.uniform(0, 0.3) * math.prod(spatial)
    tol = [int(0.05 * s) for s in spatial]
    big = [int(0.25 * s) for s in spatial]
    total = 0
    while total < target:
        start = [np.random.randint(0, s - t) for s, t in zip(spatial, tol)]
        end = [min(np.random.randint(t, b) + a, s) for a, t, b, s in zip(start, tol, big, spatial)]
        region = (slice(None), *[slice(a, e) for a, e in zip(start, end)])
        if donor is None:
            noise = torch.empty((x.shape[0], *[e - a for a, e in zip(start, end)]), dtype=x.dtype).normal_()
            x[region] = (noise - torch.min(noise)) / (torch.max(noise) - torch.min(noise))
        else:
            x[region] = donor[region]
        total += math.prod(e - a for a, e in zip(start, end))
    return x


def _swin_rotate_reference(batch: torch.Tensor) -> torch.Tensor:
    """Swin UNETR's rotation step: a detached clone, each sample replaced by its rotation (0-3 x 90
    degrees in the last plane), the class kept as a label."""
    out = batch.detach().clone()
    labels = torch.zeros(len(batch), dtype=torch.long)
    for i in range(len(batch)):
        k = np.random.randint(0, 4)
        out[i] = batch[i].rot90(k, (2, 3)) if k else batch[i]
        labels[i] = k
    return out


def _swin_augment_reference(batch: torch.Tensor) -> torch.Tensor:
    """Swin UNETR's cut-out step: a detached clone, each sample cut with noise, then (when a random
    index ``randint(0, n)`` names another sample) with blocks of that sample pasted in."""
    out = batch.detach().clone()
    n = len(batch)
    for i in range(n):
        out[i] = _swin_cutout_reference(out[i], None)
        j = np.random.randint(0, n)
        if j != i:
            out[i] = _swin_cutout_reference(out[i], out[j])
    return out


def _swin_reference(batch: torch.Tensor) -> list[torch.Tensor]:
    """The published Swin UNETR pretraining step's two views: rotate, then cut out, once per view."""
    return [_swin_augment_reference(_swin_rotate_reference(batch)) for _ in range(2)]


def _monai_tutorial_reference() -> Callable[[torch.Tensor], list[dict]]:
    """The MONAI ViTAutoEnc tutorial's view pipeline after its crop, per sample on a MetaTensor:
    ``CopyItemsd`` (ground truth and a second view), then for each view a ``OneOf`` of in- and
    out-painting ``RandCoarseDropoutd`` and a ``RandCoarseShuffled`` (p 0.8), as the tutorial
    composes them (one call per view, so the two views differ)."""
    from monai.data import MetaTensor
    from monai.transforms import Compose, CopyItemsd, OneOf, RandCoarseDropoutd, RandCoarseShuffled

    def view(key: str) -> list:
        return [
            OneOf([
                RandCoarseDropoutd(keys=[key], prob=1.0, holes=6, spatial_size=5, dropout_holes=True,
                                   max_spatial_size=32),
                RandCoarseDropoutd(keys=[key], prob=1.0, holes=6, spatial_size=20, dropout_holes=False,
                                   max_spatial_size=64),
            ]),
            RandCoarseShuffled(keys=[key], prob=0.8, holes=10, spatial_size=8),
        ]

    pipeline = Compose([CopyItemsd(keys=["image"], times=2, names=["gt_image", "image_2"]),
                        *view("image"), *view("image_2")])
    return lambda batch: [pipeline({"image": MetaTensor(s)}) for s in batch]


def baselines() -> dict[str, Callable[[torch.Tensor], object]]:
    """Name -> the published per-sample code's work on a (B, 1, *size) batch, for the rows with a
    reference: Models Genesis as NumPy loops from the published settings, the MONAI tutorial
    pipeline with MONAI's own dictionary transforms, Swin UNETR's rotate + cut-out loops."""
    tutorial = _monai_tutorial_reference()
    return {
        MG_SHUFFLE: lambda x: [_np_local_shuffle(s) for s in x.numpy()],
        MG_BEZIER: lambda x: [_np_bezier(s) for s in x.numpy()],
        MG_FULL: lambda x: [_np_models_genesis(s) for s in x.numpy()],
        MONAI_VIEWS: tutorial,
        SWIN: _swin_reference,
    }


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------


def time_calls(fns: list[Callable[[], object]], device: torch.device, repeats: int) -> list[tuple[float, float, float]]:
    """(minimum wall, median wall, minimum CPU) time in ms of each function after one warm-up call
    each; the functions run interleaved (a, b, a, b, ...) so that they see the same machine load.

    On a shared machine the minimum wall time is the least disturbed run and the median shows what
    the load made of it. The CPU time (this process, all threads, user + system) is not stretched
    by waiting for a core: for a CPU-bound call on an otherwise idle machine the wall time cannot
    exceed it (some thread of the call is always running), so it bounds the quiet wall time from
    above -- the load-robust figure to hold against references measured on a quiet machine. (It is
    still inflated somewhat by cache and memory-bandwidth contention from the other jobs.)"""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    wall, cpu = interleaved_ms(fns, repeats, sync)
    return [(min(t), statistics.median(t), min(c)) for t, c in zip(wall, cpu)]


def tune_malloc() -> bool:
    """Keep large freed blocks in the heap instead of unmapping them (glibc only)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter ids from <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1))
    except (OSError, AttributeError):
        return False


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
        f"{torch.get_num_threads()} torch threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
        f"load average {load:.2f}"
    )


def check_device(name: str) -> torch.device:
    """The device to run on; a CUDA device without a GPU is refused in one line."""
    return _check_device(name, "Run on a machine with a GPU, or use --device cpu (with --tensor-path for the code "
                               "CUDA runs).")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--only", default="", help="only generators whose name contains this string")
    parser.add_argument("--no-baseline", action="store_true", help="skip the same-run per-sample references")
    parser.add_argument("--tensor-path", action="store_true",
                        help="on CPU, run the tensor form (the code CUDA runs) instead of the compiled loops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-mallopt", dest="mallopt", action="store_false",
                        help="keep glibc's default mmap/trim thresholds (default: raise them, see above)")
    parser.add_argument("--mallopt", dest="mallopt", action="store_true", help=argparse.SUPPRESS)  # the old flag
    parser.set_defaults(mallopt=True)
    return parser.parse_args(argv)


WIDTHS = [38, 9, 8, 8, 8, 9, 8, 8, 8, 11, 10, 10]


def print_header(args: argparse.Namespace, device: torch.device) -> None:
    print(f"machine: {machine()}")
    print(
        f"device {device}{' (tensor form)' if args.tensor_path else ''}, batch {args.batch}, float32, min / median of {args.repeats} after 1 warm-up; ms per sample; "
        f"mallopt {'tuned' if args.mallopt else 'default'}\n"
    )
    cols = ["generator", "size", "ours min", "ours med", "ours CPU", "recorded", "x (min)", "x (med)", "same-run",
            "x same-run", "x CPU time", "10x?"]
    print("| " + " | ".join(f"{c:{w}s}" for c, w in zip(cols, WIDTHS)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in WIDTHS) + "|")


def print_row(name: str, size: str, t: tuple[float, float, float], ref: float | None,
              paired: tuple[float, float, float] | None) -> None:
    """One table row. ``ref``: the reference median measured earlier (x: against our minimum and median
    run alone). ``paired``: (reference median, reference median / our median, CPU-time ratio) from the
    interleaved same-run round; the verdict holds our median against the same-run reference where there is one."""
    ms, med, cpu = t
    cells = [f"{name:38s}", f"{size:9s}", f"{ms:8.2f}", f"{med:8.2f}", f"{cpu:8.2f}"]
    cells += [f"{ref:9.1f}", f"{ref / ms:7.1f}x", f"{ref / med:7.1f}x"] if ref is not None else [" " * 9] + [" " * 8] * 2
    cells += [f"{paired[0]:8.1f}", f"{paired[1]:10.1f}x", f"{paired[2]:9.1f}x"] if paired is not None else [
        " " * 8, " " * 11, " " * 10]
    ratio = paired[1] if paired else ref / med if ref is not None else None
    verdict = "" if ratio is None else "yes" if ratio >= 10 else "no"
    cells.append(f"{verdict:10s}")
    print("| " + " | ".join(cells) + " |", flush=True)


def bench_generators(args: argparse.Namespace, device: torch.device, gen: torch.Generator,
                     base: dict[str, Callable[[torch.Tensor], object]]) -> None:
    """A row per generator and size: ours alone (as the references were measured), then interleaved
    with the same-run reference where there is one (same load)."""
    for name, fn in generators().items():
        if args.only not in name:
            continue
        for size_name in args.sizes:
            shape = SIZES[size_name]
            if ("rotation" in name or "swin" in name) and shape[-1] != shape[-2]:
                continue  # 90-degree rotations need a square plane
            x = torch.rand(args.batch, 1, *shape, generator=torch.Generator().manual_seed(args.seed))
            ref = REFERENCE_MS.get((name, size_name))
            x_dev = x.to(device)
            gen.manual_seed(args.seed)
            ours = lambda: fn(x_dev, gen)  # noqa: E731
            t = time_calls([ours], device, args.repeats)[0]
            paired = None
            if name in base:
                baseline = lambda: base[name](x)  # noqa: E731
                ours_paired, base_t = time_calls([ours, baseline], device, args.repeats)
                paired = (base_t[1] / args.batch, base_t[1] / ours_paired[1], base_t[2] / ours_paired[2])
            print_row(name, size_name, tuple(v / args.batch for v in t), ref, paired)


def bench_mask_and_floor(args: argparse.Namespace, device: torch.device, gen: torch.Generator) -> None:
    """The MAE mask row (against its recorded reference) and the memory-bandwidth floor rows."""
    if random_block_mask is None:
        print("(masking.random_block_mask not available: MAE mask row skipped)")
    elif args.only in MAE:
        gen.manual_seed(args.seed)
        (t,) = time_calls(
            [lambda: random_block_mask(2, (160, 160, 160), 16, 0.75, generator=gen, device=device)], device, args.repeats
        )
        print_row(MAE, "160^3", tuple(v / 2 for v in t), REFERENCE_MS[(MAE, "160^3")], None)
    if args.only in "floor":  # memory-bandwidth floor: one plain copy of the input batch per size
        for size_name in args.sizes:
            x = torch.rand(args.batch, 1, *SIZES[size_name], device=device)
            (t,) = time_calls([lambda: x.clone()], device, args.repeats)
            print_row("floor: x.clone() of the batch", size_name, tuple(v / args.batch for v in t), None, None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mallopt and not tune_malloc():
        print("mallopt unavailable: running with the default allocator settings")
    device = check_device(args.device)
    if args.tensor_path:
        _cpu_kernels.HAVE_NUMBA = False  # every generator takes its tensor form, as on a GPU
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    base = {} if args.no_baseline else baselines()
    print_header(args, device)
    gen = torch.Generator(device=device)
    bench_generators(args, device, gen, base)
    bench_mask_and_floor(args, device, gen)
    print(f"\nafter: {machine()}")
    return 0


if __name__ == "__main__":
    run_cli(main)

"""Per pretraining bundle: data-wait share of the step, and step cost against the bare step.

Runs every ``bundles/*_ssl_pretraining`` bundle for a few steps through the real bundle run
(``monai_ssl_plugin.engine.run.pretrain``, what ``monai-ssl pretrain`` does), one child process
per bundle, on a synthetic nnU-Net raw dataset written to a temporary folder::

    python benchmarks/bench_step_overhead.py                       # every bundle, CPU patches (below)
    python benchmarks/bench_step_overhead.py --only mae,swin --steps 6
    python benchmarks/bench_step_overhead.py --default-patches     # the bundles' own patch sizes (GPU)

Figures per bundle, over the steps after the first (worker start-up, allocator warm-up):

* data wait = time in ``next(loader)`` / step time (the bundle's ``DataWaitHandler``);
* data path = time spent inside the plugin's corruption / view / mask generators
  (``monai_ssl_plugin.transforms``: ``.models_genesis``, ``.coarse``, ``.swin_unetr``, ``.views``,
  ``.masking``; outermost calls only) during the step -- these run in the pretext's forward, on the
  training device;
* step / bare = (step - wait) / (step - wait - data path): what the step costs against the same
  step without generating the corrupted views (network forward + backward + optimiser, losses and
  handlers). Targets: wait < 5 %, step / bare <= 1.10.

Every bundle keeps its defaults (batch, backbone, pretext settings, loader workers) except the
patch size: on CPU the default patches (96^3-128^3) take tens of seconds per step, so ``CPU_PATCH``
below scales them down (stated in the output); ``--default-patches`` keeps them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, add_child_args, child_result, print_result, select, use_checkout

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_corruptions.py: spinning threads on a shared CPU


# CPU patch per bundle (z, y, x): each bundle's constraints kept (square rotation planes, multiples
# of 32 for Swin UNETR, the ViT's fixed img_size, cells of the relative-position grid >= 17 voxels).
CPU_PATCH: dict[str, list[int]] = {
    "barlow_twins_ssl_pretraining": [48, 48, 48],
    "byol_ssl_pretraining": [48, 48, 48],
    "denoising_ae_ssl_pretraining": [64, 64, 64],
    "dino_ssl_pretraining": [48, 48, 48],
    "hybrid_ssl_pretraining": [64, 64, 64],
    "mae_ssl_pretraining": [48, 48, 48],
    "mae_vit_ssl_pretraining": [96, 96, 96],
    "moco_ssl_pretraining": [48, 48, 48],
    "models_genesis_ssl_pretraining": [32, 64, 64],
    "relative_position_ssl_pretraining": [64, 64, 64],
    "rotation_ssl_pretraining": [64, 64, 64],
    "rubiks_cube_ssl_pretraining": [64, 64, 64],
    "simclr_ssl_pretraining": [48, 48, 48],
    "simsiam_ssl_pretraining": [48, 48, 48],
    "swin_unetr_ssl_pretraining": [64, 64, 64],
    "vicreg_ssl_pretraining": [48, 48, 48],
    "voco_ssl_pretraining": [32, 128, 128],
}


def _instrument_transforms() -> list[float]:
    """Wrap every public generator of the transforms package, wherever it was imported, with an
    outermost-call timer; returns the one-element accumulator (seconds)."""
    import torch

    import monai_ssl_plugin.pretext  # noqa: F401  (imports every pretext module, registering it)
    from monai_ssl_plugin.transforms import coarse, masking, models_genesis, swin_unetr, views

    total = [0.0]
    depth = [0]

    def timed(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                total[0] += time.perf_counter() - start
                depth[0] -= 1

        return inner

    originals = {}
    for module in (models_genesis, coarse, swin_unetr, views, masking):
        for name in getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]:
            obj = getattr(module, name, None)
            if callable(obj) and not isinstance(obj, type) and getattr(obj, "__module__", "") == module.__name__:
                originals[id(obj)] = timed(obj)
    for mod_name, module in list(sys.modules.items()):
        if not mod_name.startswith("monai_ssl_plugin") or module is None:
            continue
        for name, obj in list(vars(module).items()):
            if id(obj) in originals and callable(obj):
                setattr(module, name, originals[id(obj)])
    return total


def run_one(args: argparse.Namespace) -> dict:
    """One bundle in this process."""
    import torch

    from monai_ssl_plugin.engine.handlers.data_wait import DataWaitHandler
    from monai_ssl_plugin.engine.run import pretrain

    torch.set_num_threads(args.threads)
    total = _instrument_transforms()
    per_step: list[float] = []
    last = [0.0]
    batch_started = DataWaitHandler._batch_started

    def marked(self, engine):  # step boundary: the data-path time of the step that just ended
        per_step.append(total[0] - last[0])
        last[0] = total[0]
        batch_started(self, engine)

    DataWaitHandler._batch_started = marked
    out = Path(args.work) / args.bundle
    overrides = {"train#epoch_length": args.steps, "train#trainer#max_epochs": 1, "save_every_n_iters": 0}
    if args.patch:
        overrides["patch_size"] = json.loads(args.patch)
    t0 = time.perf_counter()
    pretrain(args.bundle, args.dataset, out, quiet=True, device=args.device, **overrides)
    wall = time.perf_counter() - t0
    per_step.append(total[0] - last[0])  # the last step ends at COMPLETED
    rows = [line.split(",") for line in (out / "timing.csv").read_text().splitlines()[1:]]
    # per_step[0] is before the first batch; per_step[i] belongs to row i-1 (the step it closes)
    data_path = per_step[1 : len(rows) + 1]
    steady = list(zip(rows, data_path))[1:]  # the first step pays worker start-up and warm-up
    wait = sum(float(r[1]) for r, _ in steady)
    step = sum(float(r[2]) for r, _ in steady)
    path = sum(d for _, d in steady)
    compute = step - wait
    return {"bundle": args.bundle, "patch": json.loads(args.patch) if args.patch else "default",
            "steps": len(steady), "step_s": step / len(steady), "wait_share": wait / step,
            "data_path_s": path / len(steady), "data_path_share": path / compute,
            "step_over_bare": compute / max(compute - path, 1e-9), "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated substrings of bundle names")
    p.add_argument("--steps", type=int, default=4, help="steps per bundle; the first is excluded")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--device", default="cpu")
    p.add_argument("--default-patches", action="store_true", help="keep each bundle's own patch size")
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--shape", type=int, default=96, help="side of the synthetic volumes")
    p.add_argument("--json", help="also write the results here")
    add_child_args(p)
    p.add_argument("--bundle", help=argparse.SUPPRESS)
    p.add_argument("--patch", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print_result(run_one(args))
        return

    use_checkout()
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset

    from monai_ssl_plugin.bundles import list_bundles

    bundles = select([b for b in list_bundles() if b.endswith("_ssl_pretraining")], args.only)
    print(f"# {platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, device {args.device}, "
          f"{args.steps} steps per bundle (first excluded), load average {os.getloadavg()[0]:.1f}", flush=True)
    print("| bundle | patch | s/step | data wait | data path (s/step) | data path share | step / bare | targets met |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_step_overhead_") as work:
        dataset = make_synthetic_dataset(Path(work) / "raw", 991, "Overhead", n_labelled=0, n_unlabelled=args.cases,
                                         shape=(args.shape,) * 3, spacing=(1.0, 1.0, 1.0), seed=0)
        for bundle in bundles:
            patch = None if args.default_patches else CPU_PATCH.get(bundle)
            cmd = [sys.executable, __file__, "--one", "--bundle", bundle, "--dataset", str(dataset), "--work", work,
                   "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
            if patch:
                cmd += ["--patch", json.dumps(patch)]
            r, proc = child_result(cmd, cwd=ROOT)
            if r is None:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                print(f"| {bundle} | {patch or 'default'} | failed: {tail[0][:150]} | | | | | |", flush=True)
                continue
            results.append(r)
            ok = r["wait_share"] < 0.05 and r["step_over_bare"] <= 1.10
            patch_txt = "×".join(map(str, r["patch"])) if isinstance(r["patch"], list) else r["patch"]
            print(f"| {bundle} | {patch_txt} | {r['step_s']:.2f} | {100 * r['wait_share']:.1f} % | "
                  f"{r['data_path_s']:.4f} | {100 * r['data_path_share']:.2f} % | {r['step_over_bare']:.3f} | "
                  f"{'yes' if ok else 'no'} |", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

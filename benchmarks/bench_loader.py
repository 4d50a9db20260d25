"""Patches per second per data-loading worker, the plugin's data path against nnU-Net's own loader.

Run from the repository root::

    python benchmarks/bench_loader.py                          # every bundle at its published patch size
    python benchmarks/bench_loader.py --only mae,swin --repeats 7
    python benchmarks/bench_loader.py --step-ms 100 250 500    # workers a GPU step of that length needs
    python benchmarks/bench_loader.py --tiny                   # seconds: sizes / 8 (the test's setting)

One folder of synthetic volumes is written twice, as an nnU-Net preprocessed dataset (blosc2
``.b2nd`` files, chunked for the patch as nnU-Net's preprocessor chunks them) and as a folder of
``.nii.gz`` files. For each bundle, with the bundle's batch size and its published patch size, one
batch is timed at a time, in one process with one torch / numba / blosc2 thread (what one
``DataLoader`` worker has), interleaved call by call so that all columns see the same load:

* ``nnU-Net``: ``nnunetv2``'s ``nnUNetDataLoader`` on the preprocessed files with the transforms
  of ``nnUNetTrainer.get_training_transforms`` (its default 3D augmentation, initial patch enlarged
  for rotation as nnU-Net does); ``nnU-Net crop``: the same loader without transforms.
* ``plugin``: the plugin's ``RandomPatchDataset`` over ``NnUNetPreprocessedSource`` (same files) or
  ``NiftiFolderSource`` (the ``.nii.gz`` copy), collated, then the bundle's corruption or view
  generator on the batch (what the pretext runs before the network), ``cache_size=0`` (every patch
  reads its volume: a dataset much larger than the cache) and default cache (16 volumes).

Printed per bundle: wall ms per patch (median of ``--repeats``), the ratio nnU-Net / plugin of the
wall medians (> 1: the plugin is faster), patches/s per worker and the workers a GPU step of
``--step-ms`` needs so that the next batch is ready when the step ends, ceil(batch time / step
time) -- both from the plugin's CPU time per patch (the slower of its two b2nd columns), what a
dedicated core spends, so that a loaded benchmark machine does not inflate them. The JSON holds
the wall and CPU medians of every column.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_corruptions.py
os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # one worker = one thread

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import interleaved_ms, select, use_checkout  # noqa: E402

use_checkout()

from monai_ssl_plugin import transforms as C  # noqa: E402
from monai_ssl_plugin.transforms import views as V  # noqa: E402
from monai_ssl_plugin.transforms.masking import random_block_mask  # noqa: E402

Generator = Callable[[torch.Tensor, torch.Generator], object]


def _pair(x: torch.Tensor, g: torch.Generator, side: int) -> object:
    crop = [min(side, s) for s in x.shape[2:]]
    return C.random_flip(V.overlapping_crop_pair(x, crop, 0.5, g)[0], None, g)


def _mae(x: torch.Tensor, g: torch.Generator) -> object:
    mask = random_block_mask(x.shape[0], tuple(x.shape[2:]), 16, 0.75, generator=g, device=x.device)
    return x * mask[:, None].to(x.dtype) if mask.dim() == x.dim() - 1 else mask


# bundle -> (published patch (z, y, x), batch, where the size is published, the pretext's generator)
BUNDLES: dict[str, tuple[tuple[int, ...], int, str, Generator]] = {
    "mae_ssl_pretraining": ((160, 160, 160), 2, "nnssl MAE / SparK", _mae),
    "mae_vit_ssl_pretraining": ((160, 160, 160), 2, "nnssl Primus MAE", _mae),
    "swin_unetr_ssl_pretraining": ((96, 96, 96), 2, "Swin UNETR", lambda x, g: C.swin_unetr_augment(x, g)),
    "models_genesis_ssl_pretraining": ((32, 64, 64), 6, "Models Genesis", lambda x, g: C.models_genesis(x, g)),
    "denoising_ae_ssl_pretraining": ((96, 96, 96), 4, "MONAI ViTAutoEnc tutorial",
                                     lambda x, g: C.monai_ssl_views(x, g, 2)),
    "rotation_ssl_pretraining": ((96, 96, 96), 4, "Swin UNETR ROI",
                                 lambda x, g: V.random_rotation90(x, (-2, -1), g)),
    "rubiks_cube_ssl_pretraining": ((128, 128, 128), 4, "bundle default", lambda x, g: V.cube_grid(x, 2, 2)),
    "relative_position_ssl_pretraining": ((96, 96, 96), 8, "bundle default", lambda x, g: V.cube_grid(x, 3, 2)),
    "simclr_ssl_pretraining": ((64, 192, 192), 2, "nnssl: 64^3 crops of 192x192x64", lambda x, g: _pair(x, g, 64)),
    "voco_ssl_pretraining": ((64, 256, 256), 2, "VoCo: 64^3 bases of 64x256x256", lambda x, g: (
        V.base_crops_grid(x, (4, 4), (1, 2)), V.random_crop_with_overlap_targets(x, 4, grid=(4, 4), axes=(1, 2),
                                                                                  generator=g))),
    "dino_ssl_pretraining": ((64, 64, 64), 2, "bundle default", lambda x, g: V.multi_crop(
        x, 2, [s // 2 for s in x.shape[2:]], 8, [s // 4 for s in x.shape[2:]], generator=g)),
}
for _name in ("byol", "moco", "simsiam", "barlow_twins", "vicreg"):  # the same two-view pipeline as SimCLR
    BUNDLES[f"{_name}_ssl_pretraining"] = ((64, 192, 192), 4 if _name == "barlow_twins" else 2,
                                           "nnssl contrastive setting", BUNDLES["simclr_ssl_pretraining"][3])
BUNDLES["hybrid_ssl_pretraining"] = ((96, 96, 96), 2, "Swin UNETR ROI", BUNDLES["swin_unetr_ssl_pretraining"][3])


def tiny(patch: tuple[int, ...]) -> tuple[int, ...]:
    """A test-sized patch: each side / 8, at least 8 (generators with grids still fit)."""
    return tuple(max(8, p // 8) for p in patch)


# ------------------------------------------------------------------------------------------
# the data: one set of volumes, as nnU-Net preprocessed files and as NIfTI
# ------------------------------------------------------------------------------------------


def _volume(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A smooth z-scored volume (compresses like an image, not like noise)."""
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.linspace(0, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    field = sum(np.sin(2 * np.pi * rng.uniform(1, 4) * a + rng.uniform(0, 6)) for a in axes)
    field = field + 0.1 * rng.standard_normal(shape, dtype=np.float32)
    return ((field - field.mean()) / field.std()).astype(np.float32)[None]


def write_data(root: Path, shape: tuple[int, ...], patch: tuple[int, ...], cases: int) -> tuple[Path, Path]:
    """Write ``cases`` volumes of ``shape`` as an nnU-Net preprocessed dataset and a NIfTI folder."""
    import nibabel as nib
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, comp_blosc2_params

    pre = root / "Dataset990_Bench"
    data = pre / "nnUNetPlans_3d_fullres"
    nifti = root / "nifti"
    data.mkdir(parents=True)
    nifti.mkdir()
    blocks, chunks = comp_blosc2_params(((1, *shape)), patch, 4)
    for i in range(cases):
        image = _volume(shape, i)
        seg = np.zeros_like(image, dtype=np.int8)
        props = {"spacing": [1.0] * 3, "shape_before_cropping": shape, "class_locations": {1: np.zeros((0, 4))}}
        nnUNetDatasetBlosc2.save_case(image, seg, props, str(data / f"case_{i:03d}"), chunks=chunks, blocks=blocks)
        nib.save(nib.Nifti1Image(image[0].transpose(2, 1, 0), np.eye(4)), str(nifti / f"case_{i:03d}.nii.gz"))
    config = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
              "batch_size": 2, "patch_size": list(patch), "median_image_size_in_voxels": list(shape),
              "spacing": [1.0] * 3, "normalization_schemes": ["ZScoreNormalization"],
              "use_mask_for_norm": [False], "resampling_fn_data": "resample_data_or_seg_to_shape",
              "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {},
              "resampling_fn_seg_kwargs": {}, "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
              "resampling_fn_probabilities_kwargs": {}, "architecture": {"network_class_name": "x",
                                                                          "arch_kwargs": {}, "_kw_requires_import": []},
              "batch_dice": False}
    plans = {"dataset_name": pre.name, "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1.0] * 3,
             "original_median_shape_after_transp": list(shape), "image_reader_writer": "NibabelIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"3d_fullres": config},
             "experiment_planner_used": "bench", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {}}
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    (pre / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "x": 1},
                                                  "numTraining": cases, "file_ending": ".nii.gz"}))
    return pre, nifti


# ------------------------------------------------------------------------------------------
# the three data paths, one batch per call
# ------------------------------------------------------------------------------------------


def nnunet_loader(pre: Path, patch: tuple[int, ...], batch: int, with_transforms: bool) -> Callable[[], object]:
    """nnU-Net's training loader on the preprocessed files: one ``generate_train_batch`` per call."""
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    rotation = (-30.0 / 360 * 2 * math.pi, 30.0 / 360 * 2 * math.pi)  # nnU-Net's 3D default
    transforms, initial = None, patch
    if with_transforms:
        initial = tuple(int(s) for s in get_patch_size(patch, rotation, rotation, rotation, (0.85, 1.25)))
        transforms = nnUNetTrainer.get_training_transforms(
            patch, rotation, None, (0, 1, 2), False, use_mask_for_norm=[False], is_cascaded=False,
            foreground_labels=[1], regions=None, ignore_label=None)
    dataset = nnUNetDatasetBlosc2(str(pre / "nnUNetPlans_3d_fullres"))
    labels = LabelManager({"background": 0, "x": 1}, regions_class_order=None)
    loader = nnUNetDataLoader(dataset, batch, initial, patch, labels, oversample_foreground_percent=0.0,
                              transforms=transforms)
    return loader.generate_train_batch


def plugin_loader(source: object, patch: tuple[int, ...], batch: int, cache_size: int,
                  generator: Generator | None) -> Callable[[], object]:
    """The plugin's patch dataset, collated, then the bundle's generator: one batch per call."""
    from torch.utils.data import default_collate

    from monai_ssl_plugin.data.dataset import RandomPatchDataset

    dataset = RandomPatchDataset(source, patch, num_samples=10**9, seed=0, cache_size=cache_size)
    counter = iter(range(10**9))
    gen = torch.Generator().manual_seed(0)

    def call() -> object:
        x = default_collate([dataset[next(counter)] for _ in range(batch)])["image"]
        return generator(x, gen) if generator is not None else x

    return call


def time_interleaved(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, float]]:
    """(median wall, median CPU) time in ms of each function, after one warm-up call each, called
    a, b, c, a, b, c... The CPU time (this process) is what the call costs a dedicated core: on a
    loaded machine the wall time also holds the waits for a core."""
    wall, cpu = interleaved_ms(fns, repeats)
    return [(statistics.median(t), statistics.median(c)) for t, c in zip(wall, cpu)]


COLUMNS = ["nnU-Net", "nnU-Net crop", "plugin b2nd stream", "plugin b2nd cached", "plugin nifti stream",
           "plugin nifti cached"]


def bench_bundle(bundle: str, patch: tuple[int, ...], batch: int, pre: Path, nifti: Path, repeats: int
                 ) -> dict[str, dict[str, float]]:
    """Wall and CPU ms per patch of every column for one bundle (all columns interleaved)."""
    from monai_ssl_plugin.data.sources import NiftiFolderSource, NnUNetPreprocessedSource

    gen = BUNDLES[bundle][3]
    pre_source, nifti_source = NnUNetPreprocessedSource(pre), NiftiFolderSource(nifti)
    fns = [nnunet_loader(pre, patch, batch, True), nnunet_loader(pre, patch, batch, False),
           plugin_loader(pre_source, patch, batch, 0, gen), plugin_loader(pre_source, patch, batch, 16, gen),
           plugin_loader(nifti_source, patch, batch, 0, gen), plugin_loader(nifti_source, patch, batch, 16, gen)]
    timed = time_interleaved(fns, repeats)
    return {"wall": {n: w / batch for n, (w, _) in zip(COLUMNS, timed)},
            "cpu": {n: c / batch for n, (_, c) in zip(COLUMNS, timed)}}


def workers_needed(ms_per_patch: float, batch: int, step_ms: float) -> int:
    """Loader workers that deliver one batch per GPU step of ``step_ms``: ceil(batch time / step)."""
    return max(1, math.ceil(ms_per_patch * batch / step_ms))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated substrings of bundle names")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--margin", type=float, default=1.5, help="volume side / patch side")
    parser.add_argument("--step-ms", type=float, nargs="+", default=[100.0, 300.0, 1000.0],
                        help="GPU step lengths to size the workers for")
    parser.add_argument("--tiny", action="store_true", help="patch sides / 8 (a test in seconds)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    bundles = select(BUNDLES, args.only)
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}, 1 thread "
          f"per worker, median of {args.repeats} batches after 1 warm-up, ms per patch; "
          f"volumes {args.margin:g} x the patch per side, {args.cases} cases", flush=True)
    steps = " | ".join(f"workers @{s:g} ms" for s in args.step_ms)
    print("| bundle | patch | batch | " + " | ".join(COLUMNS) + " | nnU-Net / plugin (b2nd stream, nifti stream) "
          "| plugin patches/s per worker (CPU time, b2nd) | " + steps + " |")
    print("|" + " --- |" * (5 + len(COLUMNS) + len(args.step_ms)), flush=True)
    results, datasets = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as work:
        for bundle in bundles:
            patch, batch = BUNDLES[bundle][:2]
            patch = tiny(patch) if args.tiny else patch
            if patch not in datasets:
                shape = tuple(int(math.ceil(p * args.margin)) for p in patch)
                datasets[patch] = write_data(Path(work) / "x".join(map(str, patch)), shape, patch, args.cases)
            timed = bench_bundle(bundle, patch, batch, *datasets[patch], args.repeats)
            ms, cpu = timed["wall"], timed["cpu"]
            worst = max(cpu["plugin b2nd stream"], cpu["plugin b2nd cached"])  # a dedicated core's cost
            need = [workers_needed(worst, batch, s) for s in args.step_ms]
            results.append({"bundle": bundle, "patch": list(patch), "batch": batch, "ms_per_patch": ms,
                            "cpu_ms_per_patch": cpu, "workers": dict(zip(map(str, args.step_ms), need))})
            cells = " | ".join(f"{ms[c]:.1f}" for c in COLUMNS)
            print(f"| {bundle} | {'x'.join(map(str, patch))} | {batch} | {cells} | "
                  f"{ms['nnU-Net'] / ms['plugin b2nd stream']:.1f}x, {ms['nnU-Net'] / ms['plugin nifti stream']:.1f}x | "
                  f"{1e3 / worst:.1f} | " + " | ".join(map(str, need)) + " |", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

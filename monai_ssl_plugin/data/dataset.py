"""Random patches from an unlabelled source, reproducible per (seed, index), and their loader.

Item ``i`` is a random case and a random crop drawn from a generator seeded with ``(seed, i)``,
so the patches do not depend on the number of workers or on which worker loads them. A run that
draws ``num_samples`` patches sees ``num_samples`` different crops: set it to the number of
patches the run consumes (iterations x batch size) rather than cycling a short dataset.
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from monai_ssl_plugin.data.sources import UnlabelledSource
from monai_ssl_plugin.errors import PluginError


def pad_to(volume: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Zero-pad the spatial axes of (C, *spatial) symmetrically up to at least ``size``.

    Padding happens after normalisation with 0, as nnU-Net's own data loader pads: 0 is the mean
    of a z-scored volume, so no artificial bright or dark border appears.
    """
    pads = [(0, 0)] + [((max(0, p - s)) // 2, max(0, p - s) - max(0, p - s) // 2)
                       for s, p in zip(volume.shape[1:], size)]
    if not any(a or b for a, b in pads):
        return volume
    return np.pad(volume, pads, mode="constant", constant_values=0.0)


class RandomPatchDataset(Dataset):
    """``item i -> {"image": FloatTensor (C, *patch_size)}``: random case, random crop.

    Args:
        source: an :class:`~monai_ssl_plugin.data.sources.UnlabelledSource`.
        patch_size: spatial patch size, in the source's axis order.
        num_samples: length of the dataset (patches per pass).
        seed: patches are a pure function of (seed, index).
        cache_size: loaded volumes kept in memory (least recently used dropped first), per
            worker process; 0 disables caching.
    """

    def __init__(self, source: UnlabelledSource, patch_size: Sequence[int], num_samples: int, seed: int = 0,
                 cache_size: int = 16):
        if len(source) == 0:
            raise PluginError("The data source has no cases.", "Point the data path at a folder with images.")
        dims = int(source.info.get("spatial_dims", len(patch_size)))
        if len(patch_size) != dims or any(int(p) < 1 for p in patch_size):
            raise PluginError(f"patch_size {list(patch_size)} does not fit {dims}D data.",
                              f"Give {dims} positive sizes, in the data's axis order ({source.info.get('axis_order')}).")
        if num_samples < 1:
            raise PluginError(f"num_samples={num_samples} must be at least 1.", "Use iterations x batch size.")
        self.source = source
        self.patch_size = tuple(int(p) for p in patch_size)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return self.num_samples

    def _volume(self, case: int) -> np.ndarray:
        if case in self._cache:
            self._cache.move_to_end(case)
            return self._cache[case]
        vol = pad_to(self.source.load(case), self.patch_size)
        if self.cache_size > 0:
            self._cache[case] = vol
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vol

    def _draw(self, index: int) -> tuple[int, tuple[int, ...], np.ndarray]:
        rng = np.random.default_rng([self.seed, int(index)])
        case = int(rng.integers(len(self.source)))
        vol = self._volume(case)
        start = tuple(int(rng.integers(0, s - p + 1)) for s, p in zip(vol.shape[1:], self.patch_size))
        return case, start, vol

    def sample(self, index: int) -> tuple[int, tuple[int, ...]]:
        """The (case index, crop start in the padded volume) that item ``index`` uses."""
        case, start, _ = self._draw(index)
        return case, start

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        _, start, vol = self._draw(index)
        crop = vol[(slice(None), *[slice(s, s + p) for s, p in zip(start, self.patch_size)])]
        return {"image": torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))}


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from torch's per-worker seed.

    Random transforms applied on top of the patches then differ between workers but repeat
    across runs with the same loader seed.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def auto_num_workers() -> int:
    """One core stays with the main process (it runs the model); at most 4 loader workers."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def make_patch_loader(source: UnlabelledSource, patch_size: Sequence[int], batch_size: int, num_samples: int,
                      num_workers: int | str = 0, seed: int = 0, pin_memory: bool | None = None,
                      cache_size: int = 16, dataset: Dataset | None = None, **loader_kwargs: Any) -> DataLoader:
    """A DataLoader of ``{"image": (B, C, *patch_size)}`` batches over a :class:`RandomPatchDataset`.

    Args:
        num_workers: worker processes, or "auto" (cores - 1, at most 4). Workers are persistent
            (volumes stay cached between epochs) and seeded by :func:`seed_worker`.
        pin_memory: default: True when CUDA is available.
        dataset: use this dataset (e.g. a transform wrapper around a RandomPatchDataset) instead
            of building one from ``source``.
        loader_kwargs: passed to DataLoader (e.g. ``collate_fn``, ``prefetch_factor``).

    Incomplete last batches are dropped: contrastive and batch-norm pretexts need full batches.
    """
    if num_workers == "auto":
        num_workers = auto_num_workers()
    if not isinstance(num_workers, int) or num_workers < 0:
        raise PluginError(f"num_workers={num_workers!r} is invalid.", "Use a non-negative integer or 'auto'.")
    if batch_size < 1 or num_samples < batch_size:
        raise PluginError(f"batch_size={batch_size} with num_samples={num_samples} gives no full batch.",
                          "Use 1 <= batch_size <= num_samples.")
    ds = dataset if dataset is not None else RandomPatchDataset(source, patch_size, num_samples, seed=seed,
                                                                cache_size=cache_size)
    generator = torch.Generator()
    generator.manual_seed(seed)  # fixes the per-worker base seeds, hence seed_worker's seeds
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      drop_last=True, persistent_workers=num_workers > 0, worker_init_fn=seed_worker,
                      generator=generator, **loader_kwargs)

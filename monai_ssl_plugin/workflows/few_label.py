"""Few-label nnU-Net fine-tuning runs, paired by seed: the pieces the demo and the pay-off benchmark share.

A *run* is (trainer, label budget, seed). Every (budget, seed) pair is one fold of the dataset's
``splits_final.json`` (so the pretrained arm and its from-scratch twin train on the same cases and
write to the same ``fold_K`` folder name under their own trainer folder), the trainer gets
``nnUNet_SSL_seed`` (same network init, patches and augmentation in both arms), and the model is
scored by Dice on the held-out test subjects (``imagesTs``/``labelsTs``), which no fold ever
trains or validates on.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from monai_ssl_plugin import nnunet_paths
from monai_ssl_plugin.workflows.nnunet_commands import run_nnunet

CONFIGURATION = "3d_fullres"


@dataclass(frozen=True)
class Fold:
    """One training subset: ``budget`` labelled cases drawn with ``seed``; ``index`` in splits_final.json."""

    budget: int
    seed: int
    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]


def label_budget_folds(case_ids: list[str], budgets: list[int], seeds: list[int], n_val: int) -> list[Fold]:
    """One fold per (budget, seed): the first ``budget`` cases of a seed's order train, the next ``n_val`` validate.

    Budgets are nested per seed (the 1-case set is inside the 4-case set), so a curve over budgets
    adds cases rather than swapping them; the validation cases are the same for every budget of a seed.
    """
    if max(budgets) + n_val > len(case_ids):
        raise ValueError(f"{max(budgets)} training + {n_val} validation cases need more than {len(case_ids)}.")
    folds = []
    for seed in seeds:
        order = [case_ids[i] for i in np.random.default_rng(seed).permutation(len(case_ids))]
        val = tuple(sorted(order[max(budgets):max(budgets) + n_val]))
        for budget in budgets:
            folds.append(Fold(budget, seed, len(folds), tuple(sorted(order[:budget])), val))
    return folds


def write_splits(preprocessed_dir: Path, folds: list[Fold]) -> Path:
    """nnU-Net's ``splits_final.json`` with one entry per fold, in fold-index order."""
    from monai_ssl_plugin.checkpoint import atomic_write_text

    return atomic_write_text(json.dumps([{"train": list(f.train), "val": list(f.val)} for f in folds], indent=1),
                             Path(preprocessed_dir) / "splits_final.json")


def dice_per_class(pred: np.ndarray, ref: np.ndarray, labels: list[int]) -> dict[int, float]:
    out = {}
    for c in labels:
        p, r = pred == c, ref == c
        denom = p.sum() + r.sum()
        out[c] = float(2 * np.logical_and(p, r).sum() / denom) if denom else float("nan")
    return out


def mean_dice(pred_dir: Path, label_dir: Path, labels: list[int]) -> float:
    """Mean over test cases of the mean Dice over ``labels`` (classes absent from both count as nothing)."""
    import nibabel as nib

    scores = []
    for ref_file in sorted(Path(label_dir).glob("*.nii.gz")):
        pred = np.asarray(nib.load(Path(pred_dir) / ref_file.name).dataobj)
        ref = np.asarray(nib.load(ref_file).dataobj)
        scores.append(np.nanmean(list(dice_per_class(pred, ref, labels).values())))
    return float(np.mean(scores))


@dataclass
class RunResult:
    trainer: str
    budget: int
    seed: int
    fold: int
    test_dice: float
    val_dice: float | None
    minutes: float
    model: str
    extra: dict = field(default_factory=dict)


def validation_dice(model_dir: Path) -> float | None:
    """nnU-Net's own validation score (foreground mean Dice on the fold's val cases), if it wrote one."""
    summary = Path(model_dir) / "validation" / "summary.json"
    if not summary.is_file():
        return None
    return float(json.loads(summary.read_text())["foreground_mean"]["Dice"])


def finetune_and_score(env: dict, raw: Path, plans_id: str, trainer: str, fold: Fold, labels: list[int],
                       out: Path, device: str = "cpu", log: Path | None = None, score_test: bool = True
                       ) -> RunResult:
    """``nnUNetv2_train`` one fold with ``trainer`` and the fold's seed, predict the test subjects, Dice.

    ``score_test=False`` (choosing settings) stops after nnU-Net's validation on the fold's val
    cases: the test subjects are neither predicted nor looked at. A fold whose final checkpoint
    exists is not trained again (a killed benchmark resumes run by run).
    """
    t0 = time.time()
    dataset_id = f"{nnunet_paths.dataset_id(raw.name):03d}"
    run_env = dict(env, nnUNet_SSL_seed=str(fold.seed))
    model = nnunet_paths.results_folder(raw.name, trainer, plans_id, CONFIGURATION, env)
    if not (model / f"fold_{fold.index}" / "checkpoint_final.pth").is_file():
        run_nnunet(["nnUNetv2_train", dataset_id, CONFIGURATION, fold.index, "-tr", trainer, "-p", plans_id,
                    "-device", device], run_env, log)
    val = validation_dice(model / f"fold_{fold.index}")
    if not score_test:
        return RunResult(trainer, fold.budget, fold.seed, fold.index, float("nan"), val,
                         round((time.time() - t0) / 60, 2), str(model))
    pred_dir = Path(out) / "predictions" / f"{trainer}_fold{fold.index}"
    run_nnunet(["nnUNetv2_predict", "-i", raw / "imagesTs", "-o", pred_dir, "-d", dataset_id, "-c", CONFIGURATION,
                "-f", fold.index, "-tr", trainer, "-p", plans_id, "-device", device, "-npp", "1", "-nps", "1"],
               run_env, log)
    return RunResult(trainer, fold.budget, fold.seed, fold.index, mean_dice(pred_dir, raw / "labelsTs", labels),
                     val, round((time.time() - t0) / 60, 2), str(model))


def paired_gains(results: list[RunResult], ssl_trainer: str, scratch_trainer: str) -> dict[int, list[float]]:
    """SSL − scratch test Dice per budget, one entry per seed where both arms ran (paired by seed)."""
    by_key = {(r.trainer, r.budget, r.seed): r.test_dice for r in results}
    gains: dict[int, list[float]] = {}
    for (trainer, budget, seed), dice in sorted(by_key.items()):
        if trainer == ssl_trainer and (scratch_trainer, budget, seed) in by_key:
            gains.setdefault(budget, []).append(dice - by_key[(scratch_trainer, budget, seed)])
    return gains


def as_records(results: list[RunResult]) -> list[dict]:
    return [asdict(r) for r in results]

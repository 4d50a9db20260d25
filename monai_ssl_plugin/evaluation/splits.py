"""Evaluation splits: one fixed held-out test set, and per seed nested training subsets per budget.

- The test set is drawn once per protocol (``split_seed``) and never changes with the run seed, so
  every arm, budget and seed is scored on the same cases.
- Per seed, the remaining patients are shuffled once; the training set of budget ``n`` is the first
  ``n`` cases of that order, so smaller budgets are subsets of larger ones (nested) and the curve
  over budgets measures labels, not luck of the draw.
- Splitting is done over patients: a patient's cases never sit in two splits (``groups`` maps a case
  id to its patient; by default every case is its own patient).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from monai_ssl_plugin.errors import PluginError


@dataclass(frozen=True)
class Splits:
    test: tuple[str, ...]
    pool: tuple[str, ...]  # every non-test case
    train: Mapping[tuple[int, int], tuple[str, ...]]  # (seed, budget) -> training case ids

    def training(self, seed: int, budget: int) -> list[str]:
        return list(self.train[(seed, budget)])


def _patients(case_ids: Sequence[str], groups: Mapping[str, str] | None) -> dict[str, list[str]]:
    patients: dict[str, list[str]] = {}
    for c in sorted(case_ids):
        patients.setdefault(str(groups.get(c, c)) if groups else c, []).append(c)
    return patients


def make_splits(case_ids: Sequence[str], n_test: int, budgets: Sequence[int], seeds: Sequence[int],
                split_seed: int = 0, groups: Mapping[str, str] | None = None) -> Splits:
    """Held-out test set of ``n_test`` patients and nested per-seed training subsets.

    Args:
        case_ids: labelled cases.
        n_test: patients in the test set (all their cases go there).
        budgets: training-set sizes in cases. A budget is filled with whole patients in the seed's
            order; the last patient may overshoot it when patients have several cases.
        seeds: run seeds; each gives its own order of the training pool.
        split_seed: seed of the test draw (fixed per protocol).
        groups: case id -> patient key (optional).
    """
    if len(set(case_ids)) != len(case_ids):
        raise PluginError("The labelled case ids repeat.", "Give every labelled case a unique id.")
    patients = _patients(case_ids, groups)
    keys = sorted(patients)
    if n_test < 1 or n_test >= len(keys):
        raise PluginError(f"n_test={n_test} leaves no training pool among {len(keys)} patients.",
                          f"Use 1 <= n_test < {len(keys)}.")
    order = np.random.default_rng([int(split_seed), 7]).permutation(len(keys))
    test_keys = sorted(keys[i] for i in order[:n_test])
    pool_keys = sorted(keys[i] for i in order[n_test:])
    pool = [c for k in pool_keys for c in patients[k]]
    if budgets and max(budgets) > len(pool):
        raise PluginError(f"Budget {max(budgets)} exceeds the {len(pool)} training cases left after the test split.",
                          "Lower the budget or n_test.")
    train: dict[tuple[int, int], tuple[str, ...]] = {}
    for seed in seeds:
        perm = np.random.default_rng([int(seed), 11]).permutation(len(pool_keys))
        for b in budgets:
            chosen, n = [], 0
            for i in perm:  # whole patients until the budget is met
                if n >= b:
                    break
                chosen += patients[pool_keys[i]]
                n += len(patients[pool_keys[i]])
            train[(int(seed), int(b))] = tuple(chosen)
    return Splits(test=tuple(c for k in test_keys for c in patients[k]), pool=tuple(pool), train=train)

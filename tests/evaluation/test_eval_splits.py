"""Split logic of the evaluation protocol: held-out test, nested budgets, patients, determinism."""

import pytest

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.evaluation.splits import make_splits

CASES = [f"brain_{i:03d}" for i in range(30)]


def test_test_set_is_fixed_and_disjoint_from_training():
    s = make_splits(CASES, n_test=6, budgets=[3, 10], seeds=[0, 1, 2])
    assert len(s.test) == 6 and len(s.pool) == 24
    assert not set(s.test) & set(s.pool)
    for (seed, budget), train in s.train.items():
        assert len(train) == budget and not set(train) & set(s.test)
    # the test set does not depend on the run seeds
    assert make_splits(CASES, 6, [3], seeds=[5]).test == s.test


def test_budgets_are_nested_per_seed_and_seeds_differ():
    s = make_splits(CASES, n_test=6, budgets=[2, 5, 12], seeds=[0, 1])
    for seed in (0, 1):
        small, mid, big = (set(s.training(seed, b)) for b in (2, 5, 12))
        assert small < mid < big
    assert s.training(0, 12) != s.training(1, 12)


def test_deterministic_per_seed():
    a = make_splits(CASES, 6, [4, 8], [0, 3], split_seed=1)
    b = make_splits(list(reversed(CASES)), 6, [4, 8], [0, 3], split_seed=1)
    assert a == b
    assert make_splits(CASES, 6, [4], [0], split_seed=2).test != a.test


def test_no_patient_in_two_splits():
    groups = {c: f"patient_{i // 3}" for i, c in enumerate(CASES)}  # three scans per patient
    s = make_splits(CASES, n_test=3, budgets=[4, 9], seeds=[0, 1], groups=groups)
    test_patients = {groups[c] for c in s.test}
    assert len(s.test) == 9 and len(test_patients) == 3
    for train in s.train.values():
        train_patients = {groups[c] for c in train}
        assert not train_patients & test_patients
        # whole patients only: every scan of a chosen patient is in
        assert all(sum(groups[c] == p for c in train) == 3 for p in train_patients)


def test_bad_sizes_are_one_line_errors():
    with pytest.raises(PluginError, match="n_test"):
        make_splits(CASES, n_test=30, budgets=[2], seeds=[0])
    with pytest.raises(PluginError, match="Budget 40"):
        make_splits(CASES, n_test=5, budgets=[40], seeds=[0])

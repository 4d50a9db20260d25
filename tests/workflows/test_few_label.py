import numpy as np
import pytest

from monai_ssl_plugin.workflows.few_label import RunResult, dice_per_class, label_budget_folds, paired_gains

CASES = [f"case_{i:03d}" for i in range(12)]


def test_folds_are_deterministic_nested_and_never_validate_on_training_cases():
    folds = label_budget_folds(CASES, budgets=[1, 4, 8], seeds=[0, 1], n_val=4)
    assert folds == label_budget_folds(CASES, budgets=[1, 4, 8], seeds=[0, 1], n_val=4)
    assert [f.index for f in folds] == list(range(6))
    by = {(f.budget, f.seed): f for f in folds}
    for seed in (0, 1):
        assert set(by[1, seed].train) < set(by[4, seed].train) < set(by[8, seed].train)  # budgets nested
        assert by[1, seed].val == by[8, seed].val and len(by[8, seed].val) == 4
        assert not set(by[8, seed].train) & set(by[8, seed].val)
    assert by[4, 0].train != by[4, 1].train  # the seed draws the cases


def test_folds_refuse_budgets_the_pool_cannot_hold():
    with pytest.raises(ValueError, match="need more than 12"):
        label_budget_folds(CASES, budgets=[10], seeds=[0], n_val=4)


def test_dice_per_class():
    ref = np.zeros((4, 4), int)
    ref[:2] = 1
    pred = np.zeros((4, 4), int)
    pred[:1] = 1
    d = dice_per_class(pred, ref, [1, 2])
    assert d[1] == 2 * 4 / (4 + 8) and np.isnan(d[2])


def test_paired_gains_pair_by_budget_and_seed_only():
    def run(trainer, budget, seed, dice):
        return RunResult(trainer, budget, seed, 0, dice, None, 1.0, "m")

    results = [run("ssl", 4, 0, 0.80), run("scratch", 4, 0, 0.70), run("ssl", 4, 1, 0.60),
               run("scratch", 4, 1, 0.65), run("ssl", 1, 0, 0.5), run("ssl", 4, 2, 0.9)]  # last two: no twin
    gains = paired_gains(results, "ssl", "scratch")
    assert list(gains) == [4] and gains[4] == pytest.approx([0.10, -0.05])

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


def test_finetune_finds_the_model_in_the_given_environment_and_passes_the_dataset_id(tmp_path, monkeypatch):
    from monai_ssl_plugin.workflows import few_label

    calls = []
    monkeypatch.setattr(few_label, "run_nnunet", lambda args, env, log=None: calls.append((args, env)))
    monkeypatch.delenv("nnUNet_results", raising=False)  # only the subprocess environment names it
    env = {"nnUNet_results": str(tmp_path / "results")}
    fold = few_label.Fold(budget=1, seed=3, index=2, train=("a",), val=("b",))
    r = few_label.finetune_and_score(env, tmp_path / "Dataset007_Brain", "P", "T", fold, [1], tmp_path,
                                     score_test=False)
    assert r.model == str(tmp_path / "results" / "Dataset007_Brain" / "T__P__3d_fullres")
    ((args, run_env),) = calls
    assert args[:4] == ["nnUNetv2_train", "007", "3d_fullres", 2] and run_env["nnUNet_SSL_seed"] == "3"

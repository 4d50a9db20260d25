import numpy as np

from monai_ssl_plugin.workflows.demo import dice_per_class, few_label_split


def test_few_label_split_is_deterministic_and_disjoint():
    cases = [f"case_{i:03d}" for i in range(12)]
    a = few_label_split(cases, n_train=4, n_val=2, seed=3)
    assert a == few_label_split(cases, n_train=4, n_val=2, seed=3)
    assert a != few_label_split(cases, n_train=4, n_val=2, seed=4)
    fold = a[0]
    assert len(fold["train"]) == 4 and len(fold["val"]) == 2
    assert not set(fold["train"]) & set(fold["val"]) and set(fold["train"]) <= set(cases)


def test_dice_per_class():
    ref = np.zeros((4, 4), int)
    ref[:2] = 1
    pred = np.zeros((4, 4), int)
    pred[:1] = 1
    d = dice_per_class(pred, ref, [1, 2])
    assert d[1] == 2 * 4 / (4 + 8) and np.isnan(d[2])

"""Protocol YAML: a valid file loads; each kind of mistake is one PluginError naming key and fix."""

import pytest
import yaml

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.evaluation.protocol import load_protocol

BASE = {
    "name": "t",
    "dataset": {"demo": {"n_labelled": 12, "n_unlabelled": 4, "spacing": 4.0}, "n_test": 4},
    "pretexts": [{"name": "mae", "bundle": "mae_ssl_pretraining", "paradigm": "generative"}],
    "tasks": ["tissue_segmentation", "atrophy_classification"],
    "budgets": [2, 0.5],
    "seeds": [0, 1],
    "routes": ["monai", "nnunet"],
}


def _write(tmp_path, data):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


def test_valid_protocol_and_budget_counts(tmp_path):
    p = load_protocol(_write(tmp_path, BASE))
    assert p.dataset.demo.spacing == 4.0 and p.pretexts[0].bundle == "mae_ssl_pretraining"
    assert p.budget_counts(8) == [2, 4]  # a count and a fraction of the pool
    assert p.nnunet.tasks == ["tissue_segmentation"]


@pytest.mark.parametrize("change, match", [
    ({"tasks": ["survival"]}, "Unknown task 'survival'"),
    ({"routes": ["keras"]}, "Unknown route"),
    ({"budgets": [0]}, "Label budget 0"),
    ({"budgets": [2.5]}, "Label budget 2.5"),
    ({"pretexts": [{"name": "x", "bundle": "no_such_bundle"}]}, "No bundle 'no_such_bundle'"),
    ({"pretexts": [{"name": "scratch", "bundle": "mae_ssl_pretraining"}]}, "reserved name"),
    ({"dataset": {"n_test": 4}}, "exactly one of 'demo'"),
    ({"dataset": {"demo": {}, "n_tset": 4}}, "unknown key\\(s\\) n_tset"),
    ({"monai": {"iterations": 0}}, "monai.iterations"),
    ({"nnunet": {"tasks": ["atrophy_classification"]}}, "segmentation only"),
])
def test_mistakes_are_one_line_errors(tmp_path, change, match):
    with pytest.raises(PluginError, match=match) as err:
        load_protocol(_write(tmp_path, {**BASE, **change}))
    assert "\n" not in str(err.value) and "Fix:" in str(err.value)


def test_budget_larger_than_pool(tmp_path):
    p = load_protocol(_write(tmp_path, {**BASE, "budgets": [20]}))
    with pytest.raises(PluginError, match="training pool has 8"):
        p.budget_counts(8)


def test_missing_file():
    with pytest.raises(PluginError, match="does not exist"):
        load_protocol("/nonexistent/protocol.yaml")

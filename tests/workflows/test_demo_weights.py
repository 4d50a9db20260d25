"""The shipped demo weights are what their recorded command makes.

Runs ``make_demo_weights`` (what ``monai-ssl demo-weights`` calls) for 2 steps on the same cohort and
plans into a copy of the demo's bundle, then compares its record, field by field, and its tensor keys and
shapes with the shipped ``models/model.pt``: only the step count (and the run's paths) may differ.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monai_ssl_plugin.engine.run import bundle_dir
from monai_ssl_plugin.workflows.demo import BUNDLE, make_demo_weights
from monai_ssl_plugin.workflows.shipped_weights import MODEL_FILE, load_shipped_weights

pytestmark = pytest.mark.e2e
RUN_SPECIFIC = {"steps", "versions"}  # how long it ran, and with which patch releases
RUN_SPECIFIC_DATA = {"path", "plans_file", "provenance"}  # where this run wrote its files; provenance below


def test_recorded_command_reproduces_the_shipped_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shipped = load_shipped_weights(bundle_dir(BUNDLE))
    provenance = shipped["record"]["data"]["provenance"]
    assert provenance["command"].startswith("monai-ssl demo-weights --steps ")
    bundle = shutil.copytree(bundle_dir(BUNDLE), tmp_path / "bundle")
    monkeypatch.chdir(tmp_path)
    rerun = load_shipped_weights(bundle) if make_demo_weights(tmp_path / "run", steps=2, device="cpu",
                                                              bundle=bundle) == bundle / MODEL_FILE else None
    assert rerun is not None
    ours, theirs = rerun["record"], shipped["record"]
    for key in sorted(set(ours) | set(theirs)):
        if key not in RUN_SPECIFIC and key != "data":
            assert ours[key] == theirs[key], key
    for key in sorted(set(ours["data"]) | set(theirs["data"])):
        if key not in RUN_SPECIFIC_DATA:
            assert ours["data"][key] == theirs["data"][key], key
    new = ours["data"]["provenance"]
    assert new["command"] == "monai-ssl demo-weights --steps 2" and ours["steps"] == 2
    assert {k: v for k, v in new.items() if k not in ("command", "steps")} == \
           {k: v for k, v in provenance.items() if k not in ("command", "steps")}
    assert {k: v.shape for k, v in rerun["network"].items()} == {k: v.shape for k, v in shipped["network"].items()}

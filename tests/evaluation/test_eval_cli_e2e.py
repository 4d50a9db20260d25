"""End to end: ``monai-ssl evaluate`` on a tiny protocol (real pretraining bundle, real fine-tuning)."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

PROTOCOL = {
    "name": "tiny_e2e",
    "dataset": {"dataset_id": 596, "name": "EvalE2E", "n_test": 4,
                "demo": {"n_labelled": 10, "n_unlabelled": 4, "spacing": 4.0, "atrophy_fraction": 0.5,
                         "lesion_fraction": 0.6}},
    "pretexts": [{"name": "mae", "bundle": "mae_ssl_pretraining", "paradigm": "generative"}],
    "tasks": ["tissue_segmentation", "atrophy_classification", "lesion_segmentation"],
    "budgets": [2, 0.5],  # a count and a fraction of the 6-case pool (= 3)
    "seeds": [0],
    "routes": ["monai"],
    "backbone": "nnunet_plain_tiny",
    "patch_size": [32, 32, 32],
    "pretraining": {"iterations": 4, "batch_size": 2, "online_probe_every": 2, "online_probe_cases": 6},
    "monai": {"iterations": 2, "classification_iterations": 2, "batch_size": 2},
    "probes": {"head_iterations": 2},
}


def test_monai_ssl_evaluate_tiny_protocol(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(PROTOCOL))
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("monai-ssl")
    proc = subprocess.run([str(exe), "evaluate", "--config", str(config), "--output_dir", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "24 cells; report:" in proc.stdout  # (mae + scratch) x 3 tasks x 2 budgets x (fine-tune + probe)

    record = json.loads((out / "record.json").read_text())
    assert record["budgets"] == [2, 3]
    cells = record["cells"].values()
    dice = [c["metrics"]["dice"] for c in cells if c["task"] == "tissue_segmentation"]
    assert all(0.0 <= d <= 1.0 for d in dice)
    ssl = [c for c in cells if c["arm"] == "ssl"]
    assert all(c["metrics"]["loaded_fraction"] == 1.0 for c in ssl)  # the load report reached the result
    assert all(set(c["train_cases"]).isdisjoint(record["splits"]["test"]) for c in cells)
    pre = record["pretraining"]["mae"]
    assert len(pre["loss"]) == 4 and [c["iteration"] for c in pre["online_probe"]] == [2, 4]

    report = (out / "report.md").read_text()
    assert "## MONAI route: fine-tuning" in report and "| mae (generative) |" in report
    for name in ("monai_vs_labels.png", "probe_vs_labels.png", "pretraining_curves.png"):
        assert (out / "images" / name).read_bytes()[:4] == b"\x89PNG"
    # the load report of every pretrained cell is in its log
    log = (out / "logs" / "monai__tissue_segmentation__mae__n2__s0.log").read_text()
    assert "SSL init encoder: loaded" in log

    # a bad protocol is one line on stderr and exit code 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**PROTOCOL, "tasks": ["survival"]}))
    proc = subprocess.run([str(exe), "evaluate", "--config", str(bad), "--output_dir", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Unknown task 'survival'" in proc.stderr

"""nnU-Net route end to end: real nnUNetv2_plan_and_preprocess / _train / _predict per cell."""

import json

import yaml

from monai_ssl_plugin.evaluation.runner import evaluate

PROTOCOL = {
    "name": "nnunet_route",
    "dataset": {"dataset_id": 595, "name": "EvalNnUNet", "n_test": 3,
                "demo": {"n_labelled": 7, "n_unlabelled": 4, "spacing": 4.0, "lesion_fraction": 0.0}},
    "pretexts": [{"name": "mae", "bundle": "mae_ssl_pretraining", "paradigm": "generative"}],
    "tasks": ["tissue_segmentation"],
    "budgets": [2],
    "seeds": [0],
    "routes": ["nnunet"],
    "backbone": "nnunet_plain_tiny",
    "patch_size": [32, 32, 32],
    "pretraining": {"iterations": 2, "batch_size": 2, "online_probe_every": 0},
    # one epoch with no warm-up asked for: a schedule that fits (the fairness guard stays silent)
    "nnunet": {"tasks": ["tissue_segmentation"], "epochs": 1, "iterations": 2, "n_val": 1, "warmup_epochs": 0},
}


def test_nnunet_route_cells(tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump(PROTOCOL))
    out = tmp_path / "out"
    record = evaluate(config, out, report=False)
    assert sorted(record["cells"]) == ["nnunet__tissue_segmentation__mae__n2__s0",
                                       "nnunet__tissue_segmentation__scratch__n2__s0"]
    ssl, scratch = (record["cells"][f"nnunet__tissue_segmentation__{a}__n2__s0"]["metrics"] for a in ("mae", "scratch"))
    assert ssl["trainer"] == "nnUNetTrainerSSL_5epochs" and scratch["trainer"] == "nnUNetTrainerScratch_5epochs"
    assert ssl["plans"] == scratch["plans"] == "nnUNetPlans_nnunet_plain_tiny"
    for m in (ssl, scratch):
        assert 0.0 <= m["dice"] <= 1.0 and m["n_test_scored"] == 3
    # each cell trained in its own nnUNet_results, on the split the protocol chose
    for cell in record["cells"]:
        assert list((out / "nnunet_cells" / cell / "nnUNet_results").rglob("checkpoint_final.pth"))
    split = json.loads(next((out / "nnUNet_preprocessed").glob("Dataset595_*/splits_final.json")).read_text())
    assert split[0]["train"] == sorted(record["cells"]["nnunet__tissue_segmentation__scratch__n2__s0"]["train_cases"])
    assert not set(split[0]["train"]) & set(record["splits"]["test"])
    # the pretrained arm really loaded the exported weights
    log = (out / "logs" / "nnunet__tissue_segmentation__mae__n2__s0.log").read_text()
    assert "loaded" in log and "nnunet_nnUNetPlans_nnunet_plain_tiny.pth" in log
    assert "over 0 epoch(s)" in log  # the protocol's warm-up reached the trainer
    assert record["fairness"]["flags"] == []

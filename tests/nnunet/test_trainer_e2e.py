"""Route (a) end to end with nnU-Net's real commands, and the rest of nnU-Net on the plugin's trained models.

raw dataset (with imagesUnlabelled) -> nnUNetv2_plan_and_preprocess -> plans variant with a tiny network
-> the mae_ssl_pretraining bundle on every image, preprocessed with those plans -> export ->
nnUNetv2_train folds 0 and 1 -tr nnUNetTrainerSSL_short (fixture ``route_a``, shared with route (b)).
Then: ``--c`` continuation, nnUNetv2_find_best_configuration, nnUNetv2_export_model_to_zip /
nnUNetv2_install_pretrained_model_from_zip, nnUNetv2_predict from the installed model, prediction
through a trainer subclass with nnU-Net's old ``build_network_architecture`` signature, and a
mismatched checkpoint that fails before training.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from monai_ssl_plugin.backbones.nnunet import NnUNetBackbone
from monai_ssl_plugin.export.nnunet import export_nnunet

from nnunet_e2e import CONFIGURATION, SHORT, TINY_PLANS, assert_valid_predictions
from nnunet_helpers import plans_copy, tiny_plans, write_checkpoint

pytestmark = pytest.mark.e2e


def test_pretraining_used_the_targets_plans_and_its_unlabelled_images(route_a):
    record = torch.load(route_a.checkpoint, weights_only=True)["record"]
    assert record["data"]["case_counts"] == {"imagesTr": 6, "imagesUnlabelled": 3}
    assert record["data"]["plans_file"] == str(route_a.plans_file)
    assert record["normalization"] == ["ZScoreNormalization"] and record["axis_order"] == "nnunet"
    plans = json.loads(route_a.plans_file.read_text())
    assert record["backbone_kwargs"]["arch_kwargs"] == plans["configurations"][CONFIGURATION]["architecture"][
        "arch_kwargs"]  # architecture equal by construction
    assert route_a.exported == route_a.preprocessed / "ssl_pretrained" / f"{TINY_PLANS}__{CONFIGURATION}.pth"


def test_training_logs_show_the_load_report_for_both_folds(route_a):
    for fold in (0, 1):
        log = next((route_a.model / f"fold_{fold}").glob("training_log_*.txt")).read_text()
        assert "[monai-ssl] loading pretrained stem + encoder + decoder" in log
        assert "[monai-ssl] loaded" in log and "100.0%" in log and "0 missing" in log
        assert "LR schedule: linear warm-up to 0.001" in log and "Epoch 1" in log
        assert (route_a.model / f"fold_{fold}" / "checkpoint_final.pth").is_file()
    assert all("[monai-ssl] loaded" in out for out in route_a.train_outputs)  # also on the console


def test_finetuning_starts_from_the_pretrained_weights(route_a, e2e):
    """Initialise the trainer in-process on the same dataset: before any step, weights are the pretrained ones."""
    from monai_ssl_plugin.nnunet import nnUNetTrainerSSL_short

    plans = json.loads(route_a.plans_file.read_text())
    dataset_json = json.loads((route_a.preprocessed / "dataset.json").read_text())
    with e2e.active():
        trainer = nnUNetTrainerSSL_short(plans_copy(plans), CONFIGURATION, 4, dataset_json, torch.device("cpu"))
        trainer.initialize()
    pretrained = torch.load(route_a.checkpoint, weights_only=True)["network"]
    state = trainer.network.state_dict()
    encoder = [k for k in state if k.startswith("encoder.")]
    assert encoder and all(torch.equal(state[k], pretrained[k]) for k in encoder)
    assert all(torch.equal(state[k], pretrained[k]) for k in state if k.startswith("decoder.stages."))
    # and training moved them (the final checkpoint is not the pretrained network)
    final = torch.load(route_a.model / "fold_1" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert not all(torch.equal(final["network_weights"][k], pretrained[k]) for k in encoder)


@pytest.fixture(scope="module")
def continued(route_a, e2e) -> str:
    """``--c`` on fold 0 with one more epoch; the pretrained file is made unavailable (it must not be read)."""
    return e2e.run("nnUNetv2_train", 951, CONFIGURATION, 0, "-tr", SHORT, "-p", TINY_PLANS, "-device", "cpu", "--c",
                   nnUNet_SSL_epochs="3", nnUNet_SSL_pretrained=str(e2e.root / "does_not_exist.pth"))


def test_continue_training_resumes_without_the_pretrained_file(route_a, continued):
    assert "[monai-ssl] loaded" not in continued
    checkpoint = torch.load(route_a.model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 3
    logs = sorted((route_a.model / "fold_0").glob("training_log_*.txt"))
    assert "Epoch 2" in logs[-1].read_text() and "Epoch 0" not in logs[-1].read_text()


@pytest.fixture(scope="module")
def nnunet_tools(route_a, continued, e2e, tmp_path_factory) -> SimpleNamespace:
    """find_best_configuration over folds 0+1, zip export, install into fresh results, predict with both folds."""
    work = tmp_path_factory.mktemp("tools")
    best = e2e.run("nnUNetv2_find_best_configuration", 951, "-c", CONFIGURATION, "-p", TINY_PLANS, "-tr", SHORT,
                   "-f", 0, 1, "-np", 1, "--disable_ensembling")
    zip_file = work / "model.zip"
    e2e.run("nnUNetv2_export_model_to_zip", "-d", 951, "-o", zip_file, "-c", CONFIGURATION, "-tr", SHORT, "-p",
            TINY_PLANS, "-f", 0, 1)
    fresh = work / "fresh_results"
    fresh.mkdir()
    e2e.run("nnUNetv2_install_pretrained_model_from_zip", zip_file, nnUNet_results=str(fresh))
    predictions = work / "predictions"
    e2e.run("nnUNetv2_predict", "-i", route_a.raw / "imagesTs", "-o", predictions, "-d", 951, "-c", CONFIGURATION,
            "-f", 0, 1, "-tr", SHORT, "-p", TINY_PLANS, "-device", "cpu", "-npp", 1, "-nps", 1,
            "--disable_progress_bar", nnUNet_results=str(fresh))
    return SimpleNamespace(best=best, zip=zip_file, fresh=fresh, predictions=predictions)


def test_find_best_configuration_over_two_folds(route_a, nnunet_tools):
    info = json.loads((route_a.model.parent / "inference_information.json").read_text())
    best = info["best_model_or_ensemble"]["selected_model_or_models"][0]
    assert (best["trainer"], best["plans_identifier"], best["configuration"]) == (SHORT, TINY_PLANS, CONFIGURATION)
    assert (route_a.model / "crossval_results_folds_0_1" / "summary.json").is_file()
    assert f"-tr {SHORT}" in nnunet_tools.best


def test_zip_export_install_and_prediction_with_both_folds(route_a, nnunet_tools):
    installed = nnunet_tools.fresh / route_a.raw.name / route_a.model.name
    for fold in (0, 1):
        assert (installed / f"fold_{fold}" / "checkpoint_final.pth").is_file()
    assert json.loads((installed / "plans.json").read_text())["plans_name"] == TINY_PLANS
    assert_valid_predictions(route_a.raw, nnunet_tools.predictions)


OLD_SIGNATURE_TRAINER = '''
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from monai_ssl_plugin.nnunet.trainers import nnUNetTrainerSSL_short


class nnUNetTrainerSSLOldSignature_short(nnUNetTrainerSSL_short):
    """A user subclass written for nnU-Net < 2.6: the static builder takes the architecture, not the plans."""

    @staticmethod
    def build_network_architecture(architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import,
                                   num_input_channels, num_output_channels, enable_deep_supervision=True):
        return get_network_from_plans(architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import,
                                      num_input_channels, num_output_channels, allow_init=True,
                                      deep_supervision=enable_deep_supervision)
'''


def test_prediction_through_a_subclass_with_the_old_builder_signature(route_a, e2e, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    """nnU-Net's predictor finds the user's trainer by name and calls its old-signature builder."""
    import os

    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    ext = tmp_path / "user_trainers"
    ext.mkdir()
    (ext / "user_trainers.py").write_text(OLD_SIGNATURE_TRAINER)
    name = "nnUNetTrainerSSLOldSignature_short"
    model = tmp_path / f"{name}__{TINY_PLANS}__{CONFIGURATION}"
    shutil.copytree(route_a.model / "fold_1", model / "fold_1")
    for f in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copy(route_a.model / f, model / f)
    ckpt_file = model / "fold_1" / "checkpoint_final.pth"
    checkpoint = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    checkpoint["trainer_name"] = name  # as if trained with the user's subclass
    torch.save(checkpoint, ckpt_file)
    with e2e.active():
        monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([e2e.vars["nnUNet_extTrainer"], str(ext)]))
        predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=False, device=torch.device("cpu"),
                                    allow_tqdm=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictor.initialize_from_trained_model_folder(str(model), use_folds=(1,))
        assert any("old build_network_architecture signature" in str(w.message) for w in caught)
        image = sorted((route_a.raw / "imagesTs").glob("*.nii.gz"))[0]
        data, props = SimpleITKIO().read_images([str(image)])
        seg = predictor.predict_single_npy_array(data, props, None, None, False)
    assert seg.shape == data.shape[1:] and set(np.unique(seg).tolist()) <= {0, 1, 2}
    assert torch.equal(predictor.network.state_dict()["encoder.stages.0.0.convs.0.conv.weight"],
                       checkpoint["network_weights"]["encoder.stages.0.0.convs.0.conv.weight"])


def test_mismatched_checkpoint_fails_before_training_naming_the_fix(route_a, e2e):
    # same network family and depth, wider first stage: the dataset's plans build 8 features there
    other = write_checkpoint(e2e.root / "other.pt", NnUNetBackbone.from_plans(tiny_plans(features=(16, 16, 32))),
                             spacing=[2.0, 2.0, 2.0])
    other_export = export_nnunet(other, e2e.root / "other.pth")
    code, log = e2e.run_unchecked("nnUNetv2_train", 951, CONFIGURATION, 2, "-tr", SHORT, "-p", TINY_PLANS, "-device",
                                  "cpu", nnUNet_SSL_pretrained=str(other_export))
    assert code != 0
    last = [line for line in log.splitlines() if line.strip()][-1]
    assert last.startswith("monai_ssl_plugin.errors.PluginError: The pretrained architecture does not match")
    assert ("first mismatching layer encoder.stages.0.0.convs.0.conv.weight (encoder stage 0): checkpoint 16 out / "
            "1 in channels, kernel 3x3x3 vs network 8 out / 1 in channels") in last
    assert "features_per_stage at stage 0: 16 vs 8" in last
    assert f"Fix: Run `monai-ssl nnunet-plans Dataset951_RouteA --checkpoint {other_export}`" in last
    assert not list((route_a.model / "fold_2").glob("checkpoint_*.pth"))
    assert "Epoch 0" not in log

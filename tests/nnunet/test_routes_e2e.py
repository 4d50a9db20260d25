"""Route (b) on a new multi-channel dataset, and a CT-normalised target, with nnU-Net's real commands.

Route (b): route (a)'s checkpoint (1 channel, tiny U-Net) -> ``write_plans_variant(952, checkpoint=...)``
(architecture = the pretrained one, the target's spacing and normalisation, a patch valid for the
strides, a from-scratch twin) -> export -> nnUNetv2_train on the 2-channel Dataset952 (stem repeated
x2 and divided by 2, reported) -> nnUNetv2_predict.

CT: Dataset991_SyntheticCT (the session's preprocessed CT dataset) pretrained through the raw source
with its own plans (CTNormalization end to end: the record says so, the trainer checks it) and
fine-tuned with the sawtooth trainer.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from nnunet_e2e import CONFIGURATION, SHORT, E2E, assert_valid_predictions, e2e_vars, pretrain_mae

pytestmark = pytest.mark.e2e

SAWTOOTH = "nnUNetTrainerSSLSawtooth_short"


@pytest.fixture(scope="module")
def route_b(route_a, e2e: E2E, tmp_path_factory) -> SimpleNamespace:
    from monai_ssl_plugin.export.nnunet import export_nnunet
    from monai_ssl_plugin.nnunet.plans import write_plans_variant

    raw = e2e.raw / "Dataset952_RouteB"  # written and planned by the route_a fixture
    notes: list[str] = []
    with e2e.active(), pytest.warns(UserWarning, match="input channels 1 -> 2"):
        plans_file = write_plans_variant(952, checkpoint=route_a.checkpoint, log=notes.append)
        exported = export_nnunet(route_a.checkpoint, dataset=952, plans_identifier=plans_file.stem)
    train_output = e2e.run("nnUNetv2_train", 952, CONFIGURATION, 0, "-tr", SHORT, "-p", plans_file.stem,
                           "-device", "cpu")
    predictions = tmp_path_factory.mktemp("route_b") / "predictions"
    e2e.run("nnUNetv2_predict", "-i", raw / "imagesTs", "-o", predictions, "-d", 952, "-c", CONFIGURATION, "-f", 0,
            "-tr", SHORT, "-p", plans_file.stem, "-device", "cpu", "-npp", 1, "-nps", 1, "--disable_progress_bar")
    return SimpleNamespace(raw=raw, preprocessed=e2e.preprocessed / raw.name, plans_file=plans_file, notes=notes,
                           exported=exported, train_output=train_output, predictions=predictions,
                           model=e2e.results / raw.name / f"{SHORT}__{plans_file.stem}__{CONFIGURATION}")


def test_route_b_plans_take_the_pretrained_architecture_and_keep_the_target(route_a, route_b):
    from monai_ssl_plugin.nnunet.plans import assert_twin_plans, twin_plans_path

    variant = json.loads(route_b.plans_file.read_text())
    source = json.loads((route_b.preprocessed / "nnUNetPlans.json").read_text())
    conf, src = variant["configurations"][CONFIGURATION], source["configurations"][CONFIGURATION]
    pretrained = torch.load(route_a.checkpoint, weights_only=True)["record"]
    assert conf["architecture"]["arch_kwargs"] == pretrained["backbone_kwargs"]["arch_kwargs"]
    assert src["architecture"]["arch_kwargs"] != pretrained["backbone_kwargs"]["arch_kwargs"]  # nnU-Net's own differs
    assert conf["spacing"] == src["spacing"] and conf["data_identifier"] == src["data_identifier"]
    assert conf["normalization_schemes"] == src["normalization_schemes"] == ["ZScoreNormalization"] * 2
    assert all(p % 4 == 0 and p <= max(32, m + 3) for p, m in zip(conf["patch_size"],
                                                                 src["median_image_size_in_voxels"]))
    assert_twin_plans(route_b.plans_file, twin_plans_path(route_b.plans_file))
    assert any("repeat the stem's input weights x2" in n for n in route_b.notes)


def test_route_b_stem_is_repeated_in_the_export_then_loads_whole_and_predicts(route_a, route_b):
    """A PlainConvUNet pretrained on 1 channel, for a 2-channel target: the export holds the stem already
    repeated (divided by the repeat, so the first layer's response is unchanged), which nnU-Net master's
    nnssl loader needs; the plugin's trainer then loads the file as it is."""
    from monai_ssl_plugin.transfer.formats import read_weights

    key = "encoder.stages.0.0.convs.0.conv.weight"
    original = torch.load(route_a.checkpoint, weights_only=True)["network"][key]
    exported = read_weights(route_b.exported, log=None)
    assert exported.record.in_channels == 2 and exported.record.data["in_channels_adapted_from"] == 1
    stem = next(v for k, v in exported.state.items() if k == key or k.endswith("." + key))
    assert torch.allclose(stem, original.repeat(1, 2, 1, 1, 1) / 2)
    log = next((route_b.model / "fold_0").glob("training_log_*.txt")).read_text()
    assert "100.0%" in log
    assert "normalisation ['ZScoreNormalization', 'ZScoreNormalization'] matches the pretraining record" in log
    assert_valid_predictions(route_b.raw, route_b.predictions)


@pytest.fixture(scope="module")
def route_ct(preprocessed_nnunet_env, tmp_path_factory) -> SimpleNamespace:
    """Route (a) on the session's CT dataset: tiny plans, pretraining through the raw source with those plans."""
    from monai_ssl_plugin.export.nnunet import export_nnunet
    from monai_ssl_plugin.nnunet.plans import write_plans_variant

    root = tmp_path_factory.mktemp("ct_e2e")
    base = preprocessed_nnunet_env
    e2e = E2E(root, {**e2e_vars(root), **base.variables()}, root / "nnunet_commands.log")
    raw = base.raw / "Dataset991_SyntheticCT"
    with e2e.active():
        plans_file = write_plans_variant(991, backbone="nnunet_plain_tiny", configuration=CONFIGURATION, log=None)
    patch = json.loads(plans_file.read_text())["configurations"][CONFIGURATION]["patch_size"]
    checkpoint = pretrain_mae(e2e, raw, plans_file, root / "pretraining_ct", patch)
    with e2e.active():
        export_nnunet(checkpoint, dataset=991, configuration=CONFIGURATION, plans_identifier=plans_file.stem)
    output = e2e.run("nnUNetv2_train", 991, CONFIGURATION, 0, "-tr", SAWTOOTH, "-p", plans_file.stem, "-device", "cpu")
    print("\n[e2e CT] step timings (s):", e2e.times)
    return SimpleNamespace(e2e=e2e, plans_file=plans_file, checkpoint=checkpoint, output=output,
                           model=base.results / raw.name / f"{SAWTOOTH}__{plans_file.stem}__{CONFIGURATION}")


def test_ct_normalisation_is_kept_end_to_end(route_ct):
    conf = json.loads(route_ct.plans_file.read_text())["configurations"][CONFIGURATION]
    assert conf["normalization_schemes"] == ["CTNormalization"]
    record = torch.load(route_ct.checkpoint, weights_only=True)["record"]
    assert record["normalization"] == ["CTNormalization"]  # pretraining saw nnU-Net's CT normalisation
    assert record["data"]["case_counts"] == {"imagesTr": 5, "imagesUnlabelled": 2}
    assert record["spacing"] == conf["spacing"] == [3.0, 1.5, 1.5]
    log = next((route_ct.model / "fold_0").glob("training_log_*.txt")).read_text()
    assert "[monai-ssl] normalisation ['CTNormalization'] matches the pretraining record" in log
    assert "100.0%" in log


def test_sawtooth_trains_the_decoder_first_then_everything(route_ct):
    log = next((route_ct.model / "fold_0").glob("training_log_*.txt")).read_text()
    assert "sawtooth — decoder only (encoder frozen) for epochs 0-0" in log
    assert log.index("encoder frozen from epoch 0") < log.index("Epoch 0") < log.index("encoder trainable from epoch 1")
    assert "Epoch 2" in log and (route_ct.model / "fold_0" / "checkpoint_final.pth").is_file()

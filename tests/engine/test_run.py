import json

import pytest
import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.checkpoint import atomic_save
from monai_ssl_plugin.engine import run
from monai_ssl_plugin.errors import PluginError


def test_as_bool_reads_command_line_flags():
    assert run.as_bool("true") and run.as_bool("1") and run.as_bool(True)
    assert not run.as_bool("false") and not run.as_bool("0") and not run.as_bool(None)
    with pytest.raises(PluginError):
        run.as_bool("maybe")


def test_auto_device():
    assert run.auto_device("cpu") == torch.device("cpu")
    assert run.auto_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(PluginError, match="CUDA is not available"):
            run.auto_device("cuda:0")


def test_bundle_dir_by_name_and_path_and_unknown(tmp_path):
    by_name = run.bundle_dir("mae_ssl_pretraining")
    assert (by_name / "configs" / "train.yaml").is_file()
    assert run.bundle_dir(by_name) == by_name
    with pytest.raises(PluginError, match="mae_ssl_pretraining"):
        run.bundle_dir("no_such_bundle")


@pytest.mark.parametrize("patch, block", [((48, 48, 48), 4), ((64, 64, 64), 8), ((160, 160, 160), 16),
                                          ((32, 32, 32), 4), ((16, 16, 16), 2), ((96, 128, 128), 8)])
def test_mae_block_size_scales_nnssl_default(patch, block):
    assert run.mae_block_size(patch) == block


def test_check_patch_size():
    net = create_backbone("nnunet_plain_tiny")  # total stride 4
    assert run.check_patch_size([32, 32, 32], net) == [32, 32, 32]
    with pytest.raises(PluginError, match="multiple of"):
        run.check_patch_size([30, 32, 32], net)
    with pytest.raises(PluginError, match="3D"):
        run.check_patch_size([32, 32], net)


def test_warmup_iterations():
    assert run.warmup_iterations(1000, 0.05) == 50
    assert run.warmup_iterations(3, 0.05) == 1
    assert run.warmup_iterations(1000, 0.5, maximum=100) == 100


def _plans_file(tmp_path):
    tiny = create_backbone("nnunet_plain_tiny").constructor
    plans = {"configurations": {"3d_fullres": {
        "architecture": {"network_class_name": tiny["arch_class_name"], "arch_kwargs": tiny["arch_kwargs"],
                         "_kw_requires_import": tiny["arch_kwargs_req_import"]},
        "normalization_schemes": ["ZScoreNormalization", "ZScoreNormalization"]}}}
    path = tmp_path / "nnUNetPlans.json"
    path.write_text(json.dumps(plans))
    return path


def test_build_backbone_auto_follows_preprocessed_plans(tmp_path):
    plans = _plans_file(tmp_path)
    from_plans = run.build_backbone("auto", {"plans_file": str(plans), "configuration": "3d_fullres", "in_channels": 2})
    assert from_plans.constructor["arch_kwargs"]["features_per_stage"] == [8, 16, 32] and from_plans.in_channels == 2
    default = run.build_backbone("auto", {"in_channels": 1})
    assert default.constructor == create_backbone("nnunet_plain_small").constructor
    forced = run.build_backbone("nnunet_plain_tiny", {"plans_file": str(plans), "in_channels": 1})
    assert forced.constructor["arch_kwargs"]["features_per_stage"] == [8, 16, 32]
    explicit = run.build_backbone("nnunet_plain_small", {"in_channels": 1}, plans=str(plans))
    assert explicit.constructor["arch_kwargs"]["features_per_stage"] == [8, 16, 32]


def test_latent_encoder_returns_one_tensor_and_loads_pretrained_weights(tmp_path):
    torch.manual_seed(0)
    enc = run.encoder_network("nnunet_plain_tiny")
    out = enc(torch.rand(1, 1, 16, 16, 16))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 32, 4, 4, 4)
    donor = create_backbone("nnunet_plain_tiny")
    path = atomic_save({"network": donor.network.state_dict(), "record": {
        "backbone_family": donor.family, "backbone_kwargs": donor.constructor}}, tmp_path / "final.pt")
    built = run.encoder_network("nnunet_plain_small", checkpoint=path)  # the record wins over the name
    assert built.backbone.constructor == donor.constructor
    run.load_encoder_weights(built, path)
    key = "encoder.stages.0.0.convs.0.conv.weight"
    assert torch.equal(built.backbone.network.state_dict()[key], donor.network.state_dict()[key])


def test_encode_cases_writes_embeddings(tmp_path):
    import numpy as np

    from monai_ssl_plugin.data.sources import ArraySource

    source = ArraySource([np.random.rand(1, 20, 12, 16).astype("float32") for _ in range(3)])
    path = run.encode_cases(run.encoder_network("nnunet_plain_tiny"), source, [16, 16, 16], "cpu", tmp_path / "e.pt")
    saved = torch.load(path, weights_only=True)
    assert saved["embeddings"].shape == (3, 32) and len(saved["case_ids"]) == 3


def test_pretrain_rejects_missing_inputs(tmp_path):
    with pytest.raises(PluginError, match="dataset_dir"):
        run.pretrain("mae_ssl_pretraining")
    with pytest.raises(PluginError, match="does not exist"):
        run.pretrain("mae_ssl_pretraining", tmp_path / "missing", tmp_path / "out")


def test_config_errors_surface_as_the_plugin_one_liner(tmp_path):
    # the data layer's error is raised inside MONAI's config machinery; pretrain() re-raises the PluginError
    (tmp_path / "data").mkdir()
    with pytest.raises(PluginError, match="No images found") as err:
        run.pretrain("mae_ssl_pretraining", tmp_path / "data", tmp_path / "out")
    assert "\n" not in str(err.value)
    with pytest.raises(PluginError, match="--dataset_dir"):
        run.required(None, "dataset_dir")

"""nnssl's adaptation plan, field by field against what nnssl's dataclasses require.

The field lists below are facts about nnssl (``AdaptationPlan``, ``ArchitecturePlans``,
``DynamicArchitecturePlans`` in ``nnssl/adaptation_planning/adaptation_plan.py``; ``Plan`` and
``ConfigurationPlan`` in ``nnssl/experiment_planning/experiment_planners/plan.py``), written out here
independently of the module under test so that a change on either side fails this test.
"""

from __future__ import annotations

import json

import pytest

from monai_ssl_plugin.checkpoint import CheckpointRecord
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.nnssl import (nnssl_adaptation_plan, nnssl_parser_problem, record_from_adaptation_plan,
                                             spacing_style)

ADAPTATION_PLAN = ["architecture_plans", "pretrain_plan", "pretrain_num_input_channels",
                   "recommended_downstream_patchsize", "key_to_encoder", "key_to_stem", "keys_to_in_proj", "key_to_lpe"]
DYNAMIC_ARCHITECTURE = {"n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_blocks_per_stage",
                        "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
                        "dropout_op_kwargs", "nonlin", "nonlin_kwargs"}
PLAN = {"dataset_name", "plans_name", "original_median_spacing_after_transp", "image_reader_writer",
        "transpose_forward", "transpose_backward", "configurations", "experiment_planner_used"}
CONFIGURATION_REQUIRED = {"data_identifier", "preprocessor_name", "spacing_style", "normalization_schemes",
                          "use_mask_for_norm", "resampling_fn_data", "resampling_fn_data_kwargs", "resampling_fn_mask",
                          "resampling_fn_mask_kwargs"}
CONFIGURATION_OPTIONAL = {"spacing", "patch_size"}
DNA = "dynamic_network_architectures.architectures.unet."


def _kwargs(residual: bool) -> dict:
    n = 3
    kw = {"n_stages": n, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
          "kernel_sizes": [[3, 3, 3]] * n, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
          "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
          "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
          "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
          "nonlin_kwargs": {"inplace": True}}
    kw["n_blocks_per_stage" if residual else "n_conv_per_stage"] = [1] * n
    return kw


def _record(residual: bool = True, spacing: list[float] | None = (1.0, 1.0, 1.0), channels: int = 1,
            data: dict | None = None) -> CheckpointRecord:
    cls = "ResidualEncoderUNet" if residual else "PlainConvUNet"
    stem = "encoder.stem" if residual else "encoder.stages.0"
    return CheckpointRecord(
        backbone_family=f"nnunet.{cls}", in_channels=channels, spatial_dims=3, axis_order="nnunet",
        backbone_kwargs={"arch_class_name": DNA + cls, "arch_kwargs": _kwargs(residual),
                         "arch_kwargs_req_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                         "in_channels": channels, "out_channels": channels},
        spacing=list(spacing) if spacing is not None else None, normalization=["ZScoreNormalization"] * channels,
        patch_size=[64, 64, 64], pretext="mae", pretext_settings={},
        key_prefixes={"stem": stem, "encoder": "encoder.stages", "decoder": "decoder",
                      "in_proj": [f"{stem}.convs.0.conv", f"{stem}.convs.0.all_modules.0"]},
        pretrained_parts=["stem", "encoder", "decoder"], data=data or {"dataset_name": "Dataset901_Tiny"})


def test_a_residual_encoder_plan_has_exactly_the_fields_nnssl_requires():
    plan = nnssl_adaptation_plan(_record(), recommended_patch=[128, 128, 128])
    assert list(plan) == ADAPTATION_PLAN
    arch = plan["architecture_plans"]
    assert set(arch) == {"arch_class_name", "arch_kwargs", "arch_kwargs_requiring_import"}
    assert arch["arch_class_name"] == "ResidualEncoderUNet"
    assert set(arch["arch_kwargs"]) == DYNAMIC_ARCHITECTURE  # DynamicArchitecturePlans(**kwargs): no more, no less
    assert arch["arch_kwargs_requiring_import"] == ["conv_op", "norm_op", "nonlin"]  # string values, as nnssl derives
    pretrain = plan["pretrain_plan"]
    assert set(pretrain) == PLAN  # Plan(**d): original_median_shape_after_transp would be rejected
    (name, conf), = pretrain["configurations"].items()
    assert name == "3d_fullres" and set(conf) == CONFIGURATION_REQUIRED | CONFIGURATION_OPTIONAL
    # what ConfigurationPlan.serialize asserts: spacing unless noresample, a patch size, no None scheme
    assert conf["spacing_style"] == "onemmiso" and conf["spacing"] == [1.0, 1.0, 1.0]
    assert conf["patch_size"] == [64, 64, 64] and conf["normalization_schemes"] == ["ZScoreNormalization"]
    assert plan["recommended_downstream_patchsize"] == [128, 128, 128]
    assert isinstance(plan["pretrain_num_input_channels"], int) and plan["key_to_lpe"] is None
    assert plan["keys_to_in_proj"] == ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"]
    assert nnssl_parser_problem(plan) is None
    assert plan == json.loads(json.dumps(plan))  # the same in the checkpoint and in adaptation_plan.json


def test_plainconvunet_is_what_nnssl_cannot_describe_and_the_reason_is_named():
    plan = nnssl_adaptation_plan(_record(residual=False))
    assert plan["architecture_plans"]["arch_kwargs"]["n_conv_per_stage"] == [1, 1, 1]  # nnU-Net builds from these
    problem = nnssl_parser_problem(plan)
    assert problem is not None and "['n_conv_per_stage'] beyond" in problem and "['n_blocks_per_stage']" in problem
    assert plan["recommended_downstream_patchsize"] == [64, 64, 64]  # default: the pretraining patch


def test_parser_problem_names_each_kind_of_schema_break():
    good = nnssl_adaptation_plan(_record())
    broken = json.loads(json.dumps(good))
    broken["pretrain_plan"]["original_median_shape_after_transp"] = [10, 10, 10]
    assert "original_median_shape_after_transp" in nnssl_parser_problem(broken)
    broken = json.loads(json.dumps(good))
    del broken["pretrain_plan"]["configurations"]["3d_fullres"]["resampling_fn_mask"]
    assert "ConfigurationPlan" in nnssl_parser_problem(broken)
    broken = json.loads(json.dumps(good))
    del broken["keys_to_in_proj"]
    assert "missing keys_to_in_proj" in nnssl_parser_problem(broken)


def test_spacing_style_and_resampling_come_from_the_record():
    assert spacing_style(None) == "noresample" and spacing_style([1, 1, 1]) == "onemmiso"
    assert spacing_style([0.8, 0.8, 3.0]) == "median"
    data = {"resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg_kwargs": {"order": 1}}
    conf = nnssl_adaptation_plan(_record(spacing=None, data=data))["pretrain_plan"]["configurations"]["3d_fullres"]
    assert conf["spacing_style"] == "noresample" and conf["spacing"] is None
    assert conf["resampling_fn_data"] == "resample_data_or_seg_to_shape"
    assert conf["resampling_fn_mask_kwargs"] == {"order": 1} and conf["resampling_fn_mask"] is None


def test_the_plan_reads_back_as_the_record_it_was_built_from():
    record = _record(channels=2)
    back = record_from_adaptation_plan(nnssl_adaptation_plan(record, recommended_patch=[96, 96, 96]))
    assert back.backbone_kwargs["arch_kwargs"] == record.backbone_kwargs["arch_kwargs"]
    assert back.in_channels == 2 and back.spacing == [1.0, 1.0, 1.0]
    assert back.patch_size == [64, 64, 64]  # the pretraining patch, not the recommendation
    assert back.key_prefixes["in_proj"] == record.key_prefixes["in_proj"]


def test_non_nnunet_families_are_refused():
    record = _record()
    record.backbone_family = "monai.SwinUNETR"
    with pytest.raises(PluginError, match="describes nnU-Net networks"):
        nnssl_adaptation_plan(record)

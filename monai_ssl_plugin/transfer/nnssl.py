"""nnssl's adaptation plan: what tools that read nnssl checkpoints need to adapt our weights.

nnssl (MIC-DKFZ, the framework behind the OpenMind benchmark) stores ``nnssl_adaptation_plan`` in
each checkpoint and writes it as ``adaptation_plan.json`` beside it. Two readers matter: nnssl's own
``AdaptationPlan.from_dict`` (dataclasses that take exactly their fields: an extra or a missing key
is a ``TypeError``) and nnU-Net's nnssl fine-tuning (``nnUNetv2_preprocess_like_nnssl`` /
``nnUNetv2_plan_like_dynamic``), which builds the downstream network from
``architecture_plans.arch_kwargs`` and reads the patch sizes and key prefixes. The plan is built
here from our :class:`~monai_ssl_plugin.checkpoint.CheckpointRecord`, never guessed from the weights.

nnssl describes a ResidualEncoderUNet exactly. It cannot describe a PlainConvUNet: its
``DynamicArchitecturePlans`` requires ``n_blocks_per_stage`` and has no ``n_conv_per_stage``, which
PlainConvUNet requires. Such a plan keeps nnU-Net's ``arch_kwargs`` (nnU-Net builds the network from
them) and :func:`nnssl_parser_problem` says why nnssl's parser refuses it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import torch

from monai_ssl_plugin.checkpoint import CheckpointRecord
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.nnssl_primus import (PRIMUS_CLASS, PRIMUS_PREFIXES, is_nnssl_primus, nnssl_primus_kwargs,
                                                    nnssl_primus_preset, primus_architecture)

# Keys of nnssl's serialised AdaptationPlan, in its order.
ADAPTATION_PLAN_KEYS = ("architecture_plans", "pretrain_plan", "pretrain_num_input_channels",
                        "recommended_downstream_patchsize", "key_to_encoder", "key_to_stem", "keys_to_in_proj",
                        "key_to_lpe")
# Fields of nnssl's dataclasses (all required unless listed as optional): what from_dict accepts, no more.
NNSSL_ARCHITECTURE_KEYS = ("arch_class_name", "arch_kwargs", "arch_kwargs_requiring_import")
NNSSL_DYNAMIC_ARCH_FIELDS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides",
                             "n_blocks_per_stage", "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs",
                             "dropout_op", "dropout_op_kwargs", "nonlin", "nonlin_kwargs")
NNSSL_PLAN_FIELDS = ("dataset_name", "plans_name", "original_median_spacing_after_transp", "image_reader_writer",
                     "transpose_forward", "transpose_backward", "configurations", "experiment_planner_used")
NNSSL_CONFIGURATION_FIELDS = ("data_identifier", "preprocessor_name", "spacing_style", "normalization_schemes",
                              "use_mask_for_norm", "resampling_fn_data", "resampling_fn_data_kwargs",
                              "resampling_fn_mask", "resampling_fn_mask_kwargs", "spacing", "patch_size")
NNSSL_CONFIGURATION_OPTIONAL = ("spacing", "patch_size")
NNSSL_SPACING_STYLES = ("onemmiso", "median", "noresample")
# the data's resampling, when the record carries the pretraining plans' entries (nnU-Net's names)
_RESAMPLING_FROM_PLANS = {"resampling_fn_data": "resampling_fn_data",
                          "resampling_fn_data_kwargs": "resampling_fn_data_kwargs",
                          "resampling_fn_mask": "resampling_fn_seg", "resampling_fn_mask_kwargs": "resampling_fn_seg_kwargs"}


def _json_safe(obj: Any) -> Any:
    """Lists for tuples, so the plan is the same in the checkpoint and in the JSON file."""
    return json.loads(json.dumps(obj))


def spacing_style(spacing: Sequence[float] | None) -> str:
    """nnssl's name for how the pretraining data was resampled: none, 1 mm isotropic, or a dataset spacing."""
    if spacing is None:
        return "noresample"
    return "onemmiso" if all(abs(float(s) - 1.0) < 1e-6 for s in spacing) else "median"


def _configuration_plan(record: CheckpointRecord) -> dict[str, Any]:
    """nnssl's ``ConfigurationPlan`` fields, from the record (unknown: None; nnssl checks none of them)."""
    data = record.data or {}
    spacing = [float(s) for s in record.spacing] if record.spacing is not None else None
    conf = {
        "data_identifier": data.get("data_identifier"),
        "preprocessor_name": data.get("preprocessor_name"),
        "spacing_style": spacing_style(spacing),
        "normalization_schemes": list(record.normalization),
        "use_mask_for_norm": data.get("use_mask_for_norm"),
        **{ours: data.get(theirs) for ours, theirs in _RESAMPLING_FROM_PLANS.items()},
        "spacing": spacing,
        "patch_size": [int(p) for p in record.patch_size],
    }
    return {k: conf[k] for k in NNSSL_CONFIGURATION_FIELDS}


def _pretrain_plan(record: CheckpointRecord, configuration: str) -> dict[str, Any]:
    """nnssl's ``Plan`` fields (exactly those), one configuration."""
    data, dims = record.data or {}, record.spatial_dims
    return {
        "dataset_name": data.get("dataset_name") or data.get("dataset") or data.get("name"),
        "plans_name": data.get("plans_name") or data.get("plans_identifier"),
        "original_median_spacing_after_transp": list(record.spacing) if record.spacing is not None else None,
        "image_reader_writer": data.get("image_reader_writer"),
        # nnU-Net order ("nnunet") is what nnssl and nnU-Net feed their networks: no extra transpose.
        "transpose_forward": list(range(dims)),
        "transpose_backward": list(range(dims)),
        "configurations": {configuration: _configuration_plan(record)},
        "experiment_planner_used": data.get("experiment_planner_used"),
    }


def _architecture_plans(constructor: dict[str, Any]) -> dict[str, Any]:
    """``arch_class_name`` as nnssl's short name, nnU-Net's ``arch_kwargs``; the keys to import are the
    string-valued ones, as nnssl derives them."""
    kwargs = copy.deepcopy(constructor["arch_kwargs"])
    if constructor["arch_class_name"] == PRIMUS_CLASS:  # input_shape is the pretraining patch, in pretrain_plan
        preset = nnssl_primus_preset(kwargs)
        if preset is not None:  # nnssl's own form (its parser reads Primus only so); master builds it by name
            return {"arch_class_name": preset, "arch_kwargs": None, "arch_kwargs_requiring_import": None}
        return {"arch_class_name": "Primus", "arch_kwargs": nnssl_primus_kwargs(kwargs), "arch_kwargs_requiring_import": []}
    return {"arch_class_name": constructor["arch_class_name"].rsplit(".", 1)[-1], "arch_kwargs": kwargs,
            "arch_kwargs_requiring_import": [k for k, v in kwargs.items() if isinstance(v, str)]}


def nnssl_parser_problem(plan: dict[str, Any]) -> str | None:
    """Why nnssl's ``AdaptationPlan.from_dict`` would refuse ``plan`` (None: it accepts it)."""
    missing = [k for k in ADAPTATION_PLAN_KEYS[:-1] if k not in plan]
    arch = plan.get("architecture_plans") or {}
    kwargs = arch.get("arch_kwargs") or {}
    pretrain = plan.get("pretrain_plan") or {}
    problems = [f"missing {', '.join(missing)}"] if missing else []
    if kwargs:
        extra = [k for k in kwargs if k not in NNSSL_DYNAMIC_ARCH_FIELDS]
        lacking = [k for k in NNSSL_DYNAMIC_ARCH_FIELDS if k not in kwargs]
        if extra or lacking:
            problems.append(f"arch_kwargs of {arch.get('arch_class_name')} have {extra or 'no extra keys'} beyond and "
                            f"lack {lacking or 'none'} of nnssl's DynamicArchitecturePlans fields")
    if set(pretrain) != set(NNSSL_PLAN_FIELDS):
        problems.append(f"pretrain_plan keys differ from nnssl's Plan fields: {sorted(set(pretrain) ^ set(NNSSL_PLAN_FIELDS))}")
    required = set(NNSSL_CONFIGURATION_FIELDS) - set(NNSSL_CONFIGURATION_OPTIONAL)
    for name, conf in (pretrain.get("configurations") or {}).items():
        if not required <= set(conf) <= set(NNSSL_CONFIGURATION_FIELDS):
            problems.append(f"configuration {name} keys differ from nnssl's ConfigurationPlan fields")
    return "; ".join(problems) or None


def nnssl_adaptation_plan(record: CheckpointRecord, configuration: str = "3d_fullres",
                          recommended_patch: Sequence[int] | None = None) -> dict[str, Any]:
    """The ``nnssl_adaptation_plan`` dict for a pretrained nnU-Net backbone.

    Every field nnssl's dataclasses require, and no other: ``architecture_plans`` (nnssl's short class
    name, nnU-Net's ``arch_kwargs``), ``pretrain_plan`` (nnssl's ``Plan`` with one
    ``ConfigurationPlan`` filled from the record; what the record cannot know is None),
    ``recommended_downstream_patchsize`` (``recommended_patch``; default the pretraining patch: nnU-Net's
    nnssl route fine-tunes with it, so the export passes a fine-tuning patch), the key prefixes.
    """
    if not record.backbone_family.startswith("nnunet."):
        raise PluginError(f"An nnssl adaptation plan describes nnU-Net networks; this checkpoint holds "
                          f"{record.backbone_family}.",
                          "Pretrain with an nnU-Net backbone (nnunet_* presets or plans).")
    prefixes = record.key_prefixes
    plan = {
        "architecture_plans": _architecture_plans(record.backbone_kwargs),
        "pretrain_plan": _pretrain_plan(record, configuration),
        "pretrain_num_input_channels": int(record.in_channels),
        "recommended_downstream_patchsize": [int(p) for p in (recommended_patch or record.patch_size)],
        "key_to_encoder": prefixes["encoder"],
        "key_to_stem": prefixes["stem"],
        "keys_to_in_proj": list(prefixes.get("in_proj", [])),
        "key_to_lpe": prefixes.get("lpe"),  # learnable positional embedding: ViTs (Primus) only
    }
    return _json_safe(plan)


# ---------------------------------------------------------------------------------------------
# Reading nnssl checkpoints (no ssl_record): derive what the plugin needs from the plan
# ---------------------------------------------------------------------------------------------
DNA_UNET = "dynamic_network_architectures.architectures.unet."
DEFAULT_REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
# nnssl preset names and the plugin preset whose stem + encoder are theirs (nnssl's own downstream loader
# takes only those). NoSkipResEncL (MAE without skip connections) has ResEncL's encoder and its own decoder,
# so its stem + encoder fine-tune in nnU-Net's ResEnc-L; the decoder starts fresh.
NNSSL_PRESETS = {"ResEncL": "nnunet_resenc_l", "NoSkipResEncL": "nnunet_resenc_l"}
NNSSL_CLASSES = {"ResidualEncoderUNet": DNA_UNET + "ResidualEncoderUNet", "PlainConvUNet": DNA_UNET + "PlainConvUNet"}
NNSSL_ZSCORE = "ZScoreNormalization"  # nnssl normalises everything this way (no CT path)


def _pretrain_configuration(plan: dict[str, Any]) -> dict[str, Any]:
    """The (first) configuration of nnssl's ``pretrain_plan``: spacing, patch size, normalisation."""
    pretrain = plan.get("pretrain_plan") or {}
    confs = pretrain.get("configurations") or {}
    if not isinstance(confs, dict) or not confs:
        return {}
    first = next(iter(confs.values()))
    return first if isinstance(first, dict) else {}


def architecture_from_adaptation_plan(plan: dict[str, Any], in_channels: int) -> dict[str, Any]:
    """nnU-Net's constructor (``arch_class_name``, ``arch_kwargs``, ``arch_kwargs_req_import``) of an nnssl plan.

    ``ResEncL`` and ``NoSkipResEncL`` (nnssl's presets, usually without ``arch_kwargs``) are the plugin's
    ``nnunet_resenc_l`` (for NoSkipResEncL: its stem + encoder); ``ResidualEncoderUNet`` / ``PlainConvUNet``
    (short or full class names) need ``arch_kwargs``. nnssl's Primus runs (``PrimusS/B/M/L``, ``Primus``) are
    nnU-Net's ``Primus`` at the pretraining patch (:mod:`.nnssl_primus`).
    """
    arch = plan.get("architecture_plans") or {}
    name = str(arch.get("arch_class_name") or "")
    short = name.rsplit(".", 1)[-1]
    kwargs = arch.get("arch_kwargs")
    if is_nnssl_primus(name):
        return primus_architecture(name, kwargs, _pretrain_configuration(plan).get("patch_size")
                                   or plan.get("recommended_downstream_patchsize") or [])
    req = list(arch.get("arch_kwargs_requiring_import") or DEFAULT_REQ_IMPORT)
    if short in NNSSL_CLASSES and kwargs:
        return {"arch_class_name": NNSSL_CLASSES[short], "arch_kwargs": copy.deepcopy(kwargs),
                "arch_kwargs_req_import": req}
    if short in NNSSL_PRESETS:
        from monai_ssl_plugin.backbones import create_backbone  # heavy (MONAI networks); only for presets

        with torch.device("meta"):  # only the constructor is needed: no memory, no initialisation
            ctor = create_backbone(NNSSL_PRESETS[short], in_channels=in_channels).constructor
        if kwargs:  # an explicit plan wins over the preset
            return {"arch_class_name": ctor["arch_class_name"], "arch_kwargs": copy.deepcopy(kwargs),
                    "arch_kwargs_req_import": req}
        return {"arch_class_name": ctor["arch_class_name"], "arch_kwargs": copy.deepcopy(ctor["arch_kwargs"]),
                "arch_kwargs_req_import": list(ctor["arch_kwargs_req_import"])}
    if short in NNSSL_CLASSES:
        raise PluginError(f"The nnssl adaptation plan names {short} without arch_kwargs.",
                          "Add architecture_plans.arch_kwargs (nnU-Net's plans format) to the checkpoint's plan.")
    raise PluginError(f"nnssl architecture {name or '<none>'!r} is not one the plugin can fine-tune.",
                      "Use a ResEncL / NoSkipResEncL / ResidualEncoderUNet / PlainConvUNet / PrimusS-B-M-L / Primus "
                      "checkpoint.")


def record_from_adaptation_plan(plan: dict[str, Any]) -> CheckpointRecord:
    """A :class:`CheckpointRecord` derived from an nnssl plan (for files without ``ssl_record``).

    nnssl feeds nnU-Net-ordered data (axis order ``nnunet``) and z-scores every channel; only the
    stem and encoder count as pretrained (nnssl's downstream loader), unless a caller asks for more.
    ``data["derived_from"] = "nnssl_adaptation_plan"`` marks the record as derived.
    """
    if not isinstance(plan, dict) or "pretrain_num_input_channels" not in plan:
        raise PluginError("The nnssl adaptation plan lacks pretrain_num_input_channels.",
                          "Pass a checkpoint written by nnssl (with nnssl_adaptation_plan) or by monai-ssl.")
    channels = int(plan["pretrain_num_input_channels"])
    ctor = architecture_from_adaptation_plan(plan, channels)
    conf = _pretrain_configuration(plan)
    patch = conf.get("patch_size") or plan.get("recommended_downstream_patchsize") or []  # the pretraining patch
    primus = ctor["arch_class_name"] == PRIMUS_CLASS
    dims = len(ctor["arch_kwargs"]["input_shape"] if primus else ctor["arch_kwargs"]["kernel_sizes"][0])
    spacing = conf.get("spacing")
    norm = list(conf.get("normalization_schemes") or [NNSSL_ZSCORE] * channels)
    default = PRIMUS_PREFIXES if primus else {"stem": "encoder.stem", "encoder": "encoder.stages", "decoder": "decoder"}
    stem = plan.get("key_to_stem") or default["stem"]
    encoder = plan.get("key_to_encoder") or default["encoder"]
    return CheckpointRecord(
        backbone_family="nnunet." + ctor["arch_class_name"].rsplit(".", 1)[-1],
        backbone_kwargs={**ctor, "in_channels": channels, "out_channels": None},
        in_channels=channels, spatial_dims=dims, axis_order="nnunet",
        spacing=[float(s) for s in spacing] if spacing is not None else None, normalization=norm,
        patch_size=[int(p) for p in patch], pretext="nnssl", pretext_settings={},
        key_prefixes={"stem": stem, "encoder": encoder, "decoder": default["decoder"],
                      "in_proj": list(plan.get("keys_to_in_proj") or []),
                      **({"lpe": plan.get("key_to_lpe") or PRIMUS_PREFIXES["lpe"]} if primus else {})},
        pretrained_parts=["stem", "encoder"],
        data={"derived_from": "nnssl_adaptation_plan",
              "dataset_name": (plan.get("pretrain_plan") or {}).get("dataset_name"),
              "nnssl_arch_class_name": (plan.get("architecture_plans") or {}).get("arch_class_name")})


def is_derived_from_nnssl(record: CheckpointRecord | None) -> bool:
    return record is not None and (record.data or {}).get("derived_from") == "nnssl_adaptation_plan"

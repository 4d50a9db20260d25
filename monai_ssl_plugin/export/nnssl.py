"""nnssl's adaptation plan: what tools that read nnssl checkpoints need to adapt our weights.

nnssl (MIC-DKFZ, the framework behind the OpenMind benchmark) stores ``nnssl_adaptation_plan`` in
each checkpoint and writes it as ``adaptation_plan.json`` beside it (``AdaptationPlan.serialize``
in ``nnssl/adaptation_planning/adaptation_plan.py``). The plan is built here from our
:class:`~monai_ssl_plugin.checkpoint.CheckpointRecord`, never guessed from the weights.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from monai_ssl_plugin.checkpoint import CheckpointRecord
from monai_ssl_plugin.errors import PluginError

# Keys of nnssl's serialised AdaptationPlan, in its order.
ADAPTATION_PLAN_KEYS = ("architecture_plans", "pretrain_plan", "pretrain_num_input_channels",
                        "recommended_downstream_patchsize", "key_to_encoder", "key_to_stem", "keys_to_in_proj",
                        "key_to_lpe")


def _json_safe(obj: Any) -> Any:
    """Lists for tuples, so the plan is the same in the checkpoint and in the JSON file."""
    return json.loads(json.dumps(obj))


def nnssl_adaptation_plan(record: CheckpointRecord, configuration: str = "3d_fullres") -> dict[str, Any]:
    """The ``nnssl_adaptation_plan`` dict for a pretrained nnU-Net backbone.

    ``architecture_plans.arch_class_name`` uses nnssl's short names for the dynamic U-Nets
    (``PlainConvUNet`` / ``ResidualEncoderUNet``) with the full ``arch_kwargs``; ``pretrain_plan``
    follows nnssl's ``Plan`` layout with one configuration, filled from the record (spacing,
    normalisation, patch size, data description); fields the record cannot know are ``None``.
    """
    if not record.backbone_family.startswith("nnunet."):
        raise PluginError(f"An nnssl adaptation plan describes nnU-Net networks; this checkpoint holds "
                          f"{record.backbone_family}.",
                          "Pretrain with an nnU-Net backbone (nnunet_* presets or plans).")
    ctor = record.backbone_kwargs
    prefixes = record.key_prefixes
    data = record.data or {}
    dims = record.spatial_dims
    spacing = list(record.spacing) if record.spacing is not None else None
    pretrain_configuration = {
        "data_identifier": data.get("data_identifier"),
        "preprocessor_name": data.get("preprocessor_name"),
        "spacing": spacing,
        "patch_size": list(record.patch_size),
        "normalization_schemes": list(record.normalization),
        "use_mask_for_norm": data.get("use_mask_for_norm"),
    }
    pretrain_plan = {
        "dataset_name": data.get("dataset_name") or data.get("dataset") or data.get("name"),
        "plans_name": data.get("plans_name") or data.get("plans_identifier"),
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": None,
        "image_reader_writer": data.get("image_reader_writer"),
        # nnU-Net order ("nnunet") is what nnssl and nnU-Net feed their networks: no extra transpose.
        "transpose_forward": list(range(dims)),
        "transpose_backward": list(range(dims)),
        "configurations": {configuration: pretrain_configuration},
        "experiment_planner_used": data.get("experiment_planner_used"),
    }
    plan = {
        "architecture_plans": {
            "arch_class_name": ctor["arch_class_name"].rsplit(".", 1)[-1],
            "arch_kwargs": copy.deepcopy(ctor["arch_kwargs"]),
            "arch_kwargs_requiring_import": list(ctor.get("arch_kwargs_req_import", [])),
        },
        "pretrain_plan": pretrain_plan,
        "pretrain_num_input_channels": int(record.in_channels),
        "recommended_downstream_patchsize": list(record.patch_size),
        "key_to_encoder": prefixes["encoder"],
        "key_to_stem": prefixes["stem"],
        "keys_to_in_proj": list(prefixes.get("in_proj", [])),
        "key_to_lpe": None,  # learnable positional embedding: ViTs only
    }
    return _json_safe(plan)

"""Plans variants: make a target dataset's nnU-Net plans build the pretrained architecture.

nnU-Net chooses the architecture from each dataset's fingerprint, so weights pretrained on one plan
rarely fit another. A variant copies the target's plans (its spacing, normalisation and
preprocessed data stay as they are: ``data_identifier`` is kept, so nothing is preprocessed again)
and replaces only the architecture, the patch size (made valid for the strides) and the batch size.
The same file serves the pretrained run and its from-scratch twin, so the baseline is fair by
construction: only the trainer differs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from monai_ssl_plugin.backbones.nnunet import load_plans, resolve_configuration
from monai_ssl_plugin.checkpoint import atomic_write_text
from monai_ssl_plugin.data.sources import preprocessed_dataset_dir
from monai_ssl_plugin.errors import PluginError


def valid_patch_size(patch: list[int], divisor: list[int]) -> list[int]:
    """Round each side down to a multiple of the network's total stride (at least one multiple)."""
    return [max(d, (int(p) // d) * d) for p, d in zip(patch, divisor)]


def architecture_from_backbone(constructor: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net's plans ``architecture`` entry for an :class:`NnUNetBackbone` constructor record."""
    return {"network_class_name": constructor["arch_class_name"], "arch_kwargs": copy.deepcopy(constructor["arch_kwargs"]),
            "_kw_requires_import": list(constructor["arch_kwargs_req_import"])}


def write_plans_variant(dataset: str | int, *, backbone: str | None = None, checkpoint: str | Path | None = None,
                        source_plans: str = "nnUNetPlans", configuration: str = "3d_fullres",
                        plans_identifier: str | None = None, patch_size: list[int] | None = None,
                        batch_size: int | None = None) -> Path:
    """Write ``<plans_identifier>.json`` next to the dataset's plans with the pretrained architecture.

    Exactly one of ``backbone`` (a registered nnU-Net preset, e.g. ``nnunet_plain_small``) and
    ``checkpoint`` (a pretraining checkpoint or nnU-Net export whose record names the
    architecture) says which architecture to use. Returns the plans file; the identifier to pass
    as ``-p`` is its stem.
    """
    from monai_ssl_plugin.backbones import NnUNetBackbone, create_backbone

    if (backbone is None) == (checkpoint is None):
        raise PluginError("Say which architecture to use.", "Pass exactly one of --backbone NAME or --checkpoint FILE.")
    ds_dir = preprocessed_dataset_dir(dataset)
    src_file = ds_dir / f"{source_plans}.json"
    plans = load_plans(src_file)
    conf = resolve_configuration(plans, configuration)
    n_channels = len(conf["normalization_schemes"])
    if checkpoint is not None:
        from monai_ssl_plugin.checkpoint import safe_load

        ckpt = safe_load(checkpoint)
        record = ckpt.get("record") or ckpt.get("ssl_record")
        if not record or not str(record.get("backbone_family", "")).startswith("nnunet."):
            raise PluginError(f"{checkpoint} has no nnU-Net backbone record.",
                              "Use a checkpoint written by monai-ssl pretraining on an nnU-Net backbone.")
        constructor = record["backbone_kwargs"]
        if record["in_channels"] != n_channels:
            raise PluginError(f"The checkpoint was pretrained on {record['in_channels']} input channel(s); dataset "
                              f"{dataset} has {n_channels}.", "Pretrain on data with the same channels.")
        name = plans_identifier or f"{source_plans}_ssl"
    else:
        constructor = create_backbone(backbone, in_channels=n_channels, spatial_dims=len(conf["patch_size"])).constructor
        name = plans_identifier or f"{source_plans}_{backbone}"
    net = NnUNetBackbone(constructor["arch_class_name"], constructor["arch_kwargs"],
                         constructor["arch_kwargs_req_import"], n_channels)
    new_conf = copy.deepcopy(plans["configurations"][configuration])
    new_conf.pop("inherits_from", None)
    new_conf = {**conf, **{k: v for k, v in new_conf.items() if k != "inherits_from"}}
    new_conf["architecture"] = architecture_from_backbone(constructor)
    new_conf["patch_size"] = valid_patch_size(patch_size or conf["patch_size"], net.divisor())
    if batch_size is not None:
        new_conf["batch_size"] = int(batch_size)
    out = copy.deepcopy(plans)
    out["plans_name"] = name
    out["configurations"] = {configuration: new_conf}
    target = ds_dir / f"{name}.json"
    atomic_write_text(json.dumps(out, indent=2), target)
    return target

"""nnssl's Primus checkpoints read as nnU-Net's ``Primus`` (the plugin's ``nnunet.Primus`` family).

nnssl names its Primus runs by preset (``PrimusS`` / ``B`` / ``M`` / ``L``, usually without
``arch_kwargs``) and builds them with dynamic_network_architectures' presets at 8^3 patches and
``input_shape`` = the pretraining patch; explicit runs (``Primus`` / ``PrimusX``) carry
``arch_kwargs`` in nnssl's names (``encoder_eva_depth``, ``encoder_eva_numheads``), which nnU-Net
master's ``PretrainedTrainer_Primusx`` also reads. Either becomes plans-style ``arch_kwargs`` of
``dynamic_network_architectures.architectures.primus.Primus``, so nnU-Net's own builder makes the
network and the checkpoint's keys (``down_projection.*``, ``eva.*``) load as they are.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from monai_ssl_plugin.errors import PluginError

PRIMUS_CLASS = "dynamic_network_architectures.architectures.primus.Primus"
# dynamic_network_architectures' presets (width, depth, heads); all four use init_values 0.1, scale_attn_inner
PRIMUS_PRESETS = {"PrimusS": (396, 12, 6), "PrimusB": (792, 12, 12), "PrimusM": (864, 16, 12), "PrimusL": (1056, 24, 16)}
PRIMUS_PRESET_EXTRA = {"init_values": 0.1, "scale_attn_inner": True}
PRIMUS_EXPLICIT = ("Primus", "PrimusX")
# nnssl / master's explicit names -> Primus's own argument names
_RENAMED = {"encoder_eva_depth": "eva_depth", "encoder_eva_numheads": "eva_numheads"}
_OPTIONAL = ("init_values", "scale_attn_inner", "use_rot_pos_emb", "use_abs_pos_embed", "mlp_ratio",
             "num_register_tokens")
PRIMUS_PREFIXES = {"stem": "down_projection", "encoder": "eva", "decoder": "up_projection",
                   "in_proj": ["down_projection.proj"], "lpe": "eva.pos_embed"}


def is_nnssl_primus(arch_class_name: str) -> bool:
    short = arch_class_name.rsplit(".", 1)[-1]
    return short in PRIMUS_PRESETS or short in PRIMUS_EXPLICIT


def _explicit_kwargs(kwargs: dict[str, Any], name: str) -> dict[str, Any]:
    out = {_RENAMED.get(k, k): v for k, v in kwargs.items() if _RENAMED.get(k, k) in
           ("embed_dim", "patch_embed_size", "eva_depth", "eva_numheads", *_OPTIONAL)}
    ignored = sorted(k for k in kwargs if _RENAMED.get(k, k) not in out)
    if ignored:  # said, never silently: dropout rates are training settings, anything else is worth a look
        warnings.warn(f"The nnssl adaptation plan's {name} arch_kwargs {', '.join(ignored)} are not used to build "
                      f"the network (the plugin builds Primus from embed_dim, patch_embed_size, depth, heads and "
                      f"{', '.join(_OPTIONAL)}).", stacklevel=3)
    lacking = [k for k in ("embed_dim", "eva_depth", "eva_numheads") if k not in out]
    if lacking:
        raise PluginError(f"The nnssl adaptation plan's {name} arch_kwargs lack {', '.join(lacking)}.",
                          "Add them (embed_dim, encoder_eva_depth, encoder_eva_numheads) to "
                          "architecture_plans.arch_kwargs, as nnssl writes them.")
    if isinstance(out.get("init_values"), list):  # nnssl may store it as a one-element list
        out["init_values"] = out["init_values"][0]
    return out


def primus_architecture(arch_class_name: str, kwargs: dict[str, Any] | None,
                        pretrain_patch: Sequence[int]) -> dict[str, Any]:
    """nnU-Net's constructor (``arch_class_name``, ``arch_kwargs``, ``arch_kwargs_req_import``) of nnssl's Primus.

    ``input_shape`` is the pretraining patch: the learned position embedding has one entry per token of it.
    """
    short = arch_class_name.rsplit(".", 1)[-1]
    patch = [int(p) for p in pretrain_patch or []]
    if len(patch) != 3:
        raise PluginError(f"The nnssl adaptation plan of {short} gives no 3D pretraining patch size ({patch}).",
                          "Add pretrain_plan.configurations.<name>.patch_size (Primus's input_shape) to the plan.")
    if kwargs:
        arch = _explicit_kwargs(kwargs, short)
    elif short in PRIMUS_PRESETS:
        width, depth, heads = PRIMUS_PRESETS[short]
        arch = {"embed_dim": width, "eva_depth": depth, "eva_numheads": heads, **PRIMUS_PRESET_EXTRA}
    else:
        raise PluginError(f"The nnssl adaptation plan names {short} without arch_kwargs.",
                          "Add architecture_plans.arch_kwargs (embed_dim, encoder_eva_depth, encoder_eva_numheads).")
    embed = [int(p) for p in arch.pop("patch_embed_size", None) or [8, 8, 8]]
    if any(p % e for p, e in zip(patch, embed)):
        raise PluginError(f"The pretraining patch {patch} of {short} is not a multiple of its patch embedding {embed}.",
                          "Fix pretrain_plan's patch_size in the checkpoint's adaptation plan.")
    arch_kwargs = {"embed_dim": int(arch.pop("embed_dim")), "patch_embed_size": embed,
                   "eva_depth": int(arch.pop("eva_depth")), "eva_numheads": int(arch.pop("eva_numheads")),
                   "input_shape": patch, **arch}
    return {"arch_class_name": PRIMUS_CLASS, "arch_kwargs": arch_kwargs, "arch_kwargs_req_import": []}


def nnssl_primus_kwargs(arch_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Primus's plans-style ``arch_kwargs`` in nnssl's names, every key nnU-Net master's ``PretrainedTrainer_Primusx``
    reads (``embed_dim``, ``patch_embed_size``, ``encoder_eva_depth``, ``encoder_eva_numheads``,
    ``scale_attn_inner``, ``init_values``; Primus's own defaults where the record has none)."""
    renamed = {v: k for k, v in _RENAMED.items()}
    out = {renamed.get(k, k): v for k, v in arch_kwargs.items() if k != "input_shape"}
    out.setdefault("scale_attn_inner", False)
    out.setdefault("init_values", None)
    return out


def nnssl_primus_preset(arch_kwargs: dict[str, Any]) -> str | None:
    """nnssl's preset name (``PrimusM`` ...) when ``arch_kwargs`` are exactly that preset at 8^3 patches, else None.
    nnssl's own ``AdaptationPlan.from_dict`` reads Primus only by preset name (its architecture dataclass has U-Net
    fields only), so a preset is written by name, without kwargs."""
    extra = {k: v for k, v in arch_kwargs.items()
             if k not in ("embed_dim", "eva_depth", "eva_numheads", "patch_embed_size", "input_shape")}
    if [int(p) for p in arch_kwargs.get("patch_embed_size", [])] != [8, 8, 8] or extra != PRIMUS_PRESET_EXTRA:
        return None
    dims = (int(arch_kwargs["embed_dim"]), int(arch_kwargs["eva_depth"]), int(arch_kwargs["eva_numheads"]))
    return next((name for name, preset in PRIMUS_PRESETS.items() if preset == dims), None)

"""The one key remapper: every weight transfer renames keys here (wrappers are looked through with
:func:`monai_ssl_plugin.distributed.unwrap`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

# Prefixes added by wrappers, not by the network: DDP ("module."), torch.compile ("_orig_mod.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP / torch.compile prefixes wherever they start a key (they can nest)."""
    return strip_prefixes(state, WRAPPER_PREFIXES)


def remap_keys(state: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Rename key prefixes: ``{"encoder.": "feature_extractor.body."}`` moves a sub-tree.

    Keys that match no source prefix are dropped, so a mapping also selects the part to transfer.
    An empty source prefix ``""`` matches everything (use it to prepend a destination prefix).
    The longest matching source prefix wins.
    """
    ordered = sorted(mapping.items(), key=lambda kv: len(kv[0]), reverse=True)
    out = {}
    for k, v in state.items():
        for src, dst in ordered:
            if k.startswith(src):
                out[dst + k[len(src):]] = v
                break
    return out


# ---------------------------------------------------------------------------------------------
# Published SSL checkpoints -> the networks the plugin's consumers build. Each map is a pure key
# renaming (no tensor changes); the catalog's converters (``monai_ssl_plugin.pretrained``) apply them.
# ---------------------------------------------------------------------------------------------
def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove any of ``prefixes`` wherever they start a key, repeatedly (``module.backbone.x`` -> ``x``)."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


# Tang et al.'s Swin UNETR pretraining stores the Swin encoder without its ``swinViT.`` root and with
# timm's MLP names; MONAI's SwinUNETR.load_from reads exactly these names.
SWIN_MLP_TO_MONAI = {".mlp.fc1.": ".mlp.linear1.", ".mlp.fc2.": ".mlp.linear2."}


def swin_ssl_to_monai(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model_swinvit.pt``'s ``module.layers1.0.blocks.0.mlp.fc1.weight`` -> ``swinViT.layers1.0.blocks.0.mlp.linear1.weight``."""
    out = {}
    for k, v in strip_prefixes(state, ("module.",)).items():
        k = k.replace("swin_vit.", "swinViT.")
        for src, dst in SWIN_MLP_TO_MONAI.items():
            k = k.replace(src, dst)
        out[k if k.startswith("swinViT.") else "swinViT." + k] = v
    return out


def voco_to_monai(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """VoCo's ``VoCoHead`` keys (``[module.]backbone.swinViT.*``, ``backbone.encoder1.*``, heads) -> MONAI
    ``SwinUNETR(use_v2=True)`` keys; the projection heads (``student.`` / ``teacher.``) are dropped."""
    out = {}
    for k, v in strip_prefixes(state, ("module.", "backbone.")).items():
        if k.startswith(("student.", "teacher.")):
            continue
        out[k.replace("swin_vit.", "swinViT.")] = v
    return out


def nnssl_to_nnunet(state: Mapping[str, torch.Tensor], network_keys: set[str]) -> dict[str, torch.Tensor]:
    """nnssl's ``network_weights`` -> the nnU-Net network's keys: nnssl's ResEnc-L trainers name the encoder
    ``encoder.*`` like nnU-Net's ResidualEncoderUNet, so the map keeps the keys that network has and drops
    the pretext heads (VoCo / SimCLR ``projector.*``, Swin UNETR-style ``*_proj_head.*``)."""
    return {k: v for k, v in strip_wrapper_prefixes(state).items() if k in network_keys}

"""The one key remapper and the one ``unwrap``: every weight transfer renames keys and looks through
wrappers here."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

# Prefixes added by wrappers, not by the network: DDP ("module."), torch.compile ("_orig_mod.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap(network: nn.Module) -> nn.Module:
    """Look through DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    module = network.module if isinstance(getattr(network, "module", None), nn.Module) else network
    return getattr(module, "_orig_mod", module)


def strip_wrapper_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP / torch.compile prefixes wherever they start a key (they can nest)."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in WRAPPER_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


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

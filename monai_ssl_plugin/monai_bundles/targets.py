"""Which part of a downstream MONAI network receives SSL weights, and how source keys map onto it.

``resolve_target(network, "auto")`` recognises the known downstream networks (also when wrapped: DDP,
``RetinaNetDetector``, a custom module holding one):

| network | receives the weights | stays new |
| --- | --- | --- |
| ``RetinaNet`` (``monai.apps.detection``, + ``resnet_fpn_feature_extractor``) | ``feature_extractor.body`` | FPN, heads |
| ``monai.networks.nets.ResNet`` (``resnet10..200``) classifier | everything | ``fc`` |
| ``DenseNet`` / ``DenseNet121..264`` | ``features`` | ``class_layers`` |
| ``SwinUNETR`` | ``swinViT`` | CNN encoders, decoder |
| ``UNETR`` | ``vit`` | CNN encoders, decoder |
| ``SegResNet`` | ``convInit``, ``down_layers`` | decoder |
| ``UNet`` | the down path and the bottom | up path |
| ``DynUNet`` | ``input_block``, ``downsamples``, ``bottleneck`` (also from nnU-Net's ``PlainConvUNet``) | up path, heads |
| nnU-Net's ``ResidualEncoderUNet`` / ``PlainConvUNet`` (``dynamic_network_architectures``) | ``encoder`` (stem + stages) | decoder |

Any other network: pass ``target="some.prefix"`` (a sub-module name) or ``target=""`` (the whole network).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.networks import nets
from monai.networks.layers.simplelayers import SkipConnection
from torch import nn

from monai_ssl_plugin.distributed import unwrap
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.keymap import remap_keys
from monai_ssl_plugin.transfer.unet_keymap import PLAIN_FAMILY

RESNET_FAMILIES = ("monai.ResNet", "monai.ResNetFeatures")
VIT_FAMILIES = ("monai.ViT", "monai.ViTAutoEnc", "monai.MaskedAutoEncoderViT")
# Where the encoder lives in a source network of each family (used when keys move to a new root).
FAMILY_ENCODER_PREFIXES = {
    "monai.ResNet": ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"),
    "monai.ResNetFeatures": ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"),
    "monai.ViT": ("patch_embedding", "blocks", "norm"),
    "monai.ViTAutoEnc": ("patch_embedding", "blocks", "norm"),
    "monai.MaskedAutoEncoderViT": ("patch_embedding", "blocks", "norm"),
    "monai.SwinUNETR": ("swinViT",),
    "monai.UNETR": ("vit",),
}

# Families whose names differ from the target's and need a structural key map (see load.py), by target kind.
KEY_MAPS = {"dynunet": {PLAIN_FAMILY: "plain_unet_to_dynunet"}}


@dataclass(frozen=True)
class Target:
    """The part of ``network`` that receives weights.

    ``roots`` / ``heads`` are dot-terminated key prefixes relative to the network given (wrappers such
    as DDP looked through); ``roots == ("",)`` means the whole network.
    """

    kind: str  # retinanet | resnet | densenet | swinunetr | unetr | segresnet | unet | dynunet | nnunet | prefix
    base: str  # where the recognised network sits inside the one given ("" or e.g. "network.")
    roots: tuple[str, ...]
    heads: tuple[str, ...] = ()
    network_name: str = ""
    families: Mapping[str, str] = field(default_factory=dict)  # accepted family -> new root for its encoder keys
    key_maps: Mapping[str, str] = field(default_factory=dict)  # family -> the key map its names need (not a new root)

    @property
    def name(self) -> str:
        """Human-readable: ``feature_extractor.body``, ``convInit+down_layers``, ``<whole network>``."""
        names = [r.rstrip(".") for r in self.roots]
        if not any(names):
            return f"<all but {'+'.join(h.rstrip('.') for h in self.heads)}>" if self.heads else "<whole network>"
        return "+".join(names)

    def includes(self, key: str) -> bool:
        return any(key.startswith(r) for r in self.roots) and not any(key.startswith(h) for h in self.heads)

    def accepts(self, family: str) -> bool:
        return self.kind == "prefix" or _family_root(self.families, family) is not None

    def describe(self) -> str:
        where = f"{self.name} of {self.network_name}" if self.network_name else self.name
        return where + (f" (new: {', '.join(h.rstrip('.') for h in self.heads)})" if self.heads else "")


def _family_root(families: Mapping[str, str], family: str) -> str | None:
    if family in families:
        return families[family]
    for pattern, root in families.items():  # "monai.DenseNet*" style patterns
        if pattern.endswith("*") and family.startswith(pattern[:-1]):
            return root
    return None


def _classes() -> list[tuple[str, type]]:
    """Known downstream classes, most specific first (a RetinaNet before anything inside it)."""
    out: list[tuple[str, type]] = []
    try:
        from monai.apps.detection.networks.retinanet_network import RetinaNet

        out.append(("retinanet", RetinaNet))
    except Exception:  # monai.apps.detection needs torchvision; other kinds still work without it
        pass
    out += [("swinunetr", nets.SwinUNETR), ("unetr", nets.UNETR), ("resnet", nets.ResNet), ("densenet", nets.DenseNet),
            ("segresnet", nets.SegResNet), ("dynunet", nets.DynUNet), ("unet", nets.UNet)]
    try:  # nnU-Net's networks as a bundle's network_def (installed with nnunetv2)
        from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

        out += [("nnunet", ResidualEncoderUNet), ("nnunet", PlainConvUNet)]
    except ImportError:
        pass
    return out


def detect_kind(network: nn.Module) -> tuple[str, str, nn.Module] | None:
    """(kind, base prefix, module) of the shallowest known network inside ``network``, or None."""
    classes = _classes()
    for name, module in unwrap(network).named_modules():
        for kind, cls in classes:
            if isinstance(module, cls):
                return kind, (name + "." if name else ""), module
    return None


def _unet_encoder(unet: nn.Module) -> tuple[str, ...]:
    """Down path + bottom of ``monai.networks.nets.UNet``: model.0, model.1.submodule.0, ..., the bottom."""
    roots, prefix, seq = [], "model.", unet.model
    while True:
        roots.append(prefix + "0.")
        skip = seq[1]
        if not isinstance(skip, SkipConnection):
            raise PluginError("Unexpected UNet layout (no SkipConnection).", "Pass target= the encoder's prefix.")
        sub = skip.submodule
        if isinstance(sub, nn.Sequential) and len(sub) == 3 and isinstance(sub[1], SkipConnection):
            prefix, seq = prefix + "1.submodule.", sub
            continue
        roots.append(prefix + "1.submodule.")
        return tuple(roots)


def _spec(kind: str, module: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
    """(roots, heads, families) of a recognised network, relative to that network."""
    if kind == "retinanet":
        return ("feature_extractor.body.",), (), {f: "feature_extractor.body." for f in RESNET_FAMILIES}
    if kind == "resnet":
        return ("",), ("fc.",), {f: "" for f in RESNET_FAMILIES}
    if kind == "densenet":
        return ("features.",), ("class_layers.",), {"monai.DenseNet*": ""}
    if kind == "swinunetr":
        return ("swinViT.",), (), {"monai.SwinUNETR": ""}
    if kind == "unetr":
        return ("vit.",), (), {"monai.UNETR": "", **{f: "vit." for f in VIT_FAMILIES}}
    if kind == "segresnet":
        return ("convInit.", "down_layers."), (), {"monai.SegResNet": ""}
    if kind == "dynunet":
        return ("input_block.", "downsamples.", "bottleneck."), (), {"monai.DynUNet": "", PLAIN_FAMILY: ""}
    if kind == "nnunet":  # the same network nnU-Net's trainers build: names are kept (identity map)
        return ("encoder.",), (), {"nnunet.*": ""}
    if kind == "unet":
        return _unet_encoder(module), (), {"monai.UNet": ""}
    raise AssertionError(kind)


def resolve_target(network: nn.Module, target: str = "auto") -> Target:
    """The part of ``network`` that receives SSL weights.

    ``target``: ``"auto"`` (recognise the network, see the module docstring), a sub-module name such as
    ``"feature_extractor.body"`` (when it is the auto target of the recognised network, its family
    checks are kept), or ``""`` / ``"whole"`` for every parameter.
    """
    found = detect_kind(network)
    auto = None
    if found is not None:
        kind, base, module = found
        roots, heads, families = _spec(kind, module)
        auto = Target(kind, base, tuple(base + r for r in roots), tuple(base + h for h in heads),
                      type(module).__name__, families, KEY_MAPS.get(kind, {}))
    if target in ("auto", None):
        if auto is None:
            raise PluginError(f"Cannot tell which part of {type(unwrap(network)).__name__} receives SSL weights.",
                              "Pass target='<sub-module name>' (e.g. target='encoder') or target='' for the whole network.")
        return auto
    if target in ("", "whole", "<whole network>"):
        return Target("prefix", "", ("",), network_name=type(unwrap(network)).__name__)
    prefix = target.strip(".") + "."
    if auto is not None and (prefix,) == auto.roots:
        return auto
    if not any(k.startswith(prefix) for k in unwrap(network).state_dict()):
        raise PluginError(f"{type(unwrap(network)).__name__} has no sub-module {target!r}.",
                          "Pass a prefix of its state_dict keys (e.g. one of: "
                          f"{', '.join(sorted({k.split('.')[0] for k in unwrap(network).state_dict()})[:8])}).")
    return Target("prefix", "", (prefix,), network_name=type(unwrap(network)).__name__)


def _as_prefixes(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [v for v in value if isinstance(v, str)]
    return []


def record_prefixes(key_prefixes: Mapping[str, Any] | None) -> list[str]:
    """Stem + encoder + in-projection prefixes a record names (without trailing dots)."""
    kp = key_prefixes or {}
    out: list[str] = []
    for part in ("stem", "encoder", "in_proj"):
        out += _as_prefixes(kp.get(part))
    return [p.rstrip(".") for p in out]


def _select(state: Mapping[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    if any(p == "" for p in prefixes):
        return dict(state)
    return {k: v for k, v in state.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}


def map_source(target: Target, family: str, state: Mapping[str, torch.Tensor],
               key_prefixes: Mapping[str, Any] | None = None, source_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Source keys renamed into the target network's naming (through ``remap_keys``).

    Same family as the target (``new root == ""``): keys are kept as they are and the target decides what
    loads. A family whose encoder moves to a new root (a ResNet into ``feature_extractor.body``, a ViT into
    ``UNETR.vit``): the encoder keys (family defaults + the record's stem/encoder prefixes) are moved.
    ``kind == "prefix"``: keys already under the prefix are kept; otherwise the keys under ``source_prefix``
    (default: the record's single encoder prefix, else everything) are moved under the prefix.
    """
    if target.kind == "prefix":
        root = target.roots[0]
        if root == "" or any(k.startswith(root) for k in state):
            return dict(state)
        if source_prefix is None:
            enc = _as_prefixes((key_prefixes or {}).get("encoder"))
            source_prefix = enc[0] if len(enc) == 1 and any(k.startswith(enc[0].rstrip(".") + ".") for k in state) else ""
        src = source_prefix.strip(".") + "." if source_prefix.strip(".") else ""
        selected = {k: v for k, v in state.items() if k.startswith(src)}
        return remap_keys(selected, {src: root})
    new_root = _family_root(target.families, family)
    if new_root is None or family in target.key_maps:
        raise AssertionError("check accepts() first; structural key maps are applied by the caller")
    new_root = target.base + new_root
    if new_root == "":
        return dict(state)
    prefixes = list(FAMILY_ENCODER_PREFIXES.get(family, ())) + record_prefixes(key_prefixes)
    selected = _select(state, prefixes) if prefixes else dict(state)
    return remap_keys(selected, {"": new_root})


def first_conv(state: Mapping[str, torch.Tensor], include=lambda k: True) -> tuple[str, torch.Tensor] | None:
    """The first 2D/3D convolution kernel (in state-dict order) among the included keys: the stem."""
    for k, v in state.items():
        if include(k) and k.endswith("weight") and isinstance(v, torch.Tensor) and v.ndim in (4, 5):
            return k, v
    return None

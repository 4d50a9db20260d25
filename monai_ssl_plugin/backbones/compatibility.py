"""What each registered backbone can do, without building it: the rows of the
pretext × backbone compatibility matrix (docs/compatibility.md).

``compatibility("monai_swinunetr")`` → ``{"family": "monai.SwinUNETR", "global": True, "dense": True,
"dims": [2, 3], "sparse_masking": True, "light_decoder": False, "input": "multiple of patch_size**5 (32); …"}``:

- ``global``: ``embed`` works, so instance-discrimination / joint-embedding pretexts apply (all do);
- ``dense``: the network has its own decoder (``has_decoder``), so reconstruction pretexts train
  encoder *and* decoder, and the downstream segmenter receives both;
- ``light_decoder``: no decoder of its own, but dense pretexts can run with a pretext-owned
  :func:`~monai_ssl_plugin.backbones.resnet.make_light_decoder` (its weights are never exported);
- ``sparse_masking``: ``encoder_stages`` yields channel-first feature maps, so SparK-style re-masking
  after every stage works (convolutional and Swin encoders; not plain ViTs, whose tokens attend globally);
- ``input``: the spatial sizes the network accepts.
"""

from __future__ import annotations

import copy
from typing import Any

from monai_ssl_plugin.backbones.registry import create_backbone, list_backbones
from monai_ssl_plugin.errors import PluginError

_CAPS: dict[str, dict[str, Any]] = {}

# nnU-Net adapters live in backbones/nnunet.py; their capabilities are fixed by the architecture.
_NNUNET = {"global": True, "dense": True, "dims": [2, 3], "sparse_masking": True, "light_decoder": False,
           "input": "multiple of the product of the strides"}
for _name, _family in (("nnunet_plain_tiny", "nnunet.PlainConvUNet"), ("nnunet_plain_small", "nnunet.PlainConvUNet"),
                       ("nnunet_resenc_l", "nnunet.ResidualEncoderUNet"),
                       ("nnunet_from_plans", "nnunet.PlainConvUNet | nnunet.ResidualEncoderUNet (from the plans)")):
    _CAPS[_name] = {"family": _family, **_NNUNET}


def declare_capabilities(name: str, *, family: str, dense: bool, dims: list[int], sparse_masking: bool,
                         light_decoder: bool = False, input: str = "any size") -> None:
    """Record what backbone ``name`` supports (called next to its ``register_backbone``)."""
    _CAPS[name] = {"family": family, "global": True, "dense": dense, "dims": list(dims),
                   "sparse_masking": sparse_masking, "light_decoder": light_decoder, "input": input}


def compatibility(backbone_name: str) -> dict[str, Any]:
    """Capabilities of a registered backbone (see the module docstring for the keys)."""
    if backbone_name in _CAPS:
        return copy.deepcopy(_CAPS[backbone_name])
    if backbone_name not in list_backbones():
        raise PluginError(f"Unknown backbone {backbone_name!r}.", f"Choose one of: {', '.join(list_backbones())}.")
    # registered by a module that declares nothing: build it with its defaults and look
    b = create_backbone(backbone_name)
    try:
        sparse = bool(b.encoder_stages())
    except NotImplementedError:
        sparse = False
    return {"family": b.family, "global": True, "dense": b.has_decoder, "dims": [b.spatial_dims],
            "sparse_masking": sparse, "light_decoder": False, "input": "unknown"}


def compatibility_table() -> dict[str, dict[str, Any]]:
    """``compatibility`` for every registered backbone, by name."""
    return {name: compatibility(name) for name in list_backbones()}

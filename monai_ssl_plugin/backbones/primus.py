"""nnU-Net's Primus (a 3D ViT: patch embedding + EVA transformer + light patch decoder) as a backbone.

Built with nnU-Net's builder (``get_network_from_plans``) from plans-style ``arch_kwargs`` naming
``dynamic_network_architectures``' ``Primus``, so the state dict has exactly the keys nnssl's Primus
checkpoints and nnU-Net's Primus trainers use: ``down_projection.*`` (stem), ``eva.*`` (encoder, with
the learned position embedding ``eva.pos_embed``), ``up_projection.*`` (decoder).

Primus learns one position embedding per token of its ``input_shape``: the network computes only
that input size, so the patch size nnU-Net trains and predicts with must equal ``input_shape``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.backbones.compatibility import declare_capabilities
from monai_ssl_plugin.backbones.registry import register_backbone

PRIMUS_CLASS = "dynamic_network_architectures.architectures.primus.Primus"
# dynamic_network_architectures' Primus-M (nnssl's "PrimusM"): width, depth, heads and its defaults
PRIMUS_M = {"embed_dim": 864, "eva_depth": 16, "eva_numheads": 12, "init_values": 0.1, "scale_attn_inner": True}


def is_primus(arch_class_name: str) -> bool:
    """True for the Primus family (``Primus``, ``PrimusM``, ...; short or full class names)."""
    return arch_class_name.rsplit(".", 1)[-1].startswith("Primus")


def primus_kwargs(embed_dim: int, eva_depth: int, eva_numheads: int, input_shape: list[int],
                  patch_embed_size: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    """Plans-style ``arch_kwargs`` of ``Primus`` (JSON-safe lists; ``extra``: its optional arguments)."""
    patch = list(patch_embed_size or [8] * len(input_shape))
    return {"embed_dim": int(embed_dim), "patch_embed_size": [int(p) for p in patch], "eva_depth": int(eva_depth),
            "eva_numheads": int(eva_numheads), "input_shape": [int(s) for s in input_shape], **extra}


class NnUNetPrimusBackbone(BackboneAdapter):
    """Adapter over ``Primus``: encoder = ``down_projection`` + ``eva``, decoder = ``up_projection``.

    Same constructor as :class:`~monai_ssl_plugin.backbones.nnunet.NnUNetBackbone`, so a record and a
    plans file describe it the same way (``arch_class_name``, ``arch_kwargs``, ``arch_kwargs_req_import``).
    """

    has_decoder = True
    family = "nnunet.Primus"

    def __init__(self, arch_class_name: str, arch_kwargs: dict[str, Any], arch_kwargs_req_import: list[str],
                 in_channels: int, out_channels: int | None = None):
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        out_channels = in_channels if out_channels is None else out_channels
        # Primus has no deep supervision: nnU-Net's builder must not pass the argument
        network = get_network_from_plans(arch_class_name, arch_kwargs, arch_kwargs_req_import, in_channels,
                                         out_channels, allow_init=True, deep_supervision=None)
        super().__init__(network, spatial_dims=len(arch_kwargs["input_shape"]), in_channels=in_channels,
                         embed_dim=int(arch_kwargs["embed_dim"]), out_channels=out_channels,
                         constructor={"arch_class_name": arch_class_name, "arch_kwargs": copy.deepcopy(arch_kwargs),
                                      "arch_kwargs_req_import": list(arch_kwargs_req_import),
                                      "in_channels": in_channels, "out_channels": out_channels})
        self.patch_embed_size = [int(p) for p in arch_kwargs["patch_embed_size"]]
        self.input_shape = [int(s) for s in arch_kwargs["input_shape"]]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One feature map: the transformer's tokens on the patch grid, (B, embed_dim, *input_shape / patch)."""
        tokens = self.network.down_projection(x)
        b, c, *grid = tokens.shape
        out, _ = self.network.eva(tokens.flatten(2).transpose(1, 2))
        return [out.transpose(1, 2).reshape(b, c, *grid)]

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.network.up_projection(features[-1])

    def encoder_stages(self) -> list[nn.Module]:
        return [self.network.down_projection]

    def key_prefixes(self) -> dict[str, Any]:
        net = self.network
        return {"stem": net.key_to_stem, "encoder": net.key_to_encoder, "decoder": "up_projection",
                "in_proj": list(net.keys_to_in_proj), "lpe": net.key_to_lpe}

    def divisor(self) -> list[int]:
        """Primus computes exactly its ``input_shape`` (one learned position embedding per token)."""
        return list(self.input_shape)


@register_backbone("nnunet_primus_tiny")
def nnunet_primus_tiny(in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3,
                       input_shape: tuple[int, ...] = (32, 32, 32)) -> NnUNetPrimusBackbone:
    """Smallest useful Primus (width 48, 2 blocks, 2 heads, 8^3 patches): for tests and smoke runs."""
    kw = primus_kwargs(48, 2, 2, list(input_shape)[:spatial_dims])
    return NnUNetPrimusBackbone(PRIMUS_CLASS, kw, [], in_channels, out_channels)


@register_backbone("nnunet_primus_m")
def nnunet_primus_m(in_channels: int = 1, out_channels: int | None = None, spatial_dims: int = 3,
                    input_shape: tuple[int, ...] = (160, 160, 160)) -> NnUNetPrimusBackbone:
    """nnssl's Primus-M (width 864, 16 blocks, 12 heads, 8^3 patches; Wald et al. 2025), at OpenMind's 160^3."""
    m = dict(PRIMUS_M)
    kw = primus_kwargs(m.pop("embed_dim"), m.pop("eva_depth"), m.pop("eva_numheads"), list(input_shape)[:spatial_dims],
                       **m)
    return NnUNetPrimusBackbone(PRIMUS_CLASS, kw, [], in_channels, out_channels)


for _name in ("nnunet_primus_tiny", "nnunet_primus_m"):
    # a ViT: tokens attend globally, so SparK-style re-masking does not apply; 3D only (dynamic_network_architectures)
    declare_capabilities(_name, family=NnUNetPrimusBackbone.family, dense=True, dims=[3], sparse_masking=False,
                         input="exactly input_shape (a multiple of the 8^3 patch embedding)")

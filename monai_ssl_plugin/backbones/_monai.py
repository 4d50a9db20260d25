"""Plumbing shared by the adapters over ``monai.networks.nets``: constructor kwargs, input checks.

Every MONAI adapter takes exactly the keyword arguments of the MONAI network class it wraps, so the
recorded ``constructor`` rebuilds either side: ``SwinUNETR(**c)`` for a downstream user,
``MonaiSwinUNETRBackbone(**c)`` for the plugin (see :mod:`monai_ssl_plugin.backbones.families`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import monai

from monai_ssl_plugin.backbones.compatibility import declare_capabilities
from monai_ssl_plugin.backbones.registry import register_backbone
from monai_ssl_plugin.errors import PluginError


def register_monai(name: str, **capabilities: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``register_backbone(name)`` plus the backbone's row of the compatibility matrix."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        declare_capabilities(name, **capabilities)
        return register_backbone(name)(fn)

    return deco


def json_kwargs(kwargs: dict[str, Any], network: str) -> dict[str, Any]:
    """``kwargs`` after a JSON round trip (tuples become lists), so the record rebuilds the same network.

    The network is built from the round-tripped values, never from the originals: what was trained
    is exactly what the record describes.
    """
    try:
        return json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as e:
        raise PluginError(f"{network} arguments must be plain values to be recorded in the checkpoint ({e}).",
                          "Pass names and numbers (e.g. norm='batch', act=['relu', {'inplace': True}]), "
                          "not classes.") from None


def build_network(cls: type, ctor: dict[str, Any]) -> Any:
    """``cls(**ctor)``, with a one-line error naming the argument this MONAI version does not take."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    unknown = sorted(set(ctor) - accepted)
    if unknown:
        hint = (" (SwinUNETR no longer takes img_size: any multiple of 32 works)"
                if cls.__name__ == "SwinUNETR" and "img_size" in unknown else "")
        raise PluginError(f"{cls.__name__} in MONAI {monai.__version__} takes no argument {', '.join(unknown)}{hint}.",
                          f"Remove it; {cls.__name__} accepts: {', '.join(sorted(accepted))}.")
    return cls(**ctor)


def build_unet_like(cls: type, spatial_dims: int, in_channels: int, out_channels: int | None,
                    kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any], int]:
    """The shared opening of the encoder-decoder adapters (UNet, DynUNet, SegResNet): check the dims, default
    ``out_channels`` to ``in_channels``, round-trip the constructor through JSON and build the network.

    Returns (network, constructor, out_channels)."""
    check_spatial_dims(spatial_dims, cls.__name__)
    out_channels = in_channels if out_channels is None else out_channels
    ctor = json_kwargs({"spatial_dims": spatial_dims, "in_channels": in_channels, "out_channels": out_channels,
                        **kwargs}, cls.__name__)
    return build_network(cls, ctor), ctor, out_channels


def check_spatial_dims(spatial_dims: int, network: str, supported: Sequence[int] = (2, 3)) -> None:
    if spatial_dims not in supported:
        raise PluginError(f"{network} backbones support spatial_dims {list(supported)}, not {spatial_dims}.",
                          f"Pass spatial_dims={supported[-1]} for volumes or {supported[0]} for slices / radiographs.")


def check_divisible(shape: Sequence[int], divisor: int, network: str) -> None:
    """Raise the one-line error for an input the network cannot tile (instead of a shape error deep inside)."""
    bad = [int(s) for s in shape if s % divisor]
    if bad:
        raise PluginError(f"{network} needs every spatial size divisible by {divisor}; the input is {list(shape)}.",
                          f"Use a patch size that is a multiple of {divisor} per axis.")


def present(keys: Iterable[str], candidates: Sequence[str]) -> list[str]:
    """The candidates that are keys of the state dict (optional layers exist only for some settings)."""
    have = set(keys)
    return [k for k in candidates if k in have]

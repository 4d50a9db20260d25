"""A registry that makes every backbone addressable by name (timm-style): ``create_backbone("nnunet_plain_small")``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monai_ssl_plugin.errors import PluginError

_BACKBONES: dict[str, Callable[..., Any]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a factory returning a :class:`~monai_ssl_plugin.backbones.base.BackboneAdapter`."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        _BACKBONES[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def create_backbone(name: str, **kwargs: Any):
    """Build a registered backbone adapter by name; unknown names list the valid ones."""
    if name not in _BACKBONES:
        raise PluginError(f"Unknown backbone {name!r}.", f"Choose one of: {', '.join(list_backbones())}.")
    return _BACKBONES[name](**kwargs)

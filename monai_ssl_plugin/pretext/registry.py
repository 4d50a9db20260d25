"""Pretext methods addressable by name, with the paradigm the review files them under."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monai_ssl_plugin.errors import PluginError

PARADIGMS = ("contrastive", "non_contrastive", "predictive", "generative", "hybrid")
_PRETEXTS: dict[str, tuple[str, Callable[..., Any]]] = {}


def register_pretext(name: str, paradigm: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if paradigm not in PARADIGMS:
        raise ValueError(f"paradigm must be one of {PARADIGMS}")

    def deco(cls: Callable[..., Any]) -> Callable[..., Any]:
        _PRETEXTS[name] = (paradigm, cls)
        cls.pretext_name, cls.paradigm = name, paradigm
        return cls

    return deco


def list_pretexts() -> dict[str, str]:
    """``{name: paradigm}`` of every registered pretext."""
    return {k: v[0] for k, v in sorted(_PRETEXTS.items())}


def create_pretext(name: str, **kwargs: Any):
    if name not in _PRETEXTS:
        raise PluginError(f"Unknown pretext {name!r}.", f"Choose one of: {', '.join(sorted(_PRETEXTS))}.")
    return _PRETEXTS[name][1](**kwargs)

"""Pretext tasks: heads + loss over a backbone adapter, grouped by the review's four paradigms.

Every pretext is an ``nn.Module`` whose ``forward(batch)`` returns a dict of scalar losses with
the total under ``"loss"``; the engine only ever calls that. Methods are addressable by name
through :func:`create_pretext`.
"""

from monai_ssl_plugin.pretext.registry import create_pretext, list_pretexts, register_pretext
from monai_ssl_plugin.pretext.generative import mae  # noqa: F401  (registers)
from monai_ssl_plugin.pretext import contrastive, non_contrastive  # noqa: F401
from monai_ssl_plugin.pretext import predictive, hybrid  # noqa: F401

__all__ = ["create_pretext", "list_pretexts", "register_pretext"]

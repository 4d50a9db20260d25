"""Speed switches of the pretraining bundles: ``channels_last_3d`` memory format and opt-in ``torch.compile``.

Both act on the backbone network in place and keep its parameter names, so checkpoints, exports
and the key remapper see exactly the same state dict with and without them:

* ``channels_last_3d(network, True)`` stores every 5-D parameter (3-D convolution weights) as
  N, D, H, W, C. Convolutions then run channels-last kernels and propagate the format to their
  outputs (cuDNN and oneDNN pick the channels-last kernel when the weight is channels-last), so
  the batch needs no conversion.
* ``compile_network(network, True)`` calls ``nn.Module.compile`` (the module's own forward is
  compiled; no ``_orig_mod.`` wrapper, no renamed keys). Compilation happens at the first step and
  costs seconds to minutes; worth it only for long runs. Opt-in, off by default.

Mixed precision is the trainer's ``amp`` switch and activation checkpointing lives in
:mod:`.memory`; measured figures for all switches are in docs/performance.md.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.engine.config_values import as_bool
from monai_ssl_plugin.errors import PluginError

logger = logging.getLogger(__name__)

__all__ = ["channels_last_3d", "compile_network"]


def channels_last_3d(network: nn.Module, enabled: Any = True) -> nn.Module:
    """``network`` with its 5-D parameters in ``torch.channels_last_3d`` when ``enabled``.

    Args:
        network: any module (a backbone adapter or a plain network); modified in place.
        enabled: bool or a CLI string ("true"/"false").

    Returns:
        ``network`` (same object). Parameters keep their names, values and shapes; only strides change.
    """
    if not as_bool(enabled):
        return network
    n = 0
    for param in network.parameters():
        if param.dim() == 5:
            # in place on .data: the Parameter objects (and any optimiser built later) stay the same
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
            n += 1
    if n == 0:
        raise PluginError(
            "channels_last_3d was switched on, but the network has no 5-D (3-D convolution) parameters.",
            "Leave channels_last_3d false for this backbone (it helps 3-D CNNs only).",
        )
    network._ssl_memory_format = torch.channels_last_3d
    logger.info("channels_last_3d on %d 3-D convolution weight(s).", n)
    return network


def compile_network(network: nn.Module, enabled: Any = False, mode: str | None = None, backend: str = "inductor") -> nn.Module:
    """Compile the compute-carrying modules of a backbone with ``torch.compile``, in place, when
    ``enabled`` (opt-in).

    Pretexts call a backbone through ``encode``/``decode``/``forward`` and hooks, so the compiled
    units are the modules every path goes through: each of ``encoder_stages()`` and the network's
    ``decoder`` when it has one (``nn.Module.compile``: same module objects, same state-dict keys);
    a module without encoder stages is compiled whole.

    Args:
        network: a backbone adapter (or any module); modified in place.
        enabled: bool or CLI string.
        mode: ``torch.compile`` mode (``None``, "default", "reduce-overhead", "max-autotune").
        backend: ``torch.compile`` backend ("inductor"; "aot_eager" compiles without a C++ toolchain).

    Returns:
        ``network`` (same object; state-dict keys unchanged).
    """
    if not as_bool(enabled):
        return network
    targets: list[nn.Module] = list(network.encoder_stages()) if hasattr(network, "encoder_stages") else []
    decoder = getattr(getattr(network, "network", network), "decoder", None)
    if isinstance(decoder, nn.Module):
        targets.append(decoder)
    for module in targets or [network]:
        module.compile(mode=mode, backend=backend)
    logger.info("torch.compile (%s, mode %s) on %d module(s): the first step compiles.", backend, mode or "default",
                len(targets) or 1)
    return network

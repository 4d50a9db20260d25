"""Fine-tuning controls for the pretrained part: freeze for N epochs, lower LR, linear probe.

- :class:`Freezer` turns ``requires_grad`` off for the target's parameters and (by default) keeps its
  normalisation layers on their running statistics, so a frozen encoder is really fixed even though
  trainers call ``network.train()`` every iteration. ``unfreeze()`` restores exactly what it changed.
- :func:`param_groups` splits a network's parameters into ``pretrained`` (lower LR) and ``new`` (heads,
  decoder: the optimizer's LR) groups. Use it as an optimizer's ``params``; in a bundle the overlay
  writes ``optimizer#params`` with it, so LR schedulers see both groups from the start.
- :func:`linear_probe`: a frozen encoder for the whole run (only the new head trains).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from monai_ssl_plugin.distributed import unwrap
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.monai_bundles.targets import Target, resolve_target


def _target(network: nn.Module, target: str | Target) -> Target:
    return target if isinstance(target, Target) else resolve_target(network, target)


def pretrained_parameters(network: nn.Module, target: str | Target = "auto") -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the target part, names as in ``unwrap(network).named_parameters()``."""
    tgt = _target(network, target)
    return [(n, p) for n, p in unwrap(network).named_parameters() if tgt.includes(n)]


def param_groups(network: nn.Module, target: str | Target = "auto", lr: float | None = None,
                 pretrained_lr_mult: float = 0.1, pretrained_lr: float | None = None) -> list[dict[str, Any]]:
    """Two optimizer parameter groups: ``pretrained`` at ``lr * pretrained_lr_mult`` (or ``pretrained_lr``)
    and ``new`` at the optimizer's own LR (the group carries no ``lr``, so the optimizer's ``lr`` applies).

    Example: ``torch.optim.AdamW(param_groups(net, lr=1e-4, pretrained_lr_mult=0.1), lr=1e-4)``.
    """
    if pretrained_lr is None:
        if lr is None:
            raise PluginError("param_groups needs the optimizer's lr to scale the pretrained group.",
                              "Pass lr=<the optimizer's lr> (in a bundle: lr: '@optimizer#lr') or pretrained_lr=.")
        pretrained_lr = float(lr) * float(pretrained_lr_mult)
    pre = {id(p) for _, p in pretrained_parameters(network, target)}
    if not pre:
        raise PluginError(f"The target {_target(network, target).name} of {type(unwrap(network)).__name__} has no "
                          "parameters.", "Check target=.")
    params = list(unwrap(network).parameters())
    groups = [{"params": [p for p in params if id(p) in pre], "lr": pretrained_lr, "name": "pretrained"},
              {"params": [p for p in params if id(p) not in pre], "name": "new"}]
    return [g for g in groups if g["params"]]


def _norm_modules(network: nn.Module, tgt: Target) -> list[nn.Module]:
    out = []
    for name, m in unwrap(network).named_modules():
        if isinstance(m, (_BatchNorm, _InstanceNorm)) and getattr(m, "track_running_stats", False):
            if tgt.includes(name + "."):
                out.append(m)
    return out


def _keep_eval(module: nn.Module, args: Any) -> None:
    module.train(False)  # forward pre-hook: normalise with running statistics even in train()


class Freezer:
    """Freeze / unfreeze the pretrained part of a network.

    ``freeze_norm_stats``: while frozen, batch/instance norms with running statistics in the target use
    (and keep) those statistics instead of updating them from each batch.
    """

    def __init__(self, network: nn.Module, target: str | Target = "auto", freeze_norm_stats: bool = True):
        self.network = network
        self.target = _target(network, target)
        self.freeze_norm_stats = freeze_norm_stats
        self._frozen: list[nn.Parameter] = []
        self._hooks: list[Any] = []

    @property
    def frozen(self) -> bool:
        return bool(self._frozen)

    def freeze(self) -> int:
        """Freeze; returns the number of parameters frozen (0 when already frozen)."""
        if self._frozen:
            return 0
        self._frozen = [p for _, p in pretrained_parameters(self.network, self.target) if p.requires_grad]
        for p in self._frozen:
            p.requires_grad_(False)
            p.grad = None
        if self.freeze_norm_stats:
            self._hooks = [m.register_forward_pre_hook(_keep_eval) for m in _norm_modules(self.network, self.target)]
        return sum(p.numel() for p in self._frozen)

    def unfreeze(self) -> int:
        n = sum(p.numel() for p in self._frozen)
        for p in self._frozen:
            p.requires_grad_(True)
        for h in self._hooks:
            h.remove()
        self._frozen, self._hooks = [], []
        unwrap(self.network).train(self.network.training)
        return n


def linear_probe(network: nn.Module, target: str | Target = "auto") -> Freezer:
    """Freeze the pretrained part (and its norm statistics) for good: only the new head trains."""
    f = Freezer(network, target, freeze_norm_stats=True)
    f.freeze()
    return f

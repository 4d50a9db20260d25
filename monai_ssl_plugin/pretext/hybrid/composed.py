"""User-composed hybrids: several registered pretexts over ONE shared backbone, losses summed with weights.

The review behind the project finds hybrids the most balanced across downstream tasks, at a cost in
complexity and compute (e.g. masked modelling + contrastive: dense and global features at once).
Published examples of such sums: Swin UNETR pretraining (Tang et al., CVPR 2022; rotation +
contrastive + in-painting, 1/1/1; also :mod:`.swin_unetr`), TransVW (Haghighi et al., IEEE TMI 2021;
0.01 x visual-word classification + 1 x restoration), MONAI's ViTAutoEnc tutorial (L1 + contrastive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.backbones.base import BackboneAdapter
from monai_ssl_plugin.pretext.registry import create_pretext, register_pretext

__all__ = ["ComposedPretext", "parse_terms"]

TermSpec = Mapping[str, float] | Sequence[Mapping[str, Any]]


def parse_terms(terms: TermSpec) -> list[dict[str, Any]]:
    """Normalise a term list: ``{"mae": 1.0, "simclr": 0.5}`` or
    ``[{"name": "mae", "weight": 1.0, "mask_ratio": 0.6}, {"name": "simclr", "weight": 0.5}]``.

    Returns ``[{"key", "name", "weight", "kwargs"}]``; ``key`` is the name, suffixed ``_2``, ``_3``
    ... when a pretext appears more than once (the key names the term in the loss dict).
    """
    if isinstance(terms, Mapping):
        items = [{"name": str(k), "weight": v} for k, v in terms.items()]
    else:
        items = [dict(t) for t in terms]
    if not items:
        raise ValueError("a composed pretext needs at least one term")
    out, seen = [], {}
    for item in items:
        if "name" not in item:
            raise ValueError(f"every term needs a 'name', got {item}")
        name = str(item.pop("name"))
        weight = float(item.pop("weight", 1.0))
        if weight < 0:
            raise ValueError(f"term {name!r} has a negative weight {weight}")
        kwargs = dict(item.pop("kwargs", {}) or {})
        kwargs.update(item)
        seen[name] = seen.get(name, 0) + 1
        key = name if seen[name] == 1 else f"{name}_{seen[name]}"
        out.append({"key": key, "name": name, "weight": weight, "kwargs": kwargs})
    return out


@register_pretext("composed", paradigm="hybrid")
class ComposedPretext(nn.Module):
    """Weighted sum of pretext terms that all train the same backbone adapter.

    Each term is built with ``create_pretext(name, backbone=backbone, **kwargs)``: every term holds
    the *same* adapter object, so they update one set of parameters (the optimiser sees each
    parameter once: ``parameters()`` de-duplicates). Heads, decoders and teachers stay per term.

    Args:
        backbone: the shared adapter.
        terms: ``{name: weight}`` or a list of ``{"name", "weight", **pretext kwargs}`` (see
            :func:`parse_terms`), e.g. ``{"mae": 1.0, "simclr": 0.5}``.

    ``forward(batch)`` runs every term on the batch and returns ``{"loss": sum_i w_i * loss_i}`` plus,
    for each term key ``k``, ``k`` (its unweighted loss) and ``k/<entry>`` for the term's other
    entries. ``after_step(iteration)`` calls every term's ``after_step`` (EMA teachers, queues);
    ``last_embeddings`` / ``last_teacher_probs`` pass on the first term's (collapse monitoring).
    """

    needs = ("image",)

    def __init__(self, backbone: BackboneAdapter, terms: TermSpec):
        super().__init__()
        self.backbone = backbone
        specs = parse_terms(terms)
        self.terms = nn.ModuleDict()
        self.term_weights: dict[str, float] = {}
        for spec in specs:
            if spec["name"] == "composed":
                raise ValueError("a composed pretext cannot contain another composed pretext")
            term = create_pretext(spec["name"], backbone=backbone, **spec["kwargs"])
            if getattr(term, "backbone", backbone) is not backbone:
                raise ValueError(f"term {spec['key']!r} did not use the shared backbone")
            self.terms[spec["key"]] = term
            self.term_weights[spec["key"]] = spec["weight"]

    @property
    def trains_decoder(self) -> bool:
        return any(getattr(t, "trains_decoder", self.backbone.has_decoder) for t in self.terms.values())

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, term in self.terms.items():
            out[key] = {"pretext": getattr(term, "pretext_name", type(term).__name__),
                        "paradigm": getattr(term, "paradigm", None), "weight": self.term_weights[key],
                        "settings": term.settings() if hasattr(term, "settings") else {}}
        return {"terms": out}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        total: torch.Tensor | None = None
        report: dict[str, torch.Tensor] = {}
        for key, term in self.terms.items():
            losses = term(batch)
            weighted = self.term_weights[key] * losses["loss"]
            total = weighted if total is None else total + weighted
            report[key] = losses["loss"].detach()
            for name, value in losses.items():
                if name != "loss":
                    report[f"{key}/{name}"] = value.detach() if isinstance(value, torch.Tensor) else value
        assert total is not None
        return {"loss": total, **report}

    @property
    def last_embeddings(self) -> torch.Tensor | None:
        """The first term's ``last_embeddings`` (e.g. SimCLR's projections), for the collapse monitor."""
        return self._first("last_embeddings")

    @property
    def last_teacher_probs(self) -> torch.Tensor | None:
        """The first term's ``last_teacher_probs`` (DINO), for the collapse monitor."""
        return self._first("last_teacher_probs")

    def _first(self, name: str) -> torch.Tensor | None:
        for term in self.terms.values():
            value = getattr(term, name, None)
            if isinstance(value, torch.Tensor):
                return value
        return None

    def after_step(self, iteration: int) -> None:
        for term in self.terms.values():
            if hasattr(term, "after_step"):
                term.after_step(iteration)

"""The task-aligned recommender: modality x task x label budget -> ranked pretexts, with reasons.

It applies the rules in ``rules.yaml`` (the review's findings, Wimalasiri 2026, arXiv:2605.23995,
encoded as data with their sources) and never invents a figure: budgets are sized by documented
heuristics, and time/memory come only from the benchmark file ``measured.yaml`` when it exists.
Light on purpose (PyYAML only), so ``monai-ssl recommend`` answers without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from monai_ssl_plugin.errors import PluginError

__all__ = [
    "DEFAULT_MEASURED_PATH",
    "DEFAULT_RULES_PATH",
    "Estimate",
    "Evidence",
    "Exclusion",
    "GuideInputError",
    "PublishedSetting",
    "Query",
    "RankedPretext",
    "Recommendation",
    "ScoreTerm",
    "Settings",
    "format_duration",
    "load_measured",
    "load_rules",
    "recommend",
    "registry_backbone",
    "valid_choices",
]

DEFAULT_RULES_PATH = Path(__file__).with_name("rules.yaml")
# Written by the benchmarks, not by hand; absent until something has been measured.
DEFAULT_MEASURED_PATH = Path(__file__).with_name("measured.yaml")
NOT_MEASURED = "not measured yet"
GAIN_LEVELS = ("small", "moderate", "large")
# rules.yaml names some backbones by family ("vit (MONAI ViT; ...)"); these are their registry names
_BACKBONE_ALIASES = {"vit": "monai_vit", "swin_unetr": "monai_swinunetr", "swinunetr": "monai_swinunetr"}


class GuideInputError(PluginError, ValueError):
    """An invalid recommender input: a ``ValueError`` whose message names the valid choices."""


# --------------------------------------------------------------------------------------------------
# Result types (plain dataclasses, JSON round-trip through to_dict / from_dict)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One cited source: its id in rules.yaml, a short label, the citation and what it supports."""

    source: str
    short: str
    citation: str
    finding: str
    seeds: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evidence:
        return cls(d["source"], d["short"], d["citation"], d["finding"], tuple(d.get("seeds", ())))


@dataclass(frozen=True)
class ScoreTerm:
    """One additive term of a score, so the ranking can be audited."""

    name: str
    value: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScoreTerm:
        return cls(d["name"], float(d["value"]))


@dataclass(frozen=True)
class Settings:
    """Pretraining settings sized to the budget; ``basis`` says where each value comes from."""

    patch: tuple[int, ...]
    batch: int
    steps: int
    basis: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Settings:
        return cls(tuple(int(v) for v in d["patch"]), int(d["batch"]), int(d["steps"]), d["basis"])


@dataclass(frozen=True)
class Estimate:
    """Expected time and memory, only ever copied from a measurement (``status`` says which kind).

    ``status``: ``"measured"`` (this device, patch and batch were benchmarked), ``"measured_other"``
    (the closest benchmarked setting, reported as such) or ``"not_measured"``.
    """

    status: str
    text: str
    device: str | None = None
    patch: tuple[int, ...] | None = None
    batch: int | None = None
    volumes_per_s: float | None = None
    peak_mem_mb: float | None = None
    hours_for_steps: float | None = None
    backbone: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Estimate:
        patch = d.get("patch")
        return cls(
            d["status"], d["text"], d.get("device"), None if patch is None else tuple(int(v) for v in patch),
            d.get("batch"), d.get("volumes_per_s"), d.get("peak_mem_mb"), d.get("hours_for_steps"),
            d.get("backbone"),
        )


@dataclass(frozen=True)
class PublishedSetting:
    """A setting from a paper or reference implementation, with its source id."""

    name: str
    value: str
    source: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PublishedSetting:
        return cls(d["name"], d["value"], d["source"])


@dataclass(frozen=True)
class RankedPretext:
    """One recommended pretext bundle.

    ``normalization`` is the intensity scheme the pretraining data source applies to the query's
    modality (nnU-Net's name), the one the checkpoint will record and the consumers will compare.
    """

    rank: int
    bundle: str
    paradigm: str
    family: str
    score: float
    reasons: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    normalization: str
    backbone: str
    settings: Settings
    estimate: Estimate
    score_terms: tuple[ScoreTerm, ...] = ()
    published: tuple[PublishedSetting, ...] = ()
    notes: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RankedPretext:
        return cls(
            rank=int(d["rank"]), bundle=d["bundle"], paradigm=d["paradigm"], family=d["family"],
            score=float(d["score"]), reasons=tuple(d["reasons"]),
            evidence=tuple(Evidence.from_dict(e) for e in d["evidence"]), normalization=d["normalization"],
            backbone=d["backbone"], settings=Settings.from_dict(d["settings"]),
            estimate=Estimate.from_dict(d["estimate"]),
            score_terms=tuple(ScoreTerm.from_dict(t) for t in d.get("score_terms", ())),
            published=tuple(PublishedSetting.from_dict(p) for p in d.get("published", ())),
            notes=tuple(d.get("notes", ())),
        )


@dataclass(frozen=True)
class Exclusion:
    """A bundle left out of the ranking, and why (e.g. it is 3D only and the data are 2D)."""

    bundle: str
    reason: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Exclusion:
        return cls(d["bundle"], d["reason"])


@dataclass(frozen=True)
class Query:
    """The normalised inputs the recommendation answers."""

    modality: str
    task: str
    n_labelled: int
    n_unlabelled: int
    dims: int
    traits: tuple[str, ...]
    device: str | None
    top_k: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Query:
        return cls(d["modality"], d["task"], int(d["n_labelled"]), int(d["n_unlabelled"]), int(d["dims"]),
                   tuple(d["traits"]), d.get("device"), int(d["top_k"]))


@dataclass(frozen=True)
class Recommendation:
    """Ranked pretexts for one query, the expected SSL gain, and query-level notes."""

    query: Query
    label_fraction: float
    expected_gain: str
    gain_reason: str
    items: tuple[RankedPretext, ...]
    gain_evidence: tuple[Evidence, ...] = ()
    notes: tuple[str, ...] = ()
    excluded: tuple[Exclusion, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recommendation:
        return cls(
            query=Query.from_dict(d["query"]), label_fraction=float(d["label_fraction"]),
            expected_gain=d["expected_gain"], gain_reason=d["gain_reason"],
            items=tuple(RankedPretext.from_dict(i) for i in d["items"]),
            gain_evidence=tuple(Evidence.from_dict(e) for e in d.get("gain_evidence", ())),
            notes=tuple(d.get("notes", ())), excluded=tuple(Exclusion.from_dict(e) for e in d.get("excluded", ())),
        )


# --------------------------------------------------------------------------------------------------
# Rules and measurements
# --------------------------------------------------------------------------------------------------


def load_rules(path: str | Path | None = None) -> dict[str, Any]:
    """The parsed rules file (cached per path; treat the result as read-only)."""
    return _load_rules_cached(str(Path(path or DEFAULT_RULES_PATH).resolve()))


@lru_cache(maxsize=4)
def _load_rules_cached(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_measured(path: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Benchmark figures per bundle, ``{}`` when the file does not exist (nothing measured yet).

    Accepted layout (``methods:`` may be omitted; a bundle may be keyed by its short name, e.g.
    ``mae`` for ``mae_ssl_pretraining``)::

        methods:
          mae_ssl_pretraining:
            - {device: cpu, patch: [64, 64, 64], batch: 2, volumes_per_s: 1.8, peak_mem_mb: 950}
    """
    p = Path(path or DEFAULT_MEASURED_PATH)
    if not p.is_file():
        return {}
    with open(p, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    methods = raw.get("methods", raw) if isinstance(raw, dict) else {}
    out: dict[str, list[dict[str, Any]]] = {}
    for name, entries in (methods or {}).items():
        if not isinstance(entries, list):
            continue
        bundle = name if str(name).endswith("_ssl_pretraining") else f"{name}_ssl_pretraining"
        good = [e for e in entries if isinstance(e, dict) and {"device", "patch", "batch", "volumes_per_s", "peak_mem_mb"} <= e.keys()]
        out.setdefault(bundle, []).extend(good)
    return out


def valid_choices(rules: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """The accepted modalities, tasks, traits and bundle names."""
    r = rules or load_rules()
    return {"modality": list(r["modalities"]), "task": list(r["tasks"]), "traits": list(r["traits"]),
            "bundles": list(r["bundles"])}


# --------------------------------------------------------------------------------------------------
# The recommender
# --------------------------------------------------------------------------------------------------


def recommend(
    modality: str,
    task: str,
    n_labelled: int,
    n_unlabelled: int,
    dims: int = 3,
    traits: Iterable[str] | str = (),
    device: str | None = None,
    top_k: int = 5,
    *,
    rules_path: str | Path | None = None,
    measured_path: str | Path | None = None,
) -> Recommendation:
    """Rank the pretext bundles for a modality, downstream task and data budget.

    Args:
        modality: ``ct``, ``mri``, ``pet``, ``ultrasound`` or ``xray`` (aliases such as ``mr``,
            ``us``, ``cxr`` accepted).
        task: ``classification``, ``segmentation``, ``detection``, ``regression`` or ``reconstruction``.
        n_labelled: labelled cases for fine-tuning.
        n_unlabelled: additional unlabelled cases for pretraining (pretraining uses both).
        dims: spatial dims of the data, 2 or 3.
        traits: any of ``small_lesions``, ``multi_sequence``, ``low_compute`` (a list or a
            comma-separated string).
        device: the device to look up in ``measured.yaml`` (``"cpu"``, ``"cuda"``, ...); ``None``
            takes any measured device.
        top_k: how many bundles to return.
        rules_path / measured_path: override the packaged rules / benchmark files.

    Raises:
        GuideInputError: a ``ValueError`` naming the valid choices, for any unknown or invalid input.
    """
    rules = load_rules(rules_path)
    q = _validate(rules, modality, task, n_labelled, n_unlabelled, dims, traits, device, top_k)
    measured = load_measured(measured_path)
    sources = rules["sources"]
    n_pool = q.n_labelled + q.n_unlabelled

    ranked: list[tuple[float, str, dict[str, Any]]] = []
    excluded: list[Exclusion] = []
    for name, b in rules["bundles"].items():
        if q.dims not in b["dims"]:
            excluded.append(Exclusion(name, f"supports {'/'.join(f'{d}D' for d in b['dims'])} only; the data are {q.dims}D"))
            continue
        item = _score_bundle(rules, name, b, q, n_pool)
        ranked.append((item["score"], name, item))
    ranked.sort(key=lambda t: (-t[0], t[1]))  # score, then name: a stable, reproducible order

    items = []
    for rank, (_, name, it) in enumerate(ranked[: q.top_k], start=1):
        b = rules["bundles"][name]
        settings = _size_settings(rules, b, q, n_pool)
        backbone = b["low_compute_backbone"] if "low_compute" in q.traits else b["default_backbone"]
        items.append(RankedPretext(
            rank=rank, bundle=name, paradigm=b["paradigm"], family=b["family"], score=it["score"],
            reasons=tuple(it["reasons"]), evidence=_evidence(sources, it["evidence"]),
            normalization=rules["modalities"][q.modality]["normalization"],
            backbone=backbone,
            settings=settings, estimate=_estimate(measured.get(name, []), settings, q.device, backbone),
            score_terms=tuple(ScoreTerm(n, round(v, 4)) for n, v in it["terms"]),
            published=tuple(PublishedSetting(p["name"], str(p["value"]), p["source"]) for p in b.get("published", [])),
            notes=tuple(it["notes"]),
        ))

    fraction = q.n_labelled / n_pool
    gain, gain_reason = _expected_gain(rules, q, fraction)
    return Recommendation(
        query=q, label_fraction=round(fraction, 6), expected_gain=gain, gain_reason=gain_reason,
        items=tuple(items), gain_evidence=_evidence(sources, rules["expected_gain"]["evidence"]),
        notes=tuple(_query_notes(rules, q)), excluded=tuple(excluded),
    )


def _validate(rules: Mapping[str, Any], modality: Any, task: Any, n_labelled: Any, n_unlabelled: Any,
              dims: Any, traits: Any, device: Any, top_k: Any) -> Query:
    mod = _resolve("modality", modality, rules["modalities"])
    tsk = _resolve("task", task, rules["tasks"])
    if isinstance(traits, str):
        traits = [t for t in traits.split(",") if t.strip()]
    if traits is None:
        traits = []
    resolved: list[str] = []
    for t in traits:
        name = _resolve("trait", t, rules["traits"])
        if name not in resolved:
            resolved.append(name)
    for label, n in (("n_labelled", n_labelled), ("n_unlabelled", n_unlabelled)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise GuideInputError(f"{label} must be a non-negative integer, got {n!r}.")
    if n_labelled + n_unlabelled == 0:
        raise GuideInputError("n_labelled + n_unlabelled is 0: there is nothing to pretrain on.",
                              "Give the number of labelled and unlabelled cases you have.")
    if dims not in (2, 3) or isinstance(dims, bool):
        raise GuideInputError(f"dims must be 2 or 3, got {dims!r}.")
    mod_dims = rules["modalities"][mod]["dims"]
    if dims not in mod_dims:
        raise GuideInputError(f"Modality {mod!r} supports dims {mod_dims}, got dims={dims}.",
                              f"Pass dims={mod_dims[0]}" + (" (X-ray images are 2D projections)." if mod == "xray" else "."))
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise GuideInputError(f"top_k must be a positive integer, got {top_k!r}.")
    if device is not None and not isinstance(device, str):
        raise GuideInputError(f"device must be a string such as 'cpu' or 'cuda', or None, got {device!r}.")
    return Query(mod, tsk, n_labelled, n_unlabelled, dims, tuple(resolved), device, top_k)


def _norm(s: str) -> str:
    return s.strip().lower().replace("-", "_").replace(" ", "_")


def _resolve(kind: str, value: Any, table: Mapping[str, Any]) -> str:
    """Canonical name for ``value`` (a name or alias in ``table``), or one error listing the choices."""
    if isinstance(value, str):
        v = _norm(value)
        for name, spec in table.items():
            if v == name or v in (_norm(a) for a in (spec or {}).get("aliases", [])):
                return name
    raise GuideInputError(f"Unknown {kind} {value!r}.", f"Choose one of: {', '.join(table)}.")


@dataclass
class _Scoring:
    """What one bundle's score is made of, filled term by term; each term says why in ``reasons``."""

    terms: list[tuple[str, float]]
    reasons: list[str]
    evidence: list[str]
    notes: list[str]

    def add(self, term: str, value: float, reason: str, *evidence: str) -> None:
        self.terms.append((term, value))
        self.reasons.append(reason)
        self.evidence.extend(evidence)


def _score_bundle(rules: Mapping[str, Any], name: str, b: Mapping[str, Any], q: Query, n_pool: int) -> dict[str, Any]:
    """Score = task affinity + modality adjustment + trait terms - data shortfall; with reasons."""
    paradigm = rules["paradigms"][b["paradigm"]]
    sc = _Scoring(terms=[(f"task affinity ({q.task})", float(b["affinity"][q.task]))],
                  reasons=[paradigm["task_reasons"][q.task]],
                  evidence=list(paradigm["evidence"][q.task]) + list(b.get("affinity_evidence", [])),
                  notes=list(b.get("notes", [])))
    _modality_term(sc, rules, b, q)
    if "small_lesions" in q.traits:
        _small_lesion_terms(sc, rules["traits"]["small_lesions"], b)
    if "low_compute" in q.traits:
        _low_compute_terms(sc, rules["traits"]["low_compute"], b)
    _data_terms(sc, rules, b, q, n_pool)
    score = round(sum(v for _, v in sc.terms), 3)
    return {"score": score, "terms": sc.terms, "reasons": sc.reasons, "evidence": sc.evidence, "notes": sc.notes}


def _modality_term(sc: _Scoring, rules: Mapping[str, Any], b: Mapping[str, Any], q: Query) -> None:
    """The bundle's adjustment for the query's modality, capped, with the source its authors give."""
    mod = (b.get("modality") or {}).get(q.modality) or {}
    cap = rules["scoring"]["modality_adjust_max"]
    adjust = max(-cap, min(cap, float(mod.get("adjust", 0.0))))
    if adjust:
        src = mod.get("basis")
        sc.add(f"modality ({q.modality})", adjust,
               f"Adjusted {adjust:+.2f} for {q.modality.upper()}: its authors pretrained or evaluated it on this modality"
               f"{' (' + rules['sources'][src]['short'] + ')' if src else ''}.", *([src] if src else []))
    sc.notes.extend(mod.get("notes", []))


def _small_lesion_terms(sc: _Scoring, t: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    """Small or subtle lesions: a global objective is penalised, a dense one favoured."""
    if b["representation"] == "global":
        sc.add("small lesions: global objective", -float(t["global_penalty"]),
               "Penalised for small or subtle lesions: a purely global objective may under-represent "
               "subtle or localised pathology (review finding 2).", "review_f2")
    elif b["representation"] == "dense":
        sc.add("small lesions: dense objective", float(t["dense_bonus"]),
               "Favoured for small or subtle lesions: a masked / reconstruction objective keeps local "
               "detail (review finding 3).", "review_f3")
    if b["paradigm"] in ("generative", "hybrid"):
        sc.notes.append(t["note"])
        sc.evidence.extend(["review_f6", "review_f7"])


def _low_compute_terms(sc: _Scoring, t: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    """Low compute: the per-step cost class and the need for large batches."""
    cost = float(t["cost_adjust"][b["compute"]])
    batch = float(t["batch_sensitivity_adjust"][b["data"]["batch_sensitivity"]])
    if cost:
        sc.add(f"low compute: {b['compute']} cost", cost,
               f"{'Favoured' if cost > 0 else 'Penalised'} under low compute: its per-step cost class is "
               f"{b['compute']} (review finding 7: resource-efficient 3D training).")
    if batch:
        sc.add("low compute: batch-sensitive", batch,
               "Penalised under low compute: it relies on in-batch negatives or statistics, which small "
               "batches starve.")
    if cost or batch:
        sc.evidence.extend(t["evidence"])


def _data_terms(sc: _Scoring, rules: Mapping[str, Any], b: Mapping[str, Any], q: Query, n_pool: int) -> None:
    """Too few images to pretrain on is penalised; a batch-sensitive objective in 3D gets a note."""
    need = int(b["data"]["min_unlabelled"])
    if n_pool < need:
        penalty = float(rules["scoring"]["data_penalty_max"]) * (1.0 - n_pool / need)
        sc.add("data shortfall", -penalty,
               f"Penalised {penalty:.2f}: it wants about {need} images to pretrain on (project heuristic), "
               f"you have {n_pool}.", "project")
    if b["data"]["batch_sensitivity"] == "high" and q.dims == 3:
        sc.notes.append("Batch-sensitive objective: 3D batches are small (1-8), so gather embeddings across GPUs "
                        "and prefer LayerNorm or BN without affine/running stats in the heads.")


def _size_settings(rules: Mapping[str, Any], b: Mapping[str, Any], q: Query, n_pool: int) -> Settings:
    """Patch and batch from the bundle's rules (low-compute variant if asked); steps from the data size."""
    s = b["settings"][f"{q.dims}d"]
    low = "low_compute" in q.traits
    patch, batch = (s["low_compute"]["patch"], s["low_compute"]["batch"]) if low else (s["patch"], s["batch"])
    sizing = rules["sizing"]
    lim = sizing["low_compute"] if low else sizing
    steps = math.ceil(n_pool * lim["passes"] / batch)
    steps = int(min(max(steps, lim["min_steps"]), lim["max_steps"]))
    basis = (f"{s['basis']}{' (low-compute variant: project)' if low else ''}; "
             f"steps: about {lim['passes']} passes over {n_pool} images, clamped to "
             f"[{lim['min_steps']}, {lim['max_steps']}] (project heuristic)")
    return Settings(tuple(int(v) for v in patch), int(batch), steps, basis)


def _device_matches(entry_device: str, wanted: str | None) -> bool:
    if wanted is None:
        return True
    e, w = _norm(str(entry_device)), _norm(wanted)
    return e == w or e.startswith(w + ":") or e.startswith(w + "_") or e.startswith(w + "(")


def registry_backbone(label: str) -> str:
    """The backbone-registry name for a backbone as rules.yaml names it.

    ``"nnunet_plain_small (encoder)"`` -> ``nnunet_plain_small``; ``"vit (MONAI ViT; ...)"`` -> ``monai_vit``.
    The benchmarks measure this backbone, and the estimate prefers entries measured on it.
    """
    head = str(label).strip().split(" ", 1)[0].strip().lower()
    return _BACKBONE_ALIASES.get(head, head)


def format_duration(hours: float) -> str:
    """``"about 2 h 05 min"`` / ``"about 7 min"`` / ``"under 1 min"``."""
    minutes = round(hours * 60.0)
    if minutes < 1:
        return "under 1 min"
    h, m = divmod(minutes, 60)
    return f"about {h} h {m:02d} min" if h else f"about {m} min"


def _estimate(entries: list[dict[str, Any]], settings: Settings, device: str | None,
              backbone: str | None = None) -> Estimate:
    """Copy time/memory from the benchmark file; the closest setting is reported as such, never scaled.

    Entries measured on the recommended ``backbone`` (its registry name) win over other backbones;
    among those, the closest patch (log voxel count), then batch. An entry without ``backbone`` (hand
    written) counts as the recommended one.
    """
    candidates = [e for e in entries if _device_matches(e["device"], device)]
    if not candidates:
        where = f" on {device}" if device else ""
        other = sorted({str(e["device"]) for e in entries})
        extra = f" (measured on: {', '.join(other)})" if other else ""
        return Estimate("not_measured", f"{NOT_MEASURED}{where}{extra}")

    want_bb = registry_backbone(backbone) if backbone else None

    def same_backbone(e: dict[str, Any]) -> bool:
        return want_bb is None or e.get("backbone") is None or registry_backbone(e["backbone"]) == want_bb

    if any(same_backbone(e) for e in candidates):  # another backbone's cost says little about this one
        candidates = [e for e in candidates if same_backbone(e)]
    want_vox = math.prod(settings.patch)

    def distance(e: dict[str, Any]) -> tuple[float, int]:
        patch = [int(v) for v in e["patch"]]
        if len(patch) != len(settings.patch):
            return (math.inf, 0)
        return (abs(math.log(math.prod(patch) / want_vox)) + (0 if patch == list(settings.patch) else 1e-6),
                abs(int(e["batch"]) - settings.batch))

    best = min(candidates, key=distance)
    if math.isinf(distance(best)[0]):
        return Estimate("not_measured", f"{NOT_MEASURED} for {len(settings.patch)}D patches")
    patch = tuple(int(v) for v in best["patch"])
    batch, vps, mem = int(best["batch"]), float(best["volumes_per_s"]), float(best["peak_mem_mb"])
    bb = None if best.get("backbone") is None else str(best["backbone"])
    exact = patch == settings.patch and batch == settings.batch and same_backbone(best)
    hours = settings.steps * batch / vps / 3600.0 if vps > 0 else None
    on = f" ({bb})" if bb else ""
    measured = (f"{vps:g} volumes/s, peak {mem:g} MB on {best['device']}{on} at patch {'x'.join(map(str, patch))}, "
                f"batch {batch}")
    if bb and not same_backbone(best):
        measured += f" (not on the recommended {want_bb})"
    span = "" if hours is None else f"; {settings.steps} steps at that setting: {format_duration(hours)}"
    rounded = None if hours is None else round(hours, 4)
    if exact:
        return Estimate("measured", f"measured: {measured}{span}", str(best["device"]), patch, batch, vps, mem,
                        rounded, bb)
    return Estimate("measured_other", f"not measured at this setting; closest measurement: {measured}{span}",
                    str(best["device"]), patch, batch, vps, mem, rounded, bb)


def _expected_gain(rules: Mapping[str, Any], q: Query, fraction: float) -> tuple[str, str]:
    """Finding 5: SSL helps most when labels are scarce; category from the labelled fraction."""
    g = rules["expected_gain"]
    if fraction <= g["large_at_most"]:
        level = "large"
    elif fraction <= g["moderate_at_most"]:
        level = "moderate"
    else:
        level = "small"
    n_pool = q.n_labelled + q.n_unlabelled
    text = (f"{q.n_labelled} of {n_pool} images are labelled ({fraction:.1%}): expect a {level} gain over training "
            f"from scratch. SSL pays off most in low-label and few-shot regimes (review finding 5); {g['example']}. "
            f"Thresholds: large <= "
            f"{g['large_at_most']:.0%}, moderate <= {g['moderate_at_most']:.0%} labelled (project heuristic).")
    if q.n_unlabelled == 0:
        text += " With no unlabelled data SSL can only reuse the labelled images; add public unlabelled data of the same modality."
    return level, text


def _query_notes(rules: Mapping[str, Any], q: Query) -> list[str]:
    notes = [n["text"] for n in rules["modalities"][q.modality].get("notes", [])]
    notes.append(rules["normalization_note"]["text"])
    for t in q.traits:
        if t != "small_lesions":  # that note is attached to the generative / hybrid items it concerns
            notes.append(rules["traits"][t]["note"])
    if "multi_sequence" in q.traits and q.modality != "mri":
        notes.append(f"multi_sequence is an MRI trait; for {q.modality} it only means multi-channel input.")
    if q.device and _norm(q.device) == "cpu" and "low_compute" not in q.traits:
        notes.append("Device is cpu: consider the low_compute trait for smaller patches and batches.")
    notes.append("Scores rank alignment with your task (an ordinal encoding of the review's findings), not "
                 "predicted accuracy: validate on your data with the low-label evaluation protocol.")
    return notes


def _evidence(sources: Mapping[str, Any], ids: Iterable[str]) -> tuple[Evidence, ...]:
    seen: list[str] = []
    for i in ids:
        if i not in seen:
            seen.append(i)
    return tuple(Evidence(i, sources[i]["short"], sources[i]["citation"], sources[i]["finding"],
                          tuple(sources[i].get("seeds", []))) for i in seen)

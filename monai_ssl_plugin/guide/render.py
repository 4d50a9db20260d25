"""Render a :class:`Recommendation` as an aligned plain-text table or as JSON (and read JSON back)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from monai_ssl_plugin.guide.memory import fits_line
from monai_ssl_plugin.guide.recommender import Estimate, Recommendation, format_duration, recommend, registry_backbone

__all__ = ["from_json", "recommend_command", "to_json", "to_table"]

_COLUMNS = ("#", "bundle", "paradigm", "score", "normalisation", "patch", "batch", "steps", "time / memory")


def to_json(rec: Recommendation, indent: int | None = 2) -> str:
    """The recommendation as JSON; :func:`from_json` restores an equal object."""
    return json.dumps(rec.to_dict(), indent=indent, ensure_ascii=False)


def from_json(text: str) -> Recommendation:
    """Inverse of :func:`to_json`."""
    return Recommendation.from_dict(json.loads(text))


def _time_memory(e: Estimate) -> str:
    if e.status == "not_measured":
        return e.text
    hours = "" if e.hours_for_steps is None else f"{format_duration(e.hours_for_steps).removeprefix('about ')}, "
    # a trailing * marks figures measured at another patch/batch than the plan (see the notes)
    mark = "" if e.status == "measured" else "*"
    return f"{hours}{e.peak_mem_mb:g} MB{mark}"


def _align(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def to_table(rec: Recommendation, verbose: bool = True) -> str:
    """Plain text: a header, an aligned ranking table and, if ``verbose``, reasons, evidence and notes."""
    q = rec.query
    traits = f" (traits: {', '.join(q.traits)})" if q.traits else ""
    lines = [
        f"Pretext recommendation: {q.modality} / {q.task}, {q.dims}D, {q.n_labelled} labelled + "
        f"{q.n_unlabelled} unlabelled{traits}",
        f"Expected gain from SSL: {rec.expected_gain} ({rec.label_fraction:.1%} labelled)",
        "",
    ]
    rows = [list(_COLUMNS)]
    for it in rec.items:
        rows.append([str(it.rank), it.bundle, it.paradigm, f"{it.score:.3f}", it.normalization,
                     "x".join(map(str, it.settings.patch)), str(it.settings.batch), str(it.settings.steps),
                     _time_memory(it.estimate)])
    lines += _align(rows)
    if any(it.estimate.status == "measured_other" for it in rec.items):
        where = "the measured setting is listed under 'Why'" if verbose else "use verbose=True to see the measured setting"
        lines.append(f"* measured at a different patch/batch than planned; {where}")
    if not verbose:
        return "\n".join(lines)

    lines += ["", "Why:"]
    for it in rec.items:
        lines.append(f"{it.rank:>2}. {it.bundle} ({it.family}; backbone {it.backbone})")
        lines += [f"    - {r}" for r in it.reasons]
        lines.append(f"    evidence: {'; '.join(e.short for e in it.evidence)}")
        lines.append(f"    settings: {it.settings.basis}")
        lines.append(f"    time/memory: {it.estimate.text}")
        gpu = fits_line(it.bundle, registry_backbone(it.backbone), it.settings.patch, it.settings.batch)
        if gpu:
            lines.append(f"    {gpu}")
        if it.published:
            lines.append("    published: " + "; ".join(f"{p.name}: {p.value} [{p.source}]" for p in it.published))
        lines += [f"    note: {n}" for n in it.notes]
    lines += ["", "Expected gain:", f"  {rec.gain_reason}"]
    if rec.notes:
        lines += ["", "Notes:"] + [f"  - {n}" for n in rec.notes]
    if rec.excluded:
        lines += ["", "Not applicable:"] + [f"  - {e.bundle}: {e.reason}" for e in rec.excluded]
    sources = _sources(rec)
    if sources:
        lines += ["", "Sources:"] + [f"  [{s}] {c}" for s, c in sources]
    return "\n".join(lines)


def _sources(rec: Recommendation) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for ev in [e for it in rec.items for e in it.evidence] + list(rec.gain_evidence):
        if ev.short not in seen:
            seeds = f" (seeds: {', '.join(ev.seeds)})" if ev.seeds else ""
            seen[ev.short] = f"{ev.citation}{seeds}"
    return list(seen.items())


def recommend_command(
    modality: str,
    task: str,
    n_labelled: int,
    n_unlabelled: int,
    dims: int = 3,
    traits: Iterable[str] | str = (),
    device: str | None = None,
    top_k: int = 5,
    output: str = "table",
    verbose: bool = True,
    measured_path: str | Path | None = None,
) -> str:
    """Entry point for ``monai-ssl recommend``: run :func:`recommend` and render it (``output``: table | json)."""
    if output not in ("table", "json"):
        raise ValueError(f"output must be 'table' or 'json', got {output!r}")
    rec = recommend(modality, task, n_labelled, n_unlabelled, dims=dims, traits=traits, device=device,
                    top_k=top_k, measured_path=measured_path)
    return to_json(rec) if output == "json" else to_table(rec, verbose=verbose)

"""Report of an evaluation record: Markdown tables and PNG plots (matplotlib, Agg backend).

- Per route (``monai`` fine-tuning, ``probe`` frozen features, ``nnunet``) a table of mean ± std
  over seeds for every pretext (and ``scratch``) x task metric x label budget, then the SSL - scratch
  delta (mean over seeds of the paired per-seed differences: same split, same budget).
- ``images/<route>_vs_labels.png``: metric vs number of labelled cases, one line per arm, error
  bars = std over seeds; ``images/pretraining_curves.png``: pretraining loss and online-probe curves.

Everything is computed from ``record["cells"]``; the writer never runs a model.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from monai_ssl_plugin.checkpoint import atomic_write_bytes, atomic_write_text

ROUTE_TITLES = {"monai": "MONAI route: fine-tuning", "probe": "Frozen-feature probes",
                "nnunet": "nnU-Net route: nnUNetv2_train + nnUNetv2_predict"}
METRICS = {  # (route kind, task kind) -> metrics shown
    ("monai", "seg"): ["dice"], ("monai", "cls"): ["accuracy", "auc"],
    ("probe", "seg"): ["dice"], ("probe", "cls"): ["linear_auc", "knn_accuracy"],
    ("nnunet", "seg"): ["dice"],
}
WARN = "⚠"
TASK_SHORT = {"tissue_segmentation": "tissue seg", "atrophy_classification": "atrophy cls",
              "lesion_segmentation": "lesion seg"}


def _kind(task: str) -> str:
    return "seg" if task.endswith("segmentation") else "cls"


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the finite values."""
    v = _finite(values)
    if not v:
        return math.nan, math.nan, 0
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s, len(v)


def _fmt(m: float, s: float, n: int, signed: bool = False) -> str:
    if n == 0:
        return "–"
    text = f"{m:+.3f}" if signed else f"{m:.3f}"
    return text + (f" ± {s:.3f}" if n > 1 else "")


def summarise(record: dict[str, Any]) -> dict[str, Any]:
    """``{route: {(task, metric, budget, pretext): [values over seeds]}}`` and the paired deltas."""
    values: dict[str, dict[tuple, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for cell in record["cells"].values():
        for metric in METRICS.get((cell["route"], _kind(cell["task"])), []):
            v = cell["metrics"].get(metric)
            if v is not None:
                values[cell["route"]][(cell["task"], metric, cell["budget"], cell["pretext"])][cell["seed"]] = float(v)
    return values


def _arms(record: dict[str, Any]) -> list[str]:
    return [p["name"] for p in record["protocol"]["pretexts"]] + ["scratch"]


def _flags(record: dict[str, Any], route: str) -> list[dict[str, Any]]:
    """The fairness flags of ``route`` (see ``evaluation.guard``), numbered from 1 in the report."""
    return [f for f in (record.get("fairness") or {}).get("flags", []) if f["route"] == route]


def _mark(flags: list[dict[str, Any]], task: str, budget: int, pretext: str) -> str:
    """`` ⚠1,2``: the numbers of the flags that cover a pretrained arm's value (empty for none)."""
    hits = [str(i + 1) for i, f in enumerate(flags) if pretext != "scratch" and f.get("task") in (None, task)
            and f.get("budget") in (None, budget) and f.get("pretext") in (None, pretext)]
    return f" {WARN}" + ",".join(hits) if hits else ""


def _route_columns(route: str, v: dict[tuple, dict[int, float]]) -> list[tuple[str, str, int]]:
    return sorted({(t, m, b) for (t, m, b, _) in v}, key=lambda c: (c[0], METRICS[(route, _kind(c[0]))].index(c[1]), c[2]))


def _route_tables(record: dict[str, Any], route: str, v: dict[tuple, dict[int, float]]) -> list[str]:
    """The results table and the paired SSL − scratch table of one route, flagged values marked."""
    arms, flags = _arms(record), _flags(record, route)
    paradigm = {p["name"]: p.get("paradigm", "") for p in record["protocol"]["pretexts"]}
    columns = _route_columns(route, v)
    header = "| pretext | " + " | ".join(f"{TASK_SHORT.get(t, t)} {m} n={b}" for t, m, b in columns) + " |"
    sep = "| --- |" + " --- |" * len(columns)
    lines = [f"## {ROUTE_TITLES[route]}", "", header, sep]
    route_arms = [a for a in arms if any(key[3] == a for key in v)]  # e.g. the nnU-Net route may run fewer
    for arm in route_arms:
        cells = [_fmt(*mean_std(list(v.get((t, m, b, arm), {}).values()))) + _mark(flags, t, b, arm)
                 for t, m, b in columns]
        label = f"{arm} ({paradigm[arm]})" if paradigm.get(arm) else arm
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"SSL − scratch ({ROUTE_TITLES[route].split(':')[0]}), paired by seed:", "", header, sep]
    for arm in [a for a in route_arms if a != "scratch"]:
        row = []
        for t, m, b in columns:
            ssl, scratch = v.get((t, m, b, arm), {}), v.get((t, m, b, "scratch"), {})
            diffs = [ssl[s] - scratch[s] for s in ssl if s in scratch]
            row.append(_fmt(*mean_std(diffs), signed=True) + _mark(flags, t, b, arm))
        lines.append(f"| {arm} | " + " | ".join(row) + " |")
    lines.append("")
    for i, f in enumerate(flags):
        lines.append(f"{WARN}{i + 1} **Not a meaningful comparison**: {f['reason']}.")
    return lines + ([""] if flags else [])


def _pretraining_table(record: dict[str, Any]) -> list[str]:
    lines = ["## Pretraining", "", "| pretext | bundle | steps | final loss | online probe (last): kNN acc / linear AUC | seconds |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, info in record["pretraining"].items():
        loss = info.get("loss") or []
        probe = info.get("online_probe") or []
        last = probe[-1] if probe else {}
        probe_text = (f"{last.get('knn_accuracy', math.nan):.3f} / {last.get('linear_auc', math.nan):.3f} "
                      f"(iteration {last.get('iteration')})") if last else "–"
        lines.append(f"| {name} | {info.get('bundle')} | {loss[-1][0] if loss else '–'} | "
                     f"{loss[-1][1]:.4g} | {probe_text} | {info.get('seconds') if info.get('seconds') is not None else '–'} |"
                     if loss else f"| {name} | {info.get('bundle')} | – | – | {probe_text} | – |")
    return lines + [""]


def _fairness_banner(record: dict[str, Any]) -> list[str]:
    flags = (record.get("fairness") or {}).get("flags", [])
    if not flags:
        return []
    routes = sorted({f["route"] for f in flags})
    return [f"**{WARN} Run with --allow_unfair: {len(flags)} comparison problem(s) on the {', '.join(routes)} "
            f"route(s). Numbers marked {WARN} are not meaningful SSL − scratch comparisons; the reasons are "
            "under each table.**", ""]


def markdown(record: dict[str, Any]) -> str:
    """The report's Markdown: one results table and one delta table per route, flagged values marked."""
    values = summarise(record)
    lines = [f"# Evaluation report: {record['protocol']['name']}", "",
             f"Protocol `{record['protocol'].get('source', '')}`; {len(record['cells'])} cells; "
             f"test set: {len(record['splits']['test'])} held-out cases; budgets {record['budgets']} labelled cases; "
             f"seeds {record['protocol']['seeds']}. Values: mean ± sample std over seeds.", ""]
    lines += _fairness_banner(record)
    for route in ("monai", "probe", "nnunet"):
        if route in values:
            lines += _route_tables(record, route, values[route])
    if record.get("pretraining"):
        lines += _pretraining_table(record)
    lines += ["## Plots", ""] + [f"![{p}](images/{p})" for p in plot_names(record)] + [""]
    return "\n".join(lines)


def plot_names(record: dict[str, Any]) -> list[str]:
    routes = sorted({c["route"] for c in record["cells"].values()}, key=["monai", "probe", "nnunet"].index)
    names = [f"{r}_vs_labels.png" for r in routes]
    if record.get("pretraining"):
        names.append("pretraining_curves.png")
    return names


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _route_figure(plt: Any, record: dict[str, Any], route: str, v: dict[tuple, dict[int, float]]) -> bytes:
    """Metric vs labelled cases, one line per arm (error bars: std over seeds), one panel per task metric."""
    arms = _arms(record)
    panels = sorted({(t, m) for (t, m, _, _) in v}, key=lambda c: (c[0], METRICS[(route, _kind(c[0]))].index(c[1])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (task, metric) in zip(axes[0], panels):
        for i, arm in enumerate(arms):
            budgets = sorted({b for (t, m, b, a) in v if (t, m, a) == (task, metric, arm)})
            stats = [mean_std(list(v[(task, metric, b, arm)].values())) for b in budgets]
            if not budgets:
                continue
            style = dict(color="black", linestyle="--") if arm == "scratch" else dict(color=f"C{i}")
            ax.errorbar([b * (1 + 0.02 * (i - len(arms) / 2)) for b in budgets], [s[0] for s in stats],
                        yerr=[s[1] for s in stats], marker="o", capsize=3, label=arm, **style)
        ax.set_xscale("log")
        ax.set_xticks(record["budgets"], [str(b) for b in record["budgets"]])
        ax.minorticks_off()
        ax.set(xlabel="labelled training cases", ylabel=metric, title=f"{TASK_SHORT.get(task, task)}: {metric}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    flagged = f" — {WARN} not a meaningful comparison, see the report" if _flags(record, route) else ""
    fig.suptitle(ROUTE_TITLES[route] + " (mean ± std over seeds)" + flagged, y=1.04)
    data = _png(fig)
    plt.close(fig)
    return data


def _pretraining_figure(plt: Any, pre: dict[str, Any]) -> bytes:
    """Pretraining loss (relative to the first step) and the online-probe curves."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, info) in enumerate(pre.items()):
        loss = info.get("loss") or []
        if loss:
            first = loss[0][1] if loss[0][1] else 1.0
            axes[0].plot([s for s, _ in loss], [x / first for _, x in loss], color=f"C{i}", label=name, lw=1)
        probe = info.get("online_probe") or []
        if probe:
            axes[1].plot([c["iteration"] for c in probe], [c.get("knn_accuracy") for c in probe], "o-", color=f"C{i}",
                         label=f"{name} kNN acc")
            axes[1].plot([c["iteration"] for c in probe], [c.get("linear_auc") for c in probe], "s--", color=f"C{i}",
                         label=f"{name} linear AUC", alpha=0.6)
    axes[0].set(title="pretraining loss (relative to the first step)", xlabel="iteration", ylabel="loss / loss[0]")
    axes[1].set(title="online probe (atrophy, held-out half)", xlabel="iteration", ylabel="score")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    data = _png(fig)
    plt.close(fig)
    return data


def plots(record: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {f"{route}_vs_labels.png": _route_figure(plt, record, route, v) for route, v in summarise(record).items()}
    if record.get("pretraining"):
        out["pretraining_curves.png"] = _pretraining_figure(plt, record["pretraining"])
    return out


def write_report(record: dict[str, Any], output_dir: str | Path) -> Path:
    """Write ``report.md`` and ``images/*.png`` into ``output_dir`` (atomically); returns report.md."""
    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for name, data in plots(record).items():
        atomic_write_bytes(data, out / "images" / name)
    return atomic_write_text(markdown(record), out / "report.md")

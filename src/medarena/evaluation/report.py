"""Self-contained HTML reports of an evaluation or a ranking (plots embedded as base64 PNG).

One file, no external reference (no scripts, stylesheets or images fetched): it can be
mailed or archived. Every value is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader
from matplotlib.figure import Figure

from medarena.evaluation.ranking import RankingResult
from medarena.evaluation.results import EvaluationResult
from medarena.evaluation.subgroups import SubgroupAnalysis

_MAX_METRIC_PLOTS = 12

_ENV = Environment(
    loader=PackageLoader("medarena.evaluation", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["num"] = lambda v: _fmt(v)


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def metric_distribution_png(result: EvaluationResult, metrics: Sequence[str]) -> str | None:
    """Box plot with case dots for each metric (one panel per metric), base64 PNG."""
    shown = [m for m in metrics if _finite([c.get(m, math.nan) for c in result.cases.values()])]
    shown = shown[:_MAX_METRIC_PLOTS]
    if not shown:
        return None
    ncol = min(4, len(shown))
    nrow = math.ceil(len(shown) / ncol)
    fig = Figure(figsize=(3.2 * ncol, 2.8 * nrow))
    for i, m in enumerate(shown):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        vals = _finite([c.get(m, math.nan) for c in result.cases.values()])
        ax.boxplot(vals, widths=0.5, showfliers=False)
        jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(vals))
        ax.scatter(1 + jitter, vals, s=10, alpha=0.6)
        ax.set_title(m, fontsize=9)
        ax.set_xticks([])
    return _png(fig)


def subgroup_png(s: SubgroupAnalysis) -> str:
    """Subgroup means with their confidence intervals, base64 PNG."""
    fig = Figure(figsize=(max(3.0, 0.9 * len(s.groups) + 1.5), 2.8))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(s.groups))
    means = np.array([g.mean for g in s.groups])
    lo = means - np.array([g.ci[0] for g in s.groups])
    hi = np.array([g.ci[1] for g in s.groups]) - means
    ax.errorbar(x, means, yerr=np.vstack([lo, hi]), fmt="o", capsize=4)
    ax.set_xticks(x, [f"{g.value}\n(n={g.n})" for g in s.groups], fontsize=8)
    ax.set_ylabel(s.metric)
    ax.set_title(f"{s.metric} by {s.attribute}", fontsize=9)
    return _png(fig)


def rank_stability_png(k: RankingResult) -> str | None:
    """Dots at (team, rank) sized by the share of bootstrap rankings at that rank."""
    if not k.bootstrap:
        return None
    n = len(k.teams)
    fig = Figure(figsize=(max(4.0, 0.6 * n + 2), 3.5))
    ax = fig.add_subplot(1, 1, 1)
    for i, t in enumerate(k.teams):
        freqs = np.asarray(t.rank_frequencies or [], dtype=float)
        ranks = np.arange(1, freqs.size + 1)
        keep = freqs > 0
        ax.scatter(np.full(keep.sum(), i), ranks[keep], s=400 * freqs[keep], alpha=0.6, color="C0")
        ax.scatter([i], [t.rank], marker="x", color="k", s=30)
    ax.set_xticks(np.arange(n), [t.team for t in k.teams], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("rank")
    ax.set_ylim(n + 0.5, 0.5)
    return _png(fig)


def kendall_tau_png(k: RankingResult) -> str | None:
    """Histogram of Kendall's tau between the full ranking and each bootstrap ranking."""
    taus = _finite(k.kendall_tau)
    if not taus:
        return None
    fig = Figure(figsize=(4.5, 2.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(taus, bins=20, range=(min(-0.05, min(taus)), 1.0))
    ax.set_xlabel("Kendall's tau-b")
    ax.set_ylabel("resamples")
    return _png(fig)


def team_distribution_png(
    results: Mapping[str, EvaluationResult], metric: str, order: Sequence[str]
) -> str | None:
    """Box plots of one metric's per-case values per team, in ranking order."""
    data = [_finite([c.get(metric, math.nan) for c in results[t].cases.values()]) for t in order]
    if not any(data):
        return None
    fig = Figure(figsize=(max(4.0, 0.6 * len(order) + 2), 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.boxplot([d or [math.nan] for d in data], showfliers=False)
    ax.set_xticks(np.arange(1, len(order) + 1), list(order), rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    return _png(fig)


def evaluation_report_html(
    result: EvaluationResult,
    *,
    subgroups: Sequence[SubgroupAnalysis] = (),
    title: str | None = None,
) -> str:
    """One self-contained HTML page of an evaluation (tables, distributions, subgroups)."""
    metrics = result.metric_names()
    return _ENV.get_template("report_evaluation.html").render(
        title=title or f"medarena evaluation: {result.task}",
        r=result,
        metrics=metrics,
        dist=metric_distribution_png(result, metrics),
        subgroups=[(s, subgroup_png(s)) for s in subgroups],
    )


def ranking_report_html(
    ranking: RankingResult,
    results: Mapping[str, EvaluationResult] | None = None,
    *,
    title: str | None = None,
) -> str:
    """One self-contained HTML page of a ranking (table, rank stability, Kendall's tau)."""
    order = [t.team for t in ranking.teams]
    dist = None
    if results:
        dist = team_distribution_png(results, ranking.metrics[0], order)
    return _ENV.get_template("report_ranking.html").render(
        title=title or "medarena ranking",
        k=ranking,
        stability=rank_stability_png(ranking),
        tau=kendall_tau_png(ranking),
        dist=dist,
    )


def write_html(html: str, path: str | Path) -> Path:
    """Write a report page (UTF-8), creating the parent folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(html, encoding="utf-8")
    return p

"""Per-subgroup performance: a per-case metric split by a case attribute (sex, age band, site...).

For every attribute and value, the mean of the metric over the cases of that subgroup with
a percentile bootstrap confidence interval (cases resampled with replacement inside each
subgroup, seeded), and the gap between the best and the worst subgroup (direction from the
metric registry) with its own interval from the same resamples. Cases whose metric is NaN
(undefined) or that lack the attribute are left out and counted.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from medarena.errors import InputError
from medarena.evaluation.results import metric_spec

# Default age bands (years): [0, 18), [18, 40), [40, 65), [65, inf).
DEFAULT_AGE_EDGES: tuple[float, ...] = (0.0, 18.0, 40.0, 65.0)


class SubgroupStat(BaseModel):
    """Metric summary of one subgroup."""

    value: str
    n: int
    mean: float
    ci: tuple[float, float]


class SubgroupAnalysis(BaseModel):
    """One metric split by one attribute."""

    metric: str
    attribute: str
    higher_is_better: bool
    groups: list[SubgroupStat]
    best: str | None = None
    worst: str | None = None
    gap: float | None = Field(None, description="best minus worst subgroup mean, >= 0")
    gap_ci: tuple[float, float] | None = None
    n_without_attribute: int = 0
    bootstrap: int
    seed: int
    confidence: float


def read_case_attributes(path: str | Path) -> dict[str, dict[str, str]]:
    """Case attributes from a CSV with a ``case_id`` column (case id -> column -> text)."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "case_id" not in reader.fieldnames:
                raise InputError("a case attribute CSV needs a 'case_id' column", path=p)
            out: dict[str, dict[str, str]] = {}
            for row in reader:
                cid = (row.get("case_id") or "").strip()
                if not cid:
                    continue
                if cid in out:
                    raise InputError("case ids must be unique", path=p, value=cid)
                out[cid] = {k: (v or "").strip() for k, v in row.items() if k != "case_id"}
    except OSError as exc:
        raise InputError(f"cannot read the case attribute file ({exc.strerror})", path=p) from None
    return out


def age_band(age: float, edges: Sequence[float] = DEFAULT_AGE_EDGES) -> str:
    """Label such as ``40-64`` or ``65+`` of the band [edge_i, edge_i+1) holding ``age``."""
    if math.isnan(age) or age < edges[0]:
        raise InputError(f"age must be >= {edges[0]:g}", value=age)
    for lo, hi in itertools.pairwise(edges):
        if lo <= age < hi:
            return f"{lo:g}-{hi - 1:g}"
    return f"{edges[-1]:g}+"


def add_age_bands(
    attributes: Mapping[str, Mapping[str, str]],
    *,
    column: str = "age",
    name: str = "age_band",
    edges: Sequence[float] = DEFAULT_AGE_EDGES,
) -> dict[str, dict[str, str]]:
    """Copy of the attributes with an ``age_band`` column derived from a numeric age column."""
    out: dict[str, dict[str, str]] = {}
    for cid, attrs in attributes.items():
        row = dict(attrs)
        raw = row.get(column, "")
        if raw != "":
            try:
                row[name] = age_band(float(raw), edges)
            except ValueError:
                raise InputError(f"column {column!r} must be numeric", value=raw) from None
        out[cid] = row
    return out


def subgroup_analysis(
    cases: Mapping[str, Mapping[str, float]],
    attributes: Mapping[str, Mapping[str, str]],
    *,
    metric: str,
    by: str,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    higher_is_better: bool | None = None,
) -> SubgroupAnalysis:
    """Mean of ``metric`` per value of attribute ``by``, bootstrap CIs and best-worst gap."""
    if bootstrap < 1:
        raise InputError("bootstrap must be >= 1", value=bootstrap)
    if not 0 < confidence < 1:
        raise InputError("confidence must lie in (0, 1)", value=confidence)
    hib = metric_spec(metric).higher_is_better if higher_is_better is None else higher_is_better
    groups: dict[str, list[float]] = {}
    without = 0
    for cid, values in cases.items():
        v = values.get(metric)
        if v is None or math.isnan(v):
            continue
        attr = attributes.get(cid, {}).get(by, "")
        if attr == "":
            without += 1
            continue
        groups.setdefault(attr, []).append(float(v))
    if not groups:
        raise InputError(f"no case has both metric {metric!r} and attribute {by!r}", value=by)
    rng = np.random.default_rng(seed)
    names = sorted(groups)
    lo_q, hi_q = (1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0
    boot_means = np.empty((bootstrap, len(names)))
    stats_out: list[SubgroupStat] = []
    for gi, name in enumerate(names):
        vals = np.asarray(groups[name])
        idx = rng.integers(vals.size, size=(bootstrap, vals.size))
        boot_means[:, gi] = vals[idx].mean(axis=1)
        stats_out.append(
            SubgroupStat(
                value=name,
                n=int(vals.size),
                mean=float(vals.mean()),
                ci=(
                    float(np.quantile(boot_means[:, gi], lo_q)),
                    float(np.quantile(boot_means[:, gi], hi_q)),
                ),
            )
        )
    means = np.array([s.mean for s in stats_out])
    best_i = int(np.argmax(means) if hib else np.argmin(means))
    worst_i = int(np.argmin(means) if hib else np.argmax(means))
    gap = gap_ci = None
    if len(names) > 1:
        gap = float(abs(means[best_i] - means[worst_i]))
        # The gap of each resample between its own best and worst group, so the interval
        # covers a change of which group is best.
        boot_gap = boot_means.max(axis=1) - boot_means.min(axis=1)
        gap_ci = (float(np.quantile(boot_gap, lo_q)), float(np.quantile(boot_gap, hi_q)))
    return SubgroupAnalysis(
        metric=metric,
        attribute=by,
        higher_is_better=hib,
        groups=stats_out,
        best=names[best_i] if len(names) > 1 else None,
        worst=names[worst_i] if len(names) > 1 else None,
        gap=gap,
        gap_ci=gap_ci,
        n_without_attribute=without,
        bootstrap=bootstrap,
        seed=seed,
        confidence=confidence,
    )


def subgroup_report(
    cases: Mapping[str, Mapping[str, float]],
    attributes: Mapping[str, Mapping[str, str]],
    *,
    metrics: Sequence[str],
    by: Sequence[str],
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[SubgroupAnalysis]:
    """:func:`subgroup_analysis` for every (metric, attribute) pair; ``age_band`` is derived
    from a numeric ``age`` column when the attribute file has no ``age_band`` column."""
    attrs: Mapping[str, Mapping[str, str]] = attributes
    if "age_band" in by and not any("age_band" in a for a in attributes.values()):
        attrs = add_age_bands(attributes)
    return [
        subgroup_analysis(
            cases, attrs, metric=m, by=b, bootstrap=bootstrap, seed=seed, confidence=confidence
        )
        for m in metrics
        for b in by
    ]

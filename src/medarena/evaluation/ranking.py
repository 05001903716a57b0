"""Challenge rankings over per-case metric tables, with bootstrap rank stability.

Schemes (after challengeR, Wiesenfarth et al. 2021; see docs/evaluation.md):

- ``aggregate-then-rank``: aggregate each team's values over the cases (mean or median),
  then rank the aggregates.
- ``rank-then-aggregate``: rank the teams within every case, aggregate (mean or median)
  each team's case ranks, then rank those (BraTS style).
- ``test-then-rank``: for every ordered pair of teams, a one-sided paired Wilcoxon
  signed-rank test on the common cases (normal approximation with continuity correction,
  zero differences dropped, as R's ``wilcox.test(exact=FALSE)``); score = share of the other
  teams a team beats at p <= alpha; rank by score.
- ``multi-metric``: aggregate-then-rank per metric, then the (weighted) mean of the
  per-metric ranks, ranked again (lower mean rank is better).

Rules shared by all schemes:

- Ties get the smallest rank of the tied group ("min", as challengeR's default), so two
  teams tied for first are both rank 1 and the next team is rank 3.
- A case a team has no value for (absent, failed, or NaN) is *missing*. With
  ``missing="worst"`` (default) it takes the metric's worst value from the registry
  (:mod:`medarena.evaluation.results`), or, for a metric without a finite worst value, the
  worst value any team has on that case; with ``missing="drop"`` only cases every team has
  a value for are used. The rule applied is written into the result.
- Bootstrap: cases are resampled with replacement (``numpy.random.default_rng(seed)``),
  the whole ranking is recomputed per resample; each team gets its rank distribution and a
  rank interval (quantiles (1-c)/2 and (1+c)/2, taken as lower and higher order statistics),
  and Kendall's tau-b (``scipy.stats.kendalltau``) compares the full ranking with each
  bootstrap ranking.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from medarena.errors import InputError
from medarena.evaluation.results import EvaluationResult, metric_spec

logger = logging.getLogger(__name__)

Scheme = Literal["aggregate-then-rank", "rank-then-aggregate", "test-then-rank", "multi-metric"]
Aggregation = Literal["mean", "median"]
MissingRule = Literal["worst", "drop"]
SCHEMES: tuple[str, ...] = (
    "aggregate-then-rank",
    "rank-then-aggregate",
    "test-then-rank",
    "multi-metric",
)

# team -> case -> metric -> value
Table = Mapping[str, Mapping[str, Mapping[str, float]]]


class RankingConfig(BaseModel):
    """How to rank: scheme, metric(s), aggregation, missing-value rule, bootstrap."""

    model_config = ConfigDict(extra="forbid")

    scheme: Scheme = "aggregate-then-rank"
    metric: str | None = Field(None, description="Metric of single-metric schemes.")
    metrics: list[str] = Field(default_factory=list, description="Metrics of multi-metric.")
    weights: dict[str, float] | None = Field(
        None, description="Multi-metric weights per metric (default equal)."
    )
    aggregate: Aggregation = "mean"
    alpha: float = Field(0.05, gt=0, lt=1)
    missing: MissingRule = "worst"
    worst: dict[str, float] = Field(
        default_factory=dict, description="Worst value per metric, overriding the registry."
    )
    higher_is_better: dict[str, bool] = Field(
        default_factory=dict, description="Direction per metric, overriding the registry."
    )
    bootstrap: int = Field(0, ge=0, description="Number of case resamples (0: none).")
    seed: int = 0
    confidence: float = Field(0.95, gt=0, lt=1)

    def metric_list(self) -> list[str]:
        """The metrics this configuration ranks on."""
        if self.scheme == "multi-metric":
            if not self.metrics:
                raise InputError("multi-metric ranking needs --metrics", value=self.metrics)
            return list(self.metrics)
        if self.metric is None:
            if len(self.metrics) == 1:
                return list(self.metrics)
            raise InputError(f"the {self.scheme} scheme needs exactly one --metric", value=None)
        return [self.metric]


class TeamRanking(BaseModel):
    """One team's place: rank, the scheme's score and its bootstrap stability."""

    team: str
    rank: int
    score: float = Field(
        description="aggregate value (aggregate-then-rank), aggregated case rank "
        "(rank-then-aggregate), share of significant wins (test-then-rank) or weighted mean "
        "of metric ranks (multi-metric)"
    )
    n_cases: int
    n_missing: int
    metric_ranks: dict[str, int] = Field(default_factory=dict)
    beats: list[str] = Field(default_factory=list, description="test-then-rank wins")
    rank_interval: tuple[int, int] | None = None
    rank_frequencies: list[float] | None = Field(
        None, description="share of bootstrap rankings at rank 1, 2, ..., n_teams"
    )


class RankingResult(BaseModel):
    """A full ranking as the challenge service stores and shows it."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    scheme: Scheme
    metrics: list[str]
    aggregate: Aggregation
    higher_is_better: dict[str, bool]
    teams: list[TeamRanking]
    cases: list[str]
    missing_rule: str
    alpha: float | None = None
    bootstrap: int = 0
    seed: int | None = None
    confidence: float | None = None
    kendall_tau: list[float] = Field(default_factory=list)
    kendall_tau_median: float | None = None
    bootstrap_ranks: list[list[int]] | None = Field(
        None, description="bootstrap x team rank matrix, teams in the order of `teams`"
    )


# ---------------------------------------------------------------------------------------
# vectorised building blocks: arrays are (B, T, C) = (resamples, teams, cases), oriented
# so that a higher value is better.


def _min_rank_desc(scores: NDArray[np.float64]) -> NDArray[np.int64]:
    """Ranks along the last axis, 1 = highest score, ties get the smallest rank."""
    return stats.rankdata(-scores, method="min", axis=-1).astype(np.int64)


def _aggregate(x: NDArray[np.float64], how: Aggregation) -> NDArray[np.float64]:
    with np.errstate(invalid="ignore"):
        return np.mean(x, axis=-1) if how == "mean" else np.median(x, axis=-1)


def _avg_ranks_and_ties(
    key: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Average ranks (1-based) along axis 1 of a 2-D array and each element's tie-group size."""
    n, c = key.shape
    order = np.argsort(key, axis=1, kind="stable")
    s = np.take_along_axis(key, order, axis=1)
    new = np.ones((n, c), dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    flat_new = new.ravel()
    gid = np.cumsum(flat_new) - 1
    count = np.bincount(gid).astype(float)
    first = np.tile(np.arange(c), n)[flat_new].astype(float)
    avg = first + (count + 1.0) / 2.0
    ranks_sorted = avg[gid].reshape(n, c)
    ties_sorted = count[gid].reshape(n, c)
    ranks = np.empty_like(ranks_sorted)
    ties = np.empty_like(ties_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, axis=1)
    np.put_along_axis(ties, order, ties_sorted, axis=1)
    return ranks, ties


def wilcoxon_greater_pvalues(
    d: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """One-sided Wilcoxon signed-rank p-values of paired differences, row by row.

    ``d`` is (N, C). Returns (p for "median of d > 0", p for "median of d < 0"), each (N,).
    Zero differences are dropped, ties get average ranks with the tie-corrected variance, and
    the normal approximation uses a continuity correction of 1/2: R's ``wilcox.test(x, y,
    paired=TRUE, exact=FALSE)`` and ``scipy.stats.wilcoxon(method="approx",
    zero_method="wilcox", correction=True)``. A row without non-zero differences gets p = 1.
    """
    d = np.atleast_2d(np.asarray(d, dtype=float))
    # inf - inf (two teams both at -inf) is a tie, not an unknown.
    d = np.where(np.isnan(d), 0.0, d)
    a = np.abs(d)
    valid = a > 0
    n = valid.sum(axis=1).astype(float)
    ranks, ties = _avg_ranks_and_ties(np.where(valid, a, np.inf))
    w_plus = np.where(valid & (d > 0), ranks, 0.0).sum(axis=1)
    w_minus = n * (n + 1.0) / 2.0 - w_plus
    tie_term = np.where(valid, ties**2 - 1.0, 0.0).sum(axis=1)
    var = n * (n + 1.0) * (2.0 * n + 1.0) / 24.0 - tie_term / 48.0
    mean = n * (n + 1.0) / 4.0
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(var)
        z_g = (w_plus - mean - 0.5) / sd
        z_l = (w_minus - mean - 0.5) / sd
    p_g = np.where(var > 0, stats.norm.sf(z_g), 1.0)
    p_l = np.where(var > 0, stats.norm.sf(z_l), 1.0)
    return p_g, p_l


def _significant_wins(x: NDArray[np.float64], alpha: float) -> NDArray[np.bool_]:
    """(B, T, T) matrix: [b, i, j] is True when team i is significantly better than j."""
    b, t, _ = x.shape
    wins = np.zeros((b, t, t), dtype=bool)
    for i in range(t):
        for j in range(i + 1, t):
            p_ij, p_ji = wilcoxon_greater_pvalues(x[:, i, :] - x[:, j, :])
            wins[:, i, j] = p_ij <= alpha
            wins[:, j, i] = p_ji <= alpha
    return wins


class _Prepared(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    teams: list[str]
    cases: list[str]
    metrics: list[str]
    arrays: dict[str, NDArray[np.float64]]  # metric -> (T, C), oriented higher-is-better
    n_missing: list[int]
    directions: dict[str, bool]
    rule: str


def _prepare(table: Table, config: RankingConfig) -> _Prepared:
    """Fill missing values per the rule and orient every metric so that higher is better."""
    teams = list(table)
    if len(teams) < 2:
        raise InputError("a ranking needs at least two teams", value=len(teams))
    metrics = config.metric_list()
    case_set: dict[str, None] = {}
    for team in teams:
        for case in table[team]:
            case_set.setdefault(case, None)
    cases = sorted(case_set)
    if not cases:
        raise InputError("no cases to rank on", value=0)
    raw: dict[str, NDArray[np.float64]] = {}
    for m in metrics:
        arr = np.full((len(teams), len(cases)), np.nan)
        for ti, team in enumerate(teams):
            per_case = table[team]
            for ci, case in enumerate(cases):
                v = per_case.get(case, {}).get(m)
                if v is not None:
                    arr[ti, ci] = float(v)
        if np.isnan(arr).all():
            raise InputError(f"no team has a value for metric {m!r}", value=m)
        raw[m] = arr
    missing_any = np.zeros((len(teams), len(cases)), dtype=bool)
    for arr in raw.values():
        missing_any |= np.isnan(arr)
    n_missing = missing_any.sum(axis=1).tolist()
    directions: dict[str, bool] = {}
    for m in metrics:
        if m in config.higher_is_better:
            directions[m] = config.higher_is_better[m]
        else:
            directions[m] = metric_spec(m).higher_is_better
    keep: NDArray[np.bool_] = np.ones(len(cases), dtype=bool)
    rules: list[str] = []
    if config.missing == "drop":
        keep = np.asarray(~missing_any.any(axis=0))
        if not keep.any():
            raise InputError("no case has a value for every team (missing='drop')", value=0)
        rules.append(f"missing='drop': {int((~keep).sum())} case(s) without every team dropped")
    arrays: dict[str, NDArray[np.float64]] = {}
    for m in metrics:
        arr = raw[m][:, keep]
        hib = directions[m]
        if config.missing == "worst" and np.isnan(arr).any():
            worst = config.worst.get(m)
            if worst is None:
                worst = metric_spec(m).worst if m not in config.higher_is_better else None
            if worst is not None:
                arr = np.where(np.isnan(arr), worst, arr)
                rules.append(f"{m}: missing -> worst value {worst:g}")
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    col = np.nanmin(arr, axis=0) if hib else np.nanmax(arr, axis=0)
                # A case nobody has a value for ties everybody; any constant does.
                col = np.where(np.isnan(col), 0.0, col)
                arr = np.where(np.isnan(arr), col[None, :], arr)
                rules.append(f"{m}: missing -> worst value of any team on that case")
        arrays[m] = arr if hib else -arr
    if config.missing == "worst" and not rules:
        rules.append("missing='worst': no value was missing")
    kept_cases = [c for c, k in zip(cases, keep, strict=True) if k]
    return _Prepared(
        teams=teams,
        cases=kept_cases,
        metrics=metrics,
        arrays=arrays,
        n_missing=[int(v) for v in n_missing],
        directions=directions,
        rule="; ".join(rules),
    )


def _scores_and_ranks(
    xs: Mapping[str, NDArray[np.float64]], config: RankingConfig
) -> tuple[NDArray[np.float64], NDArray[np.int64], dict[str, NDArray[np.int64]]]:
    """Scheme scores and final ranks for (B, T, C) arrays; also per-metric ranks."""
    metrics = list(xs)
    if config.scheme == "aggregate-then-rank":
        score = _aggregate(xs[metrics[0]], config.aggregate)
        return score, _min_rank_desc(score), {}
    if config.scheme == "rank-then-aggregate":
        case_ranks = stats.rankdata(-xs[metrics[0]], method="min", axis=1)
        score = _aggregate(case_ranks.astype(float), config.aggregate)
        return score, _min_rank_desc(-score), {}
    if config.scheme == "test-then-rank":
        x = xs[metrics[0]]
        t = x.shape[1]
        wins = _significant_wins(x, config.alpha)
        score = wins.sum(axis=2) / max(t - 1, 1)
        return score.astype(float), _min_rank_desc(score.astype(float)), {}
    per_metric = {m: _min_rank_desc(_aggregate(xs[m], config.aggregate)) for m in metrics}
    weights = np.array([(config.weights or {}).get(m, 1.0) for m in metrics], dtype=float)
    if (weights < 0).any() or weights.sum() <= 0:
        raise InputError("multi-metric weights must be >= 0 with a positive sum", value=weights)
    stacked = np.stack([per_metric[m] for m in metrics], axis=-1).astype(float)
    score = (stacked * weights).sum(axis=-1) / weights.sum()
    return score, _min_rank_desc(-score), per_metric


def rank_teams(table: Table, config: RankingConfig) -> RankingResult:
    """Rank teams from their per-case metric values (team -> case -> metric -> value)."""
    prep = _prepare(table, config)
    full = {m: a[None, :, :] for m, a in prep.arrays.items()}
    score, ranks, per_metric = _scores_and_ranks(full, config)
    score0, ranks0 = score[0], ranks[0]
    beats: list[list[str]] = [[] for _ in prep.teams]
    if config.scheme == "test-then-rank":
        wins = _significant_wins(full[prep.metrics[0]], config.alpha)[0]
        beats = [[prep.teams[j] for j in np.flatnonzero(wins[i])] for i in range(len(prep.teams))]

    n_t = len(prep.teams)
    intervals: list[tuple[int, int] | None] = [None] * n_t
    freqs: list[list[float] | None] = [None] * n_t
    taus: list[float] = []
    boot_ranks: NDArray[np.int64] | None = None
    if config.bootstrap > 0:
        rng = np.random.default_rng(config.seed)
        n_c = len(prep.cases)
        idx = rng.integers(n_c, size=(config.bootstrap, n_c))
        boot = {m: np.moveaxis(a[:, idx], 0, 1) for m, a in prep.arrays.items()}
        _, boot_ranks, _ = _scores_and_ranks(boot, config)
        lo_q = (1.0 - config.confidence) / 2.0
        for ti in range(n_t):
            col = boot_ranks[:, ti]
            lo = int(np.quantile(col, lo_q, method="lower"))
            hi = int(np.quantile(col, 1.0 - lo_q, method="higher"))
            intervals[ti] = (lo, hi)
            counts = np.bincount(col, minlength=n_t + 1)[1 : n_t + 1]
            freqs[ti] = (counts / config.bootstrap).tolist()
        with warnings.catch_warnings():
            # A resample where every team ties has no defined tau (NaN), which is kept.
            warnings.simplefilter("ignore")
            taus = [
                float(stats.kendalltau(ranks0, boot_ranks[b]).statistic)
                for b in range(config.bootstrap)
            ]

    team_rows = [
        TeamRanking(
            team=team,
            rank=int(ranks0[ti]),
            score=_unorient_score(config, prep, float(score0[ti])),
            n_cases=len(prep.cases),
            n_missing=prep.n_missing[ti],
            metric_ranks={m: int(r[0, ti]) for m, r in per_metric.items()},
            beats=beats[ti],
            rank_interval=intervals[ti],
            rank_frequencies=freqs[ti],
        )
        for ti, team in enumerate(prep.teams)
    ]
    order = sorted(range(n_t), key=lambda i: (team_rows[i].rank, team_rows[i].team))
    finite_taus = [t for t in taus if not math.isnan(t)]
    return RankingResult(
        scheme=config.scheme,
        metrics=prep.metrics,
        aggregate=config.aggregate,
        higher_is_better=prep.directions,
        teams=[team_rows[i] for i in order],
        cases=prep.cases,
        missing_rule=prep.rule,
        alpha=config.alpha if config.scheme == "test-then-rank" else None,
        bootstrap=config.bootstrap,
        seed=config.seed if config.bootstrap else None,
        confidence=config.confidence if config.bootstrap else None,
        kendall_tau=taus,
        kendall_tau_median=float(np.median(finite_taus)) if finite_taus else None,
        bootstrap_ranks=(boot_ranks[:, order].tolist() if boot_ranks is not None else None),
    )


def _unorient_score(config: RankingConfig, prep: _Prepared, score: float) -> float:
    """Report an aggregate-then-rank score in the metric's own units (undo the sign flip)."""
    if config.scheme == "aggregate-then-rank" and not prep.directions[prep.metrics[0]]:
        return -score
    return score


def table_from_results(
    results: Mapping[str, EvaluationResult],
) -> dict[str, dict[str, dict[str, float]]]:
    """team -> case -> metric -> value from evaluation results (failed cases are absent)."""
    return {team: {c: dict(v) for c, v in r.cases.items()} for team, r in results.items()}


def rank_results(results: Mapping[str, EvaluationResult], config: RankingConfig) -> RankingResult:
    """Rank teams from their result.json contents (team name -> EvaluationResult)."""
    tasks = {r.task for r in results.values()}
    if len(tasks) > 1:
        raise InputError(
            "results of different tasks cannot be ranked together", value=sorted(tasks)
        )
    return rank_teams(table_from_results(results), config)


def rank_order(result: RankingResult) -> Sequence[str]:
    """Team names from first to last place."""
    return [t.team for t in result.teams]

"""Ranking schemes on hand-computed tables, Wilcoxon against scipy, bootstrap stability."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from medarena.errors import InputError
from medarena.evaluation.ranking import (
    RankingConfig,
    rank_order,
    rank_results,
    rank_teams,
    wilcoxon_greater_pvalues,
)
from medarena.evaluation.results import EvaluationResult


def _table(values: dict[str, list[float | None]], metric: str = "dice") -> dict:
    return {
        team: {f"c{i}": {metric: v} for i, v in enumerate(vals) if v is not None}
        for team, vals in values.items()
    }


def _ranks(result) -> dict[str, int]:
    return {t.team: t.rank for t in result.teams}


def test_aggregate_then_rank_and_rank_then_aggregate_disagree() -> None:
    # A: mean 0.633, case ranks 1,1,2 (mean 1.33); B: mean 0.8, case ranks 2,2,1 (mean 1.67).
    table = _table({"A": [0.9, 0.9, 0.1], "B": [0.8, 0.8, 0.8]})
    atr = rank_teams(table, RankingConfig(scheme="aggregate-then-rank", metric="dice"))
    rta = rank_teams(table, RankingConfig(scheme="rank-then-aggregate", metric="dice"))
    assert _ranks(atr) == {"A": 2, "B": 1}
    assert _ranks(rta) == {"A": 1, "B": 2}
    assert atr.teams[0].score == pytest.approx(0.8)
    assert rta.teams[0].score == pytest.approx(4 / 3)


def test_median_aggregation() -> None:
    table = _table({"A": [0.9, 0.9, 0.1], "B": [0.8, 0.8, 0.8]})
    r = rank_teams(table, RankingConfig(metric="dice", aggregate="median"))
    assert _ranks(r) == {"A": 1, "B": 2}
    assert r.teams[0].score == pytest.approx(0.9)


def test_ties_get_the_minimum_rank() -> None:
    table = _table({"A": [0.5, 0.7], "C": [0.7, 0.5], "B": [0.4, 0.4]})
    r = rank_teams(table, RankingConfig(metric="dice"))
    assert _ranks(r) == {"A": 1, "C": 1, "B": 3}
    assert rank_order(r) == ["A", "C", "B"]
    # Within a case the tie is also "min": case ranks A (1,2), C (2,1), B (3,3).
    rta = rank_teams(
        _table({"A": [0.5, 0.5], "C": [0.5, 0.6], "B": [0.1, 0.1]}),
        RankingConfig(scheme="rank-then-aggregate", metric="dice"),
    )
    scores = {t.team: t.score for t in rta.teams}
    assert scores == {"A": pytest.approx(1.5), "C": pytest.approx(1.0), "B": pytest.approx(3.0)}


def test_lower_is_better_metric_and_score_in_metric_units() -> None:
    table = _table({"A": [2.0, 4.0], "B": [1.0, 1.0]}, metric="hd95")
    r = rank_teams(table, RankingConfig(metric="hd95"))
    assert _ranks(r) == {"B": 1, "A": 2}
    assert r.higher_is_better == {"hd95": False}
    assert {t.team: t.score for t in r.teams} == {"B": 1.0, "A": 3.0}


def test_missing_case_takes_the_registry_worst_value() -> None:
    # B has no value for c1: dice -> 0 (registry worst), so B's mean is (1.0 + 0) / 2.
    table = _table({"A": [0.6, 0.6], "B": [1.0, None]})
    r = rank_teams(table, RankingConfig(metric="dice"))
    assert _ranks(r) == {"A": 1, "B": 2}
    b = next(t for t in r.teams if t.team == "B")
    assert b.score == pytest.approx(0.5) and b.n_missing == 1
    assert "worst value 0" in r.missing_rule
    # NaN counts as missing too.
    r_nan = rank_teams(
        _table({"A": [0.6, 0.6], "B": [1.0, float("nan")]}), RankingConfig(metric="dice")
    )
    assert _ranks(r_nan) == {"A": 1, "B": 2}


def test_missing_without_registry_worst_uses_worst_team_on_that_case() -> None:
    # mae has no finite worst: B's missing c1 gets max(A's 3.0, C's 5.0) = 5.0.
    table = _table({"A": [1.0, 3.0], "B": [0.0, None], "C": [2.0, 5.0]}, metric="mae")
    r = rank_teams(table, RankingConfig(metric="mae"))
    scores = {t.team: t.score for t in r.teams}
    assert scores["B"] == pytest.approx(2.5)
    assert _ranks(r) == {"A": 1, "B": 2, "C": 3}
    assert "worst value of any team" in r.missing_rule


def test_missing_drop_rule_uses_common_cases_only() -> None:
    table = _table({"A": [0.6, 0.6, 0.0], "B": [0.5, 0.5, None]})
    r = rank_teams(table, RankingConfig(metric="dice", missing="drop"))
    assert r.cases == ["c0", "c1"]
    assert _ranks(r) == {"A": 1, "B": 2}
    worst = rank_teams(table, RankingConfig(metric="dice", missing="worst"))
    assert {t.team: t.score for t in worst.teams}["B"] == pytest.approx(1 / 3)


def test_worst_override_and_direction_override() -> None:
    table = _table({"A": [0.6, 0.6], "B": [1.0, None]}, metric="custom")
    with pytest.raises(InputError, match="unknown metric"):
        rank_teams(table, RankingConfig(metric="custom"))
    cfg = RankingConfig(metric="custom", higher_is_better={"custom": True}, worst={"custom": 0.4})
    r = rank_teams(table, cfg)
    assert {t.team: t.score for t in r.teams}["B"] == pytest.approx(0.7)


def test_multi_metric_mean_of_ranks_with_weights() -> None:
    table = {
        "A": {"c0": {"dice": 0.9, "fpv": 5.0}, "c1": {"dice": 0.9, "fpv": 5.0}},
        "B": {"c0": {"dice": 0.8, "fpv": 1.0}, "c1": {"dice": 0.8, "fpv": 1.0}},
        "C": {"c0": {"dice": 0.7, "fpv": 2.0}, "c1": {"dice": 0.7, "fpv": 2.0}},
    }
    # dice ranks A1 B2 C3; fpv ranks B1 C2 A3 -> equal weights: A 2, B 1.5, C 2.5.
    r = rank_teams(table, RankingConfig(scheme="multi-metric", metrics=["dice", "fpv"]))
    assert _ranks(r) == {"B": 1, "A": 2, "C": 3}
    assert r.teams[0].metric_ranks == {"dice": 2, "fpv": 1}
    # autoPET-style weights dice 0.5, fpv 0.25 -> A (0.5 + 0.75)/0.75 = 1.667, B 1.667: tie.
    w = rank_teams(
        table,
        RankingConfig(
            scheme="multi-metric", metrics=["dice", "fpv"], weights={"dice": 0.5, "fpv": 0.25}
        ),
    )
    assert _ranks(w) == {"A": 1, "B": 1, "C": 3}


def test_wilcoxon_pvalues_match_scipy() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for _ in range(40):
        d = np.round(rng.normal(0.2, 1.0, size=15), 1)  # rounding makes ties and zeros
        rows.append(d)
    d = np.array(rows)
    p_g, p_l = wilcoxon_greater_pvalues(d)
    for k, row in enumerate(rows):
        ref_g = stats.wilcoxon(
            row, zero_method="wilcox", correction=True, alternative="greater", method="approx"
        )
        ref_l = stats.wilcoxon(
            row, zero_method="wilcox", correction=True, alternative="less", method="approx"
        )
        assert p_g[k] == pytest.approx(ref_g.pvalue, rel=1e-9, abs=1e-12)
        assert p_l[k] == pytest.approx(ref_l.pvalue, rel=1e-9, abs=1e-12)


def test_test_then_rank_decisions_match_scipy() -> None:
    rng = np.random.default_rng(7)
    teams = {
        name: rng.normal(mu, 0.05, size=25).clip(0, 1)
        for name, mu in [("A", 0.80), ("B", 0.78), ("C", 0.70), ("D", 0.69)]
    }
    table = {
        t: {f"c{i}": {"dice": float(v)} for i, v in enumerate(vals)} for t, vals in teams.items()
    }
    r = rank_teams(table, RankingConfig(scheme="test-then-rank", metric="dice"))
    for row in r.teams:
        expected = []
        for other, vals in teams.items():
            if other == row.team:
                continue
            p = stats.wilcoxon(
                teams[row.team],
                vals,
                zero_method="wilcox",
                correction=True,
                alternative="greater",
                method="approx",
            ).pvalue
            if p <= 0.05:
                expected.append(other)
        assert row.beats == expected
        assert row.score == pytest.approx(len(expected) / 3)
    assert r.alpha == 0.05


def test_bootstrap_is_deterministic_by_seed() -> None:
    rng = np.random.default_rng(0)
    table = {
        f"t{k}": {f"c{i}": {"dice": float(rng.uniform())} for i in range(30)} for k in range(4)
    }
    a = rank_teams(table, RankingConfig(metric="dice", bootstrap=200, seed=5))
    b = rank_teams(table, RankingConfig(metric="dice", bootstrap=200, seed=5))
    c = rank_teams(table, RankingConfig(metric="dice", bootstrap=200, seed=6))
    assert a.bootstrap_ranks == b.bootstrap_ranks and a.kendall_tau == b.kendall_tau
    assert a.bootstrap_ranks != c.bootstrap_ranks
    assert all(-1.0 <= t <= 1.0 for t in a.kendall_tau)
    for t in a.teams:
        assert t.rank_frequencies is not None
        assert sum(t.rank_frequencies) == pytest.approx(1.0)


@pytest.mark.parametrize("scheme", ["aggregate-then-rank", "rank-then-aggregate", "test-then-rank"])
def test_bootstrap_sanity_dominant_team_and_near_twins(scheme: str) -> None:
    rng = np.random.default_rng(1)
    n = 60
    base = rng.uniform(0.5, 0.7, size=n)
    noise = rng.normal(0, 0.001, size=n)
    table = {
        "dominant": {f"c{i}": {"dice": float(base[i] + 0.3)} for i in range(n)},
        "twin1": {f"c{i}": {"dice": float(base[i])} for i in range(n)},
        "twin2": {f"c{i}": {"dice": float(base[i] + noise[i])} for i in range(n)},
        "weak": {f"c{i}": {"dice": float(base[i] - 0.3)} for i in range(n)},
    }
    r = rank_teams(table, RankingConfig(scheme=scheme, metric="dice", bootstrap=300, seed=0))
    rows = {t.team: t for t in r.teams}
    assert rows["dominant"].rank == 1 and rows["dominant"].rank_interval == (1, 1)
    assert rows["dominant"].rank_frequencies[0] == 1.0
    assert rows["weak"].rank_interval == (4, 4)
    lo1, hi1 = rows["twin1"].rank_interval
    lo2, hi2 = rows["twin2"].rank_interval
    assert max(lo1, lo2) <= min(hi1, hi2)  # intervals overlap


def test_rank_results_from_evaluation_results() -> None:
    res = {
        "alpha": EvaluationResult(
            task="segmentation", cases={"c0": {"dice": 0.9}, "c1": {"dice": 0.7}}
        ),
        "beta": EvaluationResult(
            task="segmentation", cases={"c0": {"dice": 0.5}}, failed={"c1": "x"}
        ),
    }
    r = rank_results(res, RankingConfig(metric="dice"))
    assert _ranks(r) == {"alpha": 1, "beta": 2}
    assert r.teams[1].n_missing == 1
    with pytest.raises(InputError, match="different tasks"):
        rank_results({**res, "g": EvaluationResult(task="brats")}, RankingConfig(metric="dice"))


def test_bad_configurations_raise() -> None:
    table = _table({"A": [0.5], "B": [0.4]})
    with pytest.raises(InputError, match="at least two teams"):
        rank_teams({"A": table["A"]}, RankingConfig(metric="dice"))
    with pytest.raises(InputError, match="needs --metrics"):
        rank_teams(table, RankingConfig(scheme="multi-metric"))
    with pytest.raises(InputError, match="exactly one --metric"):
        rank_teams(table, RankingConfig())

"""Subgroup analysis: means, bootstrap confidence intervals, best-worst gap, age bands."""

from __future__ import annotations

import numpy as np
import pytest

from medarena.errors import InputError
from medarena.evaluation.subgroups import (
    add_age_bands,
    age_band,
    read_case_attributes,
    subgroup_analysis,
    subgroup_report,
)


def test_means_cis_and_gap() -> None:
    rng = np.random.default_rng(0)
    cases = {}
    attrs = {}
    for i in range(40):
        site = "A" if i < 20 else "B"
        cases[f"c{i}"] = {"dice": float(0.9 if site == "A" else rng.uniform(0.4, 0.8))}
        attrs[f"c{i}"] = {"site": site}
    attrs["c39"] = {}  # no attribute: left out and counted
    r = subgroup_analysis(cases, attrs, metric="dice", by="site", bootstrap=500, seed=1)
    a, b = r.groups
    assert (a.value, a.n, b.n) == ("A", 20, 19)
    assert a.mean == pytest.approx(0.9) and a.ci == pytest.approx((0.9, 0.9))
    b_vals = np.array([cases[f"c{i}"]["dice"] for i in range(20, 39)])
    assert b.mean == pytest.approx(b_vals.mean())
    assert b.ci[0] < b.mean < b.ci[1]
    # CI width near 2 * 1.96 * standard error of the mean.
    se = b_vals.std() / np.sqrt(b_vals.size)
    assert b.ci[1] - b.ci[0] == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert (r.best, r.worst) == ("A", "B")
    assert r.gap == pytest.approx(0.9 - b_vals.mean())
    assert r.gap_ci is not None and r.gap_ci[0] <= r.gap <= r.gap_ci[1]
    assert r.n_without_attribute == 1
    again = subgroup_analysis(cases, attrs, metric="dice", by="site", bootstrap=500, seed=1)
    assert again == r


def test_lower_is_better_picks_smallest_mean_as_best() -> None:
    cases = {"a": {"hd95": 1.0}, "b": {"hd95": 9.0}, "c": {"hd95": float("nan")}}
    attrs = {"a": {"sex": "F"}, "b": {"sex": "M"}, "c": {"sex": "M"}}
    r = subgroup_analysis(cases, attrs, metric="hd95", by="sex", bootstrap=10)
    assert (r.best, r.worst, r.gap) == ("F", "M", 8.0)
    assert [g.n for g in r.groups] == [1, 1]  # NaN case left out


def test_age_bands_and_report(tmp_path) -> None:
    assert age_band(17.9) == "0-17" and age_band(18) == "18-39" and age_band(80) == "65+"
    with pytest.raises(InputError):
        age_band(-1)
    csv = tmp_path / "cases.csv"
    csv.write_text("case_id,sex,age\nc0,F,30\nc1,M,70\nc2,F,\n", encoding="utf-8")
    attrs = read_case_attributes(csv)
    assert attrs["c2"] == {"sex": "F", "age": ""}
    banded = add_age_bands(attrs)
    assert banded["c0"]["age_band"] == "18-39" and "age_band" not in banded["c2"]
    cases = {"c0": {"dice": 0.5}, "c1": {"dice": 0.7}, "c2": {"dice": 0.9}}
    out = subgroup_report(cases, attrs, metrics=["dice"], by=["sex", "age_band"], bootstrap=50)
    assert [(x.attribute, [g.value for g in x.groups]) for x in out] == [
        ("sex", ["F", "M"]),
        ("age_band", ["18-39", "65+"]),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,sex\n1,F\n", encoding="utf-8")
    with pytest.raises(InputError, match="case_id"):
        read_case_attributes(bad)

"""Tests of regression metrics (brain age, bone age) by hand and against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medarena.errors import InputError
from medarena.evaluation.regression import (
    absolute_errors,
    pearson_r,
    regression_metrics,
    spearman_rho,
)


def test_errors_by_hand() -> None:
    m = regression_metrics([10, 20, 30, 40], [12, 18, 33, 40])
    # errors 2, -2, 3, 0
    assert m["mae"] == pytest.approx(7 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(17 / 4))
    assert m["mean_error"] == pytest.approx(3 / 4)
    assert m["n"] == 4
    assert absolute_errors([10, 20], [12, 18]).tolist() == [2.0, 2.0]


def test_correlations_match_scipy() -> None:
    rng = np.random.default_rng(3)
    age = rng.uniform(20, 80, 40)
    pred = age + rng.normal(0, 5, 40)
    m = regression_metrics(age, pred)
    assert m["pearson_r"] == pytest.approx(stats.pearsonr(age, pred).statistic)
    assert m["spearman_rho"] == pytest.approx(stats.spearmanr(age, pred).statistic)
    gap = pred - age
    assert m["bias_spearman"] == pytest.approx(stats.spearmanr(gap, age).statistic)
    assert m["bias_pearson"] == pytest.approx(np.corrcoef(gap, age)[0, 1])
    assert pearson_r(age, pred) == pytest.approx(m["pearson_r"])
    assert spearman_rho(age, pred) == pytest.approx(m["spearman_rho"])


def test_regression_to_the_mean_gives_bias_minus_one() -> None:
    # pred = 0.5 * age + 20: the gap -0.5 * age + 20 falls exactly with age (PAC 2019 objective 2)
    age = np.array([20.0, 35.0, 50.0, 65.0, 80.0])
    m = regression_metrics(age, 0.5 * age + 20)
    assert m["bias_spearman"] == pytest.approx(-1.0)
    assert m["bias_pearson"] == pytest.approx(-1.0)


def test_constant_inputs_give_nan_not_crash() -> None:
    m = regression_metrics([1, 2, 3], [1, 2, 3])
    assert m["mae"] == 0.0
    assert math.isnan(m["bias_spearman"])  # the gap is constant (0)
    assert math.isnan(regression_metrics([5, 5, 5], [4, 5, 6])["pearson_r"])


def test_bad_input() -> None:
    with pytest.raises(InputError, match="equal length"):
        regression_metrics([1, 2], [1, 2, 3])
    with pytest.raises(InputError, match="finite"):
        regression_metrics([1, 2], [1, math.nan])
    with pytest.raises(InputError, match="no cases"):
        regression_metrics([], [])

"""Regression metrics for scalar targets (brain age, bone age): MAE, RMSE, correlations, age bias.

Conventions (see docs/metrics-tasks.md):
- MAE = mean |pred - true|, RMSE = sqrt(mean (pred - true)^2), mean_error = mean (pred - true).
- Pearson r = ``scipy.stats.pearsonr``; Spearman rho = ``scipy.stats.spearmanr`` (average ranks
  for ties).
- Brain-age bias: correlation of the brain-age gap (pred - true) with the true age. PAC 2019
  objective 2 constrains the *Spearman* version below 0.10; the Pearson version is reported
  too. Correlations with a constant input are undefined and returned as NaN.
- No bias correction is applied here: corrections are fitted on training data by the
  organiser, never on the test labels of the evaluated model.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from medarena.errors import InputError


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.ndim != 1 or t.shape != p.shape:
        raise InputError(
            "y_true and y_pred must be 1-D and of equal length", value=(t.shape, p.shape)
        )
    if t.size == 0:
        raise InputError("no cases to evaluate", value=0)
    for name, arr in (("y_true", t), ("y_pred", p)):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} must contain only finite numbers", value="NaN or inf")
    return t, p


def absolute_errors(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[np.float64]:
    """Per-case absolute error |pred - true| (the per-case column behind MAE)."""
    t, p = _pair(y_true, y_pred)
    return np.abs(p - t)


def _corr(kind: str, a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.pearsonr(a, b) if kind == "pearson" else stats.spearmanr(a, b)
    return float(res.statistic)


def pearson_r(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation coefficient; NaN when either input is constant or n < 2."""
    a, b = _pair(x, y)
    return _corr("pearson", a, b)


def spearman_rho(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when an input is constant."""
    a, b = _pair(x, y)
    return _corr("spearman", a, b)


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """All dataset-level regression metrics as a flat name -> value dict.

    Keys: n, mae, rmse, mean_error, pearson_r, spearman_rho, and the brain-age bias terms
    bias_spearman = spearman(pred - true, true) (PAC 2019) and bias_pearson.
    """
    t, p = _pair(y_true, y_pred)
    err = p - t
    return {
        "n": float(t.size),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mean_error": float(np.mean(err)),
        "pearson_r": _corr("pearson", t, p),
        "spearman_rho": _corr("spearman", t, p),
        "bias_spearman": _corr("spearman", err, t),
        "bias_pearson": _corr("pearson", err, t),
    }

"""Dataset-level classification metrics: AUC, accuracy, kappa, F1, ODIR score, sens@spec.

Every function takes the whole test set at once (these metrics are not means of per-case
values). Conventions, each following a published definition (see docs/metrics-tasks.md):

- AUC: area under the ROC curve as ``sklearn.metrics.roc_auc_score`` (ties count 1/2, i.e.
  the Mann-Whitney statistic). Multi-class: one-vs-rest, unweighted mean over classes.
  Multi-label: unweighted mean of per-label AUCs (the CheXpert leaderboard "AUC").
- A label (or one-vs-rest class) whose reference has a single class has no AUC. The
  ``single_class`` policy decides: ``"skip"`` drops it from the macro mean and reports it,
  ``"nan"`` makes the macro mean NaN, ``"error"`` raises :class:`InputError`.
- Thresholded metrics call a case positive when ``score >= threshold`` (the convention of
  ``sklearn.metrics.roc_curve`` thresholds), except the ODIR score, which binarises with
  the strict ``score > 0.5`` of the official ODIR-2019 script.
- Kappa and F1 are computed over the full label range ``labels=range(n_classes)``, so an
  absent grade still counts in the quadratic weights (the sklearn pitfall).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn import metrics as skm

from medarena.errors import InputError

logger = logging.getLogger(__name__)

Task = Literal["binary", "multiclass", "multilabel"]
SingleClassPolicy = Literal["skip", "nan", "error"]
_POLICIES = ("skip", "nan", "error")


@dataclass(frozen=True)
class AUCResult:
    """Macro AUC with the per-label values and the labels left out by the single-class policy."""

    value: float
    per_label: dict[str, float]
    skipped: tuple[str, ...]


class SensitivityAtSpecificity(NamedTuple):
    """Best sensitivity at a minimum specificity, read from an ROC vertex (never interpolated)."""

    sensitivity: float
    specificity: float
    threshold: float


def _finite(name: str, arr: NDArray[np.float64]) -> None:
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must contain only finite numbers", value="NaN or inf")


def _as_binary_labels(name: str, y: ArrayLike) -> NDArray[np.int64]:
    arr = np.asarray(y, dtype=float)
    _finite(name, arr)
    bad = arr[(arr != 0) & (arr != 1)]
    if bad.size:
        raise InputError(f"{name} must hold binary labels 0 or 1", value=float(bad[0]))
    return arr.astype(np.int64)


def _as_class_labels(name: str, y: ArrayLike, n_classes: int) -> NDArray[np.int64]:
    arr = np.asarray(y, dtype=float)
    _finite(name, arr)
    bad = arr[(arr != np.round(arr)) | (arr < 0) | (arr >= n_classes)]
    if bad.size:
        raise InputError(
            f"{name} must hold integer class indices in 0..{n_classes - 1}", value=float(bad[0])
        )
    return arr.astype(np.int64)


def _check_policy(single_class: str) -> None:
    if single_class not in _POLICIES:
        raise InputError(f"single_class must be one of {_POLICIES}", value=single_class)


def _label_names(class_names: Sequence[str] | None, n: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n)]
    if len(class_names) != n:
        raise InputError(
            f"class_names has {len(class_names)} names but the scores have {n} columns",
            value=list(class_names),
        )
    return [str(c) for c in class_names]


def binary_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """ROC AUC of one binary label; NaN when the reference holds a single class."""
    t = _as_binary_labels("y_true", y_true)
    s = np.asarray(y_score, dtype=float)
    _finite("y_score", s)
    if t.shape != s.shape or t.ndim != 1:
        raise InputError(
            "y_true and y_score must be 1-D and of equal length", value=(t.shape, s.shape)
        )
    if np.unique(t).size < 2:
        return math.nan
    return float(skm.roc_auc_score(t, s))


def macro_auc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    class_names: Sequence[str] | None = None,
    single_class: SingleClassPolicy = "skip",
) -> AUCResult:
    """Unweighted mean of per-column AUCs of an (n, L) indicator matrix (CheXpert / OvR macro).

    Column j of ``y_true`` is the reference of label j (multi-label) or the one-vs-rest
    indicator of class j (multi-class). Columns whose reference holds one class follow
    ``single_class`` (see the module docstring).
    """
    _check_policy(single_class)
    t = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    if t.ndim != 2 or t.shape != s.shape:
        raise InputError(
            "y_true and y_score must be (n_cases, n_labels) arrays of equal shape",
            value=(t.shape, s.shape),
        )
    names = _label_names(class_names, t.shape[1])
    per_label: dict[str, float] = {}
    skipped: list[str] = []
    for j, name in enumerate(names):
        per_label[name] = binary_auc(t[:, j], s[:, j])
        if math.isnan(per_label[name]):
            skipped.append(name)
    if skipped and single_class == "error":
        raise InputError(
            "AUC is undefined for labels whose reference holds a single class",
            value=skipped,
            hint="use single_class='skip' to drop them from the mean",
        )
    if skipped:
        logger.warning("AUC undefined (single reference class) for labels %s", skipped)
    valid = [v for v in per_label.values() if not math.isnan(v)]
    if single_class == "nan" and skipped:
        value = math.nan
    else:
        value = float(np.mean(valid)) if valid else math.nan
    return AUCResult(value=value, per_label=per_label, skipped=tuple(skipped))


def sensitivity_specificity(
    y_true: ArrayLike, y_score: ArrayLike, *, threshold: float = 0.5
) -> tuple[float, float]:
    """Sensitivity and specificity of ``score >= threshold``; NaN where a class is absent."""
    t = _as_binary_labels("y_true", y_true)
    s = np.asarray(y_score, dtype=float)
    _finite("y_score", s)
    pred = s >= threshold
    pos, neg = t == 1, t == 0
    sens = float(np.mean(pred[pos])) if pos.any() else math.nan
    spec = float(np.mean(~pred[neg])) if neg.any() else math.nan
    return sens, spec


def sensitivity_at_specificity(
    y_true: ArrayLike, y_score: ArrayLike, *, min_specificity: float
) -> SensitivityAtSpecificity:
    """Highest sensitivity among ROC vertices whose specificity is at least ``min_specificity``.

    The ROC comes from ``roc_curve(drop_intermediate=False)``: every distinct threshold is a
    vertex and nothing is interpolated. Among vertices with the best sensitivity the one with
    the highest threshold (hence highest specificity) is returned; its threshold may be
    ``inf`` (nothing called positive) when no finite threshold reaches the specificity.
    """
    if not 0.0 <= min_specificity <= 1.0:
        raise InputError("min_specificity must lie in [0, 1]", value=min_specificity)
    t = _as_binary_labels("y_true", y_true)
    s = np.asarray(y_score, dtype=float)
    _finite("y_score", s)
    if np.unique(t).size < 2:
        return SensitivityAtSpecificity(math.nan, math.nan, math.nan)
    fpr, tpr, thr = skm.roc_curve(t, s, drop_intermediate=False)
    spec = 1.0 - fpr
    ok = np.flatnonzero(spec >= min_specificity)
    # Thresholds decrease along the curve, so the first index with the best tpr is the
    # most specific way to reach it.
    best = ok[np.argmax(tpr[ok])]
    return SensitivityAtSpecificity(float(tpr[best]), float(spec[best]), float(thr[best]))


def cohen_kappa(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    n_classes: int,
    weights: Literal["linear", "quadratic"] | None = None,
) -> float:
    """Cohen's kappa over the full label range ``0..n_classes-1`` (weights as in sklearn).

    Passing ``labels=range(n_classes)`` keeps the weight of a disagreement tied to the grade
    distance even when some grades are absent from both vectors. NaN when the expected
    disagreement is zero (e.g. every case in one grade).
    """
    t = _as_class_labels("y_true", y_true, n_classes)
    p = _as_class_labels("y_pred", y_pred, n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = skm.cohen_kappa_score(t, p, labels=list(range(n_classes)), weights=weights)
    return float(value)


def quadratic_weighted_kappa(y_true: ArrayLike, y_pred: ArrayLike, *, n_classes: int) -> float:
    """Quadratic weighted kappa (APTOS 2019, DRAC22) with weights (i-j)^2/(N-1)^2 over N grades."""
    return cohen_kappa(y_true, y_pred, n_classes=n_classes, weights="quadratic")


def odir_score(y_true: ArrayLike, y_score: ArrayLike) -> dict[str, float]:
    """ODIR-2019 final score: (kappa + micro F1 + AUC) / 3 on flattened labels.

    Follows the official ``ODIR_evaluation.py``: all labels of all patients are flattened,
    predictions binarised with the strict ``score > 0.5``, kappa is the *unweighted* Cohen
    kappa, F1 the micro F1 and AUC the ROC AUC of the flattened scores.
    """
    t = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    if t.ndim != 2 or t.shape != s.shape:
        raise InputError(
            "ODIR needs (n_patients, n_labels) arrays of equal shape", value=(t.shape, s.shape)
        )
    gt = _as_binary_labels("y_true", t.ravel())
    pr = s.ravel()
    _finite("y_score", pr)
    binar = (pr > 0.5).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kappa = float(skm.cohen_kappa_score(gt, binar))
    f1 = float(skm.f1_score(gt, binar, average="micro"))
    auc = binary_auc(gt, pr)
    return {
        "odir_kappa": kappa,
        "odir_f1": f1,
        "odir_auc": auc,
        "odir_score": (kappa + f1 + auc) / 3.0,
    }


def _check_shapes(task: Task, t: NDArray[np.float64], s: NDArray[np.float64]) -> None:
    if task == "binary" and (t.ndim != 1 or s.shape != t.shape):
        raise InputError(
            "binary task needs y_true (n,) and y_score (n,) = probability of the positive class",
            value=(t.shape, s.shape),
        )
    if task == "multiclass" and (t.ndim != 1 or s.ndim != 2 or s.shape[0] != t.shape[0]):
        raise InputError(
            "multiclass task needs y_true (n,) class indices and y_score (n, n_classes)",
            value=(t.shape, s.shape),
        )
    if task == "multilabel" and (t.ndim != 2 or s.shape != t.shape):
        raise InputError(
            "multilabel task needs y_true and y_score of shape (n, n_labels)",
            value=(t.shape, s.shape),
        )
    if t.shape[0] == 0:
        raise InputError("no cases to evaluate", value=0)


def _auc_entries(res: AUCResult, prefix: str = "auc") -> dict[str, float]:
    out = {prefix: res.value, f"{prefix}_labels_skipped": float(len(res.skipped))}
    out.update({f"{prefix}/{name}": v for name, v in res.per_label.items()})
    return out


def classification_metrics(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    task: Task,
    class_names: Sequence[str] | None = None,
    threshold: float = 0.5,
    min_specificity: float | None = None,
    single_class: SingleClassPolicy = "skip",
) -> dict[str, float]:
    """All dataset-level classification metrics of one task, as a flat name -> value dict.

    binary: ``y_true`` (n,) in {0,1}, ``y_score`` (n,) score of the positive class. Keys:
    auc, accuracy, balanced_accuracy, sensitivity, specificity, f1, kappa, and with
    ``min_specificity``: sens_at_spec, sens_at_spec_threshold, sens_at_spec_specificity.

    multiclass: ``y_true`` (n,) indices, ``y_score`` (n, K); the prediction is the argmax.
    Keys: auc (OvR macro), auc/<class>, auc_labels_skipped, accuracy, balanced_accuracy,
    f1_micro, f1_macro, kappa, qwk (quadratic over all K grades).

    multilabel: ``y_true``/``y_score`` (n, L); a label is predicted when score >= threshold.
    Keys: auc (CheXpert macro), auc/<label>, auc_labels_skipped, subset_accuracy (exact
    match), sensitivity and specificity over the flattened labels, f1_micro, f1_macro, and
    odir_kappa, odir_f1, odir_auc, odir_score (ODIR-2019, fixed strict 0.5 cut).
    """
    _check_policy(single_class)
    t = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    _check_shapes(task, t, s)
    _finite("y_score", s)
    out: dict[str, float] = {}
    if task == "binary":
        tb = _as_binary_labels("y_true", t)
        # A single-class reference leaves no AUC whatever the policy; "error" raises.
        out["auc"] = macro_auc(tb[:, None], s[:, None], single_class=single_class).value
        pred = (s >= threshold).astype(np.int64)
        sens, spec = sensitivity_specificity(tb, s, threshold=threshold)
        out.update(
            accuracy=float(skm.accuracy_score(tb, pred)),
            balanced_accuracy=_balanced_accuracy(tb, pred),
            sensitivity=sens,
            specificity=spec,
            f1=float(skm.f1_score(tb, pred, labels=[0, 1], zero_division=0.0)),
            kappa=cohen_kappa(tb, pred, n_classes=2),
        )
        if min_specificity is not None:
            r = sensitivity_at_specificity(tb, s, min_specificity=min_specificity)
            out.update(
                sens_at_spec=r.sensitivity,
                sens_at_spec_threshold=r.threshold,
                sens_at_spec_specificity=r.specificity,
            )
    elif task == "multiclass":
        k = s.shape[1]
        tc = _as_class_labels("y_true", t, k)
        onehot = np.eye(k, dtype=np.int64)[tc]
        out.update(
            _auc_entries(macro_auc(onehot, s, class_names=class_names, single_class=single_class))
        )
        pred = np.argmax(s, axis=1)
        labels = list(range(k))
        out.update(
            accuracy=float(skm.accuracy_score(tc, pred)),
            balanced_accuracy=_balanced_accuracy(tc, pred),
            f1_micro=float(skm.f1_score(tc, pred, labels=labels, average="micro")),
            f1_macro=float(
                skm.f1_score(tc, pred, labels=labels, average="macro", zero_division=0.0)
            ),
            kappa=cohen_kappa(tc, pred, n_classes=k),
            qwk=quadratic_weighted_kappa(tc, pred, n_classes=k),
        )
    else:
        tm = _as_binary_labels("y_true", t)
        out.update(
            _auc_entries(macro_auc(tm, s, class_names=class_names, single_class=single_class))
        )
        pred = (s >= threshold).astype(np.int64)
        sens, spec = sensitivity_specificity(tm.ravel(), s.ravel(), threshold=threshold)
        out.update(
            subset_accuracy=float(skm.accuracy_score(tm, pred)),
            sensitivity=sens,
            specificity=spec,
            f1_micro=float(skm.f1_score(tm, pred, average="micro", zero_division=0.0)),
            f1_macro=float(skm.f1_score(tm, pred, average="macro", zero_division=0.0)),
        )
        out.update(odir_score(tm, s))
    return out


def _balanced_accuracy(t: NDArray[np.int64], pred: NDArray[np.int64]) -> float:
    """Balanced accuracy = mean recall over the classes present in the reference."""
    with warnings.catch_warnings():
        # sklearn warns when a predicted class is absent from y_true; the value stays defined.
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(t, pred))

"""Tests of dataset-level classification metrics against hand-computed values and sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medarena.errors import InputError
from medarena.evaluation import classification as C


def _kappa_by_formula(t: list[int], p: list[int], n: int, quadratic: bool) -> float:
    """kappa_w = 1 - sum w O / sum w E, w = (i-j)^2/(N-1)^2 (or 0/1 unweighted), by loops."""
    obs = np.zeros((n, n))
    for a, b in zip(t, p, strict=True):
        obs[a, b] += 1
    exp = np.outer(obs.sum(1), obs.sum(0)) / len(t)
    num = den = 0.0
    for i in range(n):
        for j in range(n):
            w = (i - j) ** 2 / (n - 1) ** 2 if quadratic else float(i != j)
            num += w * obs[i, j]
            den += w * exp[i, j]
    return 1 - num / den


def test_binary_auc_by_hand_and_ties() -> None:
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ordered -> 0.75
    assert C.binary_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tied pair counts 1/2 (Mann-Whitney)
    assert C.binary_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_binary_metrics_by_hand() -> None:
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.9]
    m = C.classification_metrics(y, s, task="binary", threshold=0.5, min_specificity=0.75)
    # >= 0.5 -> predicted [0,0,0,1,0,1,1,1]: TP 3, FN 1, TN 3, FP 1
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert m["kappa"] == pytest.approx(0.5)  # po .75, pe .5
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    # at spec >= .75 the vertex with threshold 0.4 already detects all 4 positives
    assert m["sens_at_spec"] == 1.0
    assert m["sens_at_spec_threshold"] == pytest.approx(0.4)
    assert m["sens_at_spec_specificity"] == pytest.approx(0.75)


def test_sensitivity_at_specificity_reads_vertices_not_interpolation() -> None:
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.9]
    # spec 1.0 is reached only at threshold 0.7 (2 of 4 positives)
    r = C.sensitivity_at_specificity(y, s, min_specificity=1.0)
    assert (r.sensitivity, r.specificity, r.threshold) == (0.5, 1.0, 0.7)
    # spec >= 0.9: an interpolated ROC would give something between 0.5 and 1; a vertex gives 0.5
    assert C.sensitivity_at_specificity(y, s, min_specificity=0.9).sensitivity == 0.5
    # nothing at all reaches spec 1 except calling everything negative -> threshold inf
    r0 = C.sensitivity_at_specificity([0, 1], [0.9, 0.1], min_specificity=1.0)
    assert r0.sensitivity == 0.0 and math.isinf(r0.threshold)


def test_multiclass_against_sklearn_and_qwk_full_range() -> None:
    rng = np.random.default_rng(1)
    y = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 2, 2])
    raw = rng.random((12, 5)) + np.eye(5)[y] * 0.7
    prob = raw / raw.sum(1, keepdims=True)
    m = C.classification_metrics(y, prob, task="multiclass")
    pred = prob.argmax(1)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["f1_micro"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert m["qwk"] == pytest.approx(_kappa_by_formula(list(y), list(pred), 5, quadratic=True))
    assert m["kappa"] == pytest.approx(_kappa_by_formula(list(y), list(pred), 5, quadratic=False))


def test_qwk_pitfall_absent_grades() -> None:
    # grades 2 and 3 never occur: sklearn without labels= would treat 0,1,4 as 0,1,2
    t = [0, 1, 4, 4, 1, 0, 1]
    p = [1, 4, 4, 1, 1, 0, 0]
    ours = C.quadratic_weighted_kappa(t, p, n_classes=5)
    assert ours == pytest.approx(_kappa_by_formula(t, p, 5, quadratic=True))
    compressed = skm.cohen_kappa_score(t, p, weights="quadratic")
    assert abs(ours - compressed) > 0.05


def test_multilabel_chexpert_macro_and_single_class_policies() -> None:
    y = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
    s = np.array([[0.1, 0.2, 0.5], [0.4, 0.9, 0.6], [0.35, 0.3, 0.7], [0.8, 0.8, 0.1]])
    names = ["Atelectasis", "Edema", "Effusion"]
    m = C.classification_metrics(y, s, task="multilabel", class_names=names)
    # label 0: 0.75 (hand case above), label 1: 1.0; label 2 has only positives -> skipped
    assert m["auc/Atelectasis"] == pytest.approx(0.75)
    assert m["auc/Edema"] == pytest.approx(1.0)
    assert math.isnan(m["auc/Effusion"])
    assert m["auc_labels_skipped"] == 1.0
    assert m["auc"] == pytest.approx(0.875)
    assert C.macro_auc(y, s, class_names=names).skipped == ("Effusion",)
    assert math.isnan(C.macro_auc(y, s, single_class="nan").value)
    with pytest.raises(InputError, match="single class"):
        C.classification_metrics(y, s, task="multilabel", single_class="error")
    # with all labels valid the macro equals sklearn's macro average
    assert C.macro_auc(y[:, :2], s[:, :2]).value == pytest.approx(
        skm.roc_auc_score(y[:, :2], s[:, :2], average="macro")
    )


def test_binary_single_class_never_crashes() -> None:
    m = C.classification_metrics([1, 1, 1], [0.2, 0.7, 0.9], task="binary")
    assert math.isnan(m["auc"])
    assert math.isnan(m["specificity"])
    assert m["sensitivity"] == pytest.approx(2 / 3)


def test_odir_score_by_hand_strict_cut() -> None:
    gt = [[1, 0], [0, 1]]
    pr = [[0.9, 0.6], [0.5, 0.7]]
    r = C.odir_score(gt, pr)
    # binarised (strict > .5): [1,1,0,1] vs [1,0,0,1]: po .75, pe .5 -> kappa .5; micro F1 .75
    assert r["odir_kappa"] == pytest.approx(0.5)
    assert r["odir_f1"] == pytest.approx(0.75)
    assert r["odir_auc"] == pytest.approx(1.0)
    assert r["odir_score"] == pytest.approx((0.5 + 0.75 + 1.0) / 3)
    # 0.5 is negative under the strict cut: a perfect binarisation here
    assert C.odir_score([[1, 0], [0, 1]], [[0.9, 0.2], [0.5, 0.7]])["odir_kappa"] == 1.0


def test_bad_input_is_named() -> None:
    with pytest.raises(InputError, match="binary labels"):
        C.classification_metrics([0, 2], [0.1, 0.2], task="binary")
    with pytest.raises(InputError, match="class indices"):
        C.classification_metrics([0, 3], [[0.5, 0.5], [0.5, 0.5]], task="multiclass")
    with pytest.raises(InputError, match="finite"):
        C.classification_metrics([0, 1], [0.1, math.nan], task="binary")
    with pytest.raises(InputError, match="single_class"):
        C.classification_metrics([0, 1], [0.1, 0.2], task="binary", single_class="drop")  # type: ignore[arg-type]


def test_multiclass_absent_class_is_skipped_in_ovr_auc() -> None:
    y = [0, 0, 1, 1]  # class 2 never occurs
    s = np.array([[0.8, 0.1, 0.1], [0.3, 0.3, 0.4], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    m = C.classification_metrics(y, s, task="multiclass", class_names=["a", "b", "c"])
    assert math.isnan(m["auc/c"]) and m["auc_labels_skipped"] == 1.0
    expected = np.mean([skm.roc_auc_score([1, 1, 0, 0], s[:, 0]), skm.roc_auc_score(y, s[:, 1])])
    assert m["auc"] == pytest.approx(expected)

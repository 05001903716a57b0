"""Tests of the LUNA16 FROC/CPM: hand-computed curves, the script's edge rules, MONAI contrast."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from medarena.errors import InputError
from medarena.evaluation.detection import (
    LUNA16_OPERATING_POINTS,
    Candidate,
    Finding,
    froc,
    luna16_cpm,
    scan_counts,
)


def _c(scan: str, x: float, y: float, z: float, p: float) -> dict[str, Any]:
    return {"scan_id": scan, "x": x, "y": y, "z": z, "probability": p}


REFS = [Finding("A", 0, 0, 0, 10.0), Finding("B", 100, 0, 0, 6.0)]
CANDS = [
    _c("A", 1, 0, 0, 0.9),  # hit on nodule A
    _c("A", 2, 0, 0, 0.5),  # second hit on A: dropped, not a FP
    _c("A", 50, 50, 50, 0.8),  # FP
    _c("B", 103, 0, 0, 0.95),  # exactly at the radius of B: a miss, so a FP
    _c("B", 0, 0, 0, 0.3),  # FP
]
SCANS = ["A", "B", "C"]


def test_hand_computed_curve_and_cpm() -> None:
    r = luna16_cpm(CANDS, REFS, scan_ids=SCANS, bootstrap=0)
    assert (r.n_nodules, r.n_detected, r.n_false_positives, r.n_double_hits) == (2, 1, 3, 1)
    # ROC entries: TP 0.9; FPs 0.95, 0.8, 0.3; nodule B missed (denominator only).
    # fps = fpr * 3 FP / 3 scans, sens = tpr * 1/2 -> (0,0) (1/3,0) (1/3,.5) (2/3,.5) (1,.5)
    pts = dict(zip(r.operating_points, r.sensitivity_at, strict=True))
    assert pts[0.125] == pytest.approx(0.0)
    assert pts[0.25] == pytest.approx(0.0)
    for fp in (0.5, 1.0, 2.0, 4.0, 8.0):
        assert pts[fp] == pytest.approx(0.5)
    assert r.cpm == pytest.approx(2.5 / 7)
    assert max(r.sensitivities) == pytest.approx(0.5)  # missed nodule caps sensitivity
    assert r.metrics()["sens@0.125"] == pytest.approx(0.0)


def test_hit_exactly_at_radius_is_a_miss() -> None:
    on = scan_counts([_c("B", 103, 0, 0, 0.9)], REFS, scan_ids=SCANS)
    inside = scan_counts([_c("B", 102.999, 0, 0, 0.9)], REFS, scan_ids=SCANS)
    assert (on["B"].n_detected, on["B"].n_false_positives) == (0, 1)
    assert (inside["B"].n_detected, inside["B"].n_false_positives) == (1, 0)


def test_two_hits_count_once_with_highest_probability() -> None:
    # the nodule's entry carries 0.9, not 0.5: at 0 FP/scan it is found above threshold 0.85
    cands = [_c("A", 1, 0, 0, 0.5), _c("A", -1, 0, 0, 0.9), _c("A", 40, 0, 0, 0.85)]
    r = froc(cands, REFS[:1], scan_ids=["A"], bootstrap=0)
    assert r.n_double_hits == 1 and r.n_false_positives == 1
    # TP (0.9) ranks above the only FP: sensitivity 1 already at fps 0
    assert r.sensitivity_at == pytest.approx([1.0] * 7)


def test_hit_on_excluded_finding_is_ignored() -> None:
    excluded = [{"scan_id": "C", "x": 0, "y": 0, "z": 0, "diameter_mm": 8}]
    extra = [*CANDS, _c("C", 1, 1, 1, 0.99)]
    ignored = luna16_cpm(extra, REFS, scan_ids=SCANS, excluded=excluded, bootstrap=0)
    base = luna16_cpm(CANDS, REFS, scan_ids=SCANS, bootstrap=0)
    assert ignored.n_ignored_excluded == 1
    assert ignored.cpm == pytest.approx(base.cpm)
    counted = luna16_cpm(extra, REFS, scan_ids=SCANS, bootstrap=0)
    assert counted.n_false_positives == 4 and counted.cpm < base.cpm


def test_system_without_false_positives() -> None:
    r = luna16_cpm([_c("A", 0, 0, 0, 0.4)], REFS, scan_ids=["A", "B"], bootstrap=0)
    assert r.n_false_positives == 0
    assert all(f == 0.0 for f in r.fps)
    assert r.sensitivity_at == pytest.approx([0.5] * 7)
    assert r.cpm == pytest.approx(0.5)


def test_at_most_100_marks_per_scan_ties_dropped() -> None:
    fps = [_c("A", 50 + i, 50, 50, 0.5 + i / 1000) for i in range(120)]
    low_tp = _c("A", 0, 0, 0, 0.1)
    counts = scan_counts([*fps, low_tp], REFS[:1], scan_ids=["A"])
    assert counts["A"].n_marks_dropped == 21 and counts["A"].n_detected == 0
    # the 100th and 101st marks tie: both go (strictly above the 101st), 99 kept
    tied = [_c("A", 50 + i, 50, 50, 1.0 - i / 1000) for i in range(99)]
    tied += [_c("A", 300, 0, 0, 0.2), _c("A", 310, 0, 0, 0.2)]
    assert scan_counts(tied, REFS[:1], scan_ids=["A"])["A"].n_marks_dropped == 2


def test_negative_diameter_means_10_mm() -> None:
    refs = [Finding("A", 0, 0, 0, -1.0)]
    assert scan_counts([_c("A", 4.9, 0, 0, 0.5)], refs, scan_ids=["A"])["A"].n_detected == 1
    assert scan_counts([_c("A", 5.0, 0, 0, 0.5)], refs, scan_ids=["A"])["A"].n_detected == 0


def test_bootstrap_is_seeded_and_collapses_on_identical_scans() -> None:
    refs = [Finding(s, 0, 0, 0, 10) for s in "PQRS"]
    cands = [Candidate(s, 0, 0, 0, 0.9) for s in "PQRS"]
    cands += [Candidate(s, 40, 0, 0, 0.6) for s in "PQRS"]
    r = luna16_cpm(cands, refs, scan_ids=list("PQRS"), bootstrap=1000, seed=3)
    # every resample of identical scans gives the same curve
    assert r.cpm_ci == pytest.approx((r.cpm, r.cpm))
    assert r.sensitivity_at_ci is not None and len(r.sensitivity_at_ci) == 7

    mixed = froc(CANDS, REFS, scan_ids=SCANS, bootstrap=200, seed=7)
    again = froc(CANDS, REFS, scan_ids=SCANS, bootstrap=200, seed=7)
    assert mixed.cpm_ci == again.cpm_ci
    assert mixed.cpm_ci is not None and mixed.cpm_ci[0] <= mixed.cpm_ci[1]


def test_n_scans_instead_of_ids_and_unknown_scans() -> None:
    by_ids = luna16_cpm(CANDS, REFS, scan_ids=SCANS, bootstrap=0)
    by_n = luna16_cpm(CANDS, REFS, n_scans=3, bootstrap=0)
    assert by_n.cpm == pytest.approx(by_ids.cpm)
    with pytest.raises(InputError, match="not in the evaluated scan list"):
        luna16_cpm(CANDS, REFS, scan_ids=["A"], bootstrap=0)
    with pytest.raises(InputError, match="no included finding"):
        luna16_cpm(CANDS, [], scan_ids=SCANS, bootstrap=0)
    with pytest.raises(InputError, match="probability"):
        luna16_cpm([{"scan_id": "A", "x": 0, "y": 0, "z": 0}], REFS, scan_ids=SCANS)


def _monai_cpm(fp_probs: list[float], tp_probs: list[float], n_targets: int, n_scans: int) -> float:
    from monai.metrics import compute_froc_curve_data, compute_froc_score

    fps, sens = compute_froc_curve_data(
        np.asarray(fp_probs), np.asarray(tp_probs), n_targets, n_scans
    )
    return float(compute_froc_score(fps, sens, eval_thresholds=LUNA16_OPERATING_POINTS))


def test_agrees_with_monai_when_definitions_agree() -> None:
    # MONAI's curve skips the lowest threshold; that is harmless when the lowest entry is a
    # missed target (MONAI's 0.0), as here. Matching is ours; the curve and CPM are compared.
    rng = np.random.default_rng(11)
    scans = [f"s{i}" for i in range(7)]
    refs = [Finding(s, 0, 0, 0, 10) for s in scans]
    cands = []
    for i, s in enumerate(scans):
        if i != 3:  # nodule of s3 missed
            cands.append(Candidate(s, 1, 0, 0, float(rng.uniform(0.2, 1.0))))
        cands += [Candidate(s, 30 + k, 0, 0, float(rng.uniform(0.05, 1.0))) for k in range(3)]
    ours = luna16_cpm(cands, refs, scan_ids=scans, bootstrap=0)
    tp = [c.probability for c in cands if c.x == 1] + [0.0]
    fp = [c.probability for c in cands if c.x >= 30]
    assert ours.cpm == pytest.approx(_monai_cpm(fp, tp, 7, 7))


def test_differs_from_monai_when_lowest_probability_is_a_hit() -> None:
    # all nodules found, the lowest probability is a TP: MONAI drops that threshold and never
    # reaches sensitivity 1; LUNA16 (and we) read 1 from 1 FP/scan on.
    refs = [Finding("A", 0, 0, 0, 10)]
    cands = [Candidate("A", 0, 0, 0, 0.2), Candidate("A", 50, 0, 0, 0.9)]
    cands += [Candidate("B", 0, 0, 0, 0.8)]
    ours = luna16_cpm(cands, refs, scan_ids=["A", "B"], bootstrap=0)
    assert ours.sensitivity_at == pytest.approx([0, 0, 0, 1, 1, 1, 1])
    assert ours.cpm == pytest.approx(4 / 7)
    assert _monai_cpm([0.9, 0.8], [0.2], 1, 2) == pytest.approx(0.0)
    # and MONAI's default thresholds are CAMELYON16's six points (no 1/8)
    from monai.metrics import compute_froc_score

    fps, sens = np.asarray(ours.fps)[::-1], np.asarray(ours.sensitivities)[::-1]
    assert compute_froc_score(fps, sens) == pytest.approx(4 / 6)


def test_one_candidate_between_two_nodules_hits_both() -> None:
    refs = [Finding("A", 0, 0, 0, 10), Finding("A", 6, 0, 0, 10)]
    counts = scan_counts([_c("A", 3, 0, 0, 0.7)], refs, scan_ids=["A"])
    assert (counts["A"].n_detected, counts["A"].n_false_positives) == (2, 0)

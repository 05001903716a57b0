"""Tests of the OpenKBP dose and DVH scores on hand-computed dose grids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medarena.errors import InputError
from medarena.evaluation.dose import dose_case, dvh_metrics, openkbp_scores


@pytest.fixture
def roi_dose() -> tuple[np.ndarray, np.ndarray]:
    """A 10x10x1 ROI holding doses 1..100 in shuffled order, inside a 12x12x1 grid."""
    rng = np.random.default_rng(0)
    dose = np.zeros((12, 12, 1))
    dose[1:11, 1:11, 0] = rng.permutation(np.arange(1, 101)).reshape(10, 10)
    mask = np.zeros_like(dose, dtype=bool)
    mask[1:11, 1:11] = True
    return dose, mask


def test_target_dvh_by_hand(roi_dose: tuple[np.ndarray, np.ndarray]) -> None:
    dose, mask = roi_dose
    m = dvh_metrics(dose, mask, is_target=True, voxel_volume_mm3=8.0)
    # linear percentile of 1..100 at q: 1 + 99 q / 100
    assert m == pytest.approx({"D_99": 1.99, "D_95": 5.95, "D_1": 99.01})


def test_oar_d01cc_by_hand(roi_dose: tuple[np.ndarray, np.ndarray]) -> None:
    dose, mask = roi_dose
    # 4 mm^3 voxels: 0.1 cc = 25 voxels -> P(100 - 25/100*100) = P75 = 1 + 99*0.75
    m = dvh_metrics(dose, mask, is_target=False, voxel_volume_mm3=4.0)
    assert m["D_0.1_cc"] == pytest.approx(75.25)
    assert m["mean"] == pytest.approx(50.5)
    # 1000 mm^3 voxels: n = max(1, round(0.1)) = 1 -> P99
    big = dvh_metrics(dose, mask, is_target=False, voxel_volume_mm3=1000.0)
    assert big["D_0.1_cc"] == pytest.approx(99.01)
    # ROI smaller than 0.1 cc: percentile clamps to the minimum instead of crashing
    tiny = dvh_metrics(dose, mask, is_target=False, voxel_volume_mm3=0.5)
    assert tiny["D_0.1_cc"] == pytest.approx(1.0)
    assert dvh_metrics(dose, np.zeros_like(mask), is_target=False, voxel_volume_mm3=1.0) == {}


def test_dose_case_and_dataset_scores(roi_dose: tuple[np.ndarray, np.ndarray]) -> None:
    ref, mask = roi_dose
    pdm = np.zeros_like(mask)
    pdm[:6] = True  # 72 voxels
    pred = ref + 2.0 * pdm  # +2 Gy inside the possible-dose mask only
    pred[11, 11, 0] = 50.0  # outside the mask: ignored by default
    rois = {"PTV70": mask, "Brainstem": mask}
    case = dose_case(
        pred, ref, possible_dose_mask=pdm, rois=rois, targets={"PTV70"}, voxel_volume_mm3=4.0
    )
    assert case["dose_score"] == pytest.approx(2.0)
    literal = dose_case(
        pred,
        ref,
        possible_dose_mask=pdm,
        rois=rois,
        targets={"PTV70"},
        voxel_volume_mm3=4.0,
        score_outside_mask=True,
    )
    assert literal["dose_score"] == pytest.approx((72 * 2 + 50) / 72)
    # the DVH items match a direct computation on the predicted dose
    expected_pred = dvh_metrics(pred, mask, is_target=True, voxel_volume_mm3=4.0)
    expected_ref = dvh_metrics(ref, mask, is_target=True, voxel_volume_mm3=4.0)
    assert case["dvh_error/D_95/PTV70"] == pytest.approx(
        abs(expected_pred["D_95"] - expected_ref["D_95"])
    )
    # ROI rows 1..5 of 1..10 gain 2 Gy: mean rises by exactly 2 * 50/100 = 1
    assert case["dvh_error/mean/Brainstem"] == pytest.approx(1.0)
    errors = [v for k, v in case.items() if k.startswith("dvh_error/")]
    assert len(errors) == 5
    assert case["dvh_score"] == pytest.approx(np.mean(errors))

    # second patient: same error, Brainstem not contoured -> 3 items only
    other = dose_case(
        pred,
        ref,
        possible_dose_mask=pdm,
        rois={"PTV70": mask},
        targets={"PTV70"},
        voxel_volume_mm3=4.0,
    )
    agg = openkbp_scores([case, other])
    assert agg["dose_score"] == pytest.approx(2.0)
    # nanmean over all 8 items, not the mean of the two patients' DVH scores
    items = errors + [v for k, v in other.items() if k.startswith("dvh_error/")]
    assert agg["n_dvh_items"] == 8
    assert agg["dvh_score"] == pytest.approx(np.mean(items))
    assert agg["dvh_score"] != pytest.approx((case["dvh_score"] + other["dvh_score"]) / 2)


def test_no_roi_gives_nan_dvh_and_bad_input_raises() -> None:
    ref = np.ones((4, 4, 4))
    pdm = np.ones_like(ref, dtype=bool)
    case = dose_case(ref, ref, possible_dose_mask=pdm, rois={}, targets=set(), voxel_volume_mm3=1)
    assert case["dose_score"] == 0.0 and math.isnan(case["dvh_score"])
    with pytest.raises(InputError, match="one grid"):
        dose_case(ref[:2], ref, possible_dose_mask=pdm, rois={}, targets=set(), voxel_volume_mm3=1)
    with pytest.raises(InputError, match="empty"):
        dose_case(ref, ref, possible_dose_mask=~pdm, rois={}, targets=set(), voxel_volume_mm3=1)
    nan_dose = ref.copy()
    nan_dose[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="finite"):
        dose_case(nan_dose, ref, possible_dose_mask=pdm, rois={}, targets=set(), voxel_volume_mm3=1)

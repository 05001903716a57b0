"""BraTS region scoring and 2023 lesion-wise metrics on crafted volumes computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from medarena.errors import InputError
from medarena.evaluation.brats import brats_case, lesion_wise_scores

SP = (1.0, 1.0, 1.0)


def crafted() -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """GT: L1, L2 (4³ cubes, 4-voxel gap), L3 small (3³ = 27 voxels), L4 (4³, missed).
    Prediction: P1 = L1, P3 = L3, P4 = a 2³ false positive far from everything."""
    gt = np.zeros((40, 40, 40), bool)
    gt[5:9, 5:9, 5:9] = True  # L1
    gt[5:9, 5:9, 13:17] = True  # L2: gap z=9..12 (4 voxels) <= 2*3, > 2*1
    gt[25:28, 5:8, 5:8] = True  # L3: 27 mm³
    gt[25:29, 25:29, 25:29] = True  # L4
    pred = np.zeros_like(gt)
    pred[5:9, 5:9, 5:9] = True  # P1
    pred[25:28, 5:8, 5:8] = True  # P3
    pred[32:34, 5:7, 32:34] = True  # P4 (FP)
    return pred, gt


def test_gli_merges_close_lesions_drops_small_counts_fp_and_miss() -> None:
    pred, gt = crafted()
    r = lesion_wise_scores(pred, gt, SP, dilation=3, volume_threshold_mm3=50)
    # kept lesions: L1+L2 merged (128 voxels), L4; L3 (27 <= 50) dropped, P3 matched it so it
    # is no FP; P4 is one FP. Merged lesion vs P1: Dice 2*64/(64+128) = 2/3; HD95 (surfels):
    # the L2 half of the GT surface lies 4..8 mm from P1, the top layer (z=17, 8 mm) starts
    # at cumulative area share 0.887 < 0.95, so HD95 = 8.
    assert r["lesion_tp"] == 1 and r["lesion_fn"] == 1 and r["lesion_fp"] == 1
    assert r["lesion_dice"] == pytest.approx((2 / 3 + 0) / 3)
    assert r["lesion_hd95"] == pytest.approx((8 + 374 + 374) / 3)


def test_men_dilation_one_keeps_lesions_apart() -> None:
    pred, gt = crafted()
    r = lesion_wise_scores(pred, gt, SP, dilation=1, volume_threshold_mm3=50)
    # L1 (P1 exact: Dice 1, HD95 0), L2 missed, L4 missed, L3 dropped, 1 FP -> 4 in total
    assert (r["lesion_tp"], r["lesion_fn"], r["lesion_fp"]) == (1, 2, 1)
    assert r["lesion_dice"] == pytest.approx(1 / 4)
    assert r["lesion_hd95"] == pytest.approx(3 * 374 / 4)


def test_met_threshold_keeps_small_lesion() -> None:
    pred, gt = crafted()
    r = lesion_wise_scores(pred, gt, SP, dilation=1, volume_threshold_mm3=2)
    # L1 1/0, L2 0/374, L3 1/0 (kept now), L4 0/374, FP 374 -> 5 in total
    assert r["lesion_dice"] == pytest.approx(2 / 5)
    assert r["lesion_hd95"] == pytest.approx(3 * 374 / 5)


def test_threshold_is_in_mm3() -> None:
    pred, gt = crafted()
    # with 2 mm³ voxels L3 has 54 mm³ > 50 and is kept (and matched exactly by P3)
    r = lesion_wise_scores(pred, gt, (1.0, 1.0, 2.0), dilation=1, volume_threshold_mm3=50)
    assert r["lesion_tp"] == 2 and r["lesion_fn"] == 2


def test_empty_cases() -> None:
    z = np.zeros((20, 20, 20), bool)
    blob = z.copy()
    blob[5:8, 5:8, 5:8] = True
    both = lesion_wise_scores(z, z, SP, dilation=3, volume_threshold_mm3=50)
    assert both["lesion_dice"] == 1.0 and both["lesion_hd95"] == 0.0
    fp_only = lesion_wise_scores(blob, z, SP, dilation=3, volume_threshold_mm3=50)
    assert fp_only["lesion_dice"] == 0.0 and fp_only["lesion_hd95"] == 374.0
    # a missed GT lesion that is too small to count -> 0/0 again
    small_miss = lesion_wise_scores(z, blob, SP, dilation=3, volume_threshold_mm3=50)
    assert small_miss["lesion_dice"] == 1.0 and small_miss["lesion_fp"] == 0


def test_brats_case_regions_2023_and_legacy_conventions() -> None:
    pred_b, gt_b = crafted()
    ref = np.zeros((40, 40, 40), np.uint8)
    ref[gt_b] = 3  # everything enhancing: WT = TC = ET
    pred = np.zeros_like(ref)
    pred[pred_b] = 3
    out = brats_case(pred, ref, SP, labels="2023", subchallenge="GLI")
    for region in ("WT", "TC", "ET"):
        assert out[f"{region}/lesion_dice"] == pytest.approx(2 / 9)
        assert out[f"{region}/lesion_hd95"] == pytest.approx(252.0)
        # legacy Dice over the whole region: TP 64 + 27, |pred| 64 + 27 + 8, |gt| 64*3 + 27
        assert out[f"{region}/dice"] == pytest.approx(2 * 91 / (99 + 219))
    assert set(out) == {
        f"{r}/{m}"
        for r in ("WT", "TC", "ET")
        for m in (
            "dice",
            "hd95",
            "lesion_dice",
            "lesion_hd95",
            "lesion_tp",
            "lesion_fn",
            "lesion_fp",
        )
    }


def test_brats_case_empty_region_conventions_2021_labels() -> None:
    ref = np.zeros((30, 30, 30), np.uint8)
    ref[10:20, 10:20, 10:20] = 2  # edema only: TC and ET empty in the reference
    pred = ref.copy()
    out = brats_case(pred, ref, SP, labels="2021", lesion_wise=False)
    assert out["WT/dice"] == 1.0 and out["WT/hd95"] == 0.0
    assert out["ET/dice"] == 1.0 and out["ET/hd95"] == 0.0  # both empty
    pred[12:14, 12:14, 12:14] = 4  # an ET false positive
    out = brats_case(pred, ref, SP, labels="2021")
    assert out["ET/dice"] == 0.0 and out["ET/hd95"] == 374.0
    assert out["ET/lesion_fp"] == 1 and out["ET/lesion_hd95"] == 374.0
    assert out["TC/dice"] == 0.0  # TC = {1, 4}


def test_brats_case_rejects_wrong_label_convention() -> None:
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:4, 2:4, 2:4] = 4
    with pytest.raises(InputError, match="labels must be among"):
        brats_case(ref, ref, SP, labels="2023")
    nan = ref.astype(np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        brats_case(nan, ref, SP, labels="2021")
    with pytest.raises(InputError, match="sub-challenge"):
        brats_case(ref, ref, SP, labels="2021", subchallenge="XYZ")

"""autoPET Dice, false-positive and false-negative volumes on a crafted case computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from medarena.errors import InputError
from medarena.evaluation.autopet import autopet_case

SP = (2.0, 2.0, 3.0)  # 12 mm³ = 0.012 ml per voxel


def crafted() -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    ref = np.zeros((20, 20, 20), np.uint8)
    ref[2:5, 2:5, 2:5] = 1  # A: 27 voxels, found
    ref[10:12, 10:12, 10:12] = 1  # B: 8 voxels, missed -> FN
    ref[15:17, 2:4, 2:4] = 1  # C: 8 voxels, hit by one voxel
    pred = np.zeros_like(ref)
    pred[3:6, 2:5, 2:5] = 1  # P1: 27 voxels, 18 inside A
    pred[2:4, 12:14, 16:17] = 1  # P2: 4 voxels far away -> FP
    pred[15, 2, 2] = 1  # X: inside C
    # Y touches X only at a vertex: a separate 18-connected component with no overlap -> FP
    pred[14, 1, 1] = 1
    return pred, ref


def test_crafted_case_by_hand() -> None:
    pred, ref = crafted()
    out = autopet_case(pred, ref, SP)
    assert out["negative"] == 0.0
    assert out["dice"] == pytest.approx(2 * 19 / (33 + 43))
    assert out["fpv_ml"] == pytest.approx((4 + 1) * 0.012)
    assert out["fnv_ml"] == pytest.approx(8 * 0.012)


def test_negative_case_counts_only_fpv_by_default() -> None:
    pred, ref = crafted()
    empty = np.zeros_like(ref)
    out = autopet_case(pred, empty, SP)
    assert out == {"fpv_ml": pytest.approx(33 * 0.012), "negative": 1.0}
    full = autopet_case(pred, empty, SP, negative="all")
    assert full["dice"] == 0.0 and full["fnv_ml"] == 0.0
    clean = autopet_case(empty, empty, SP, negative="all")
    assert clean == {"fpv_ml": 0.0, "negative": 1.0, "dice": 1.0, "fnv_ml": 0.0}


def test_missed_everything() -> None:
    _, ref = crafted()
    out = autopet_case(np.zeros_like(ref), ref, SP)
    assert out["dice"] == 0.0 and out["fpv_ml"] == 0.0
    assert out["fnv_ml"] == pytest.approx(43 * 0.012)


def test_bad_input() -> None:
    with pytest.raises(InputError, match="3D masks"):
        autopet_case(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), SP)
    with pytest.raises(InputError, match="spacing"):
        autopet_case(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1.0, -1.0, 1.0))
    nan = np.zeros((4, 4, 4))
    nan[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        autopet_case(nan, np.zeros((4, 4, 4)), (1.0, 1.0, 1.0))

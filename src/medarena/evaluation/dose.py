"""Radiotherapy dose-prediction metrics as defined by the OpenKBP challenge (2020).

Definitions follow ``provided_code/dose_evaluation_class.py`` of ababier/open-kbp (after the
D0.1cc correction of 2020-03-22); see docs/metrics-tasks.md.

- DVH metrics (``numpy.percentile``, linear interpolation) of the dose inside an ROI:
  targets D_99 = P1, D_95 = P5, D_1 = P99; organs at risk (every ROI not named a target)
  D_0.1_cc = P(100 - n / roi_size * 100) with n = max(1, round(100 mm^3 / voxel volume)),
  and mean dose.
- Dose score of a patient = sum |ref - pred| over the possible-dose mask / mask voxel count
  (``score_outside_mask=True`` sums over all voxels as the literal OpenKBP code does, which
  only differs when the prediction is non-zero outside the mask).
- DVH score of a patient = mean over (metric, ROI) of |DVH_ref - DVH_pred|; an ROI that is
  absent (not given or empty) has no items.
- Dataset scores (:func:`openkbp_scores`): dose score = mean over patients; DVH score =
  nanmean over all (patient, metric, ROI) items, i.e. every item weighs the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from medarena.errors import InputError

TARGET_METRICS = ("D_99", "D_95", "D_1")
OAR_METRICS = ("D_0.1_cc", "mean")
OPENKBP_TARGETS = frozenset({"PTV56", "PTV63", "PTV70"})
OPENKBP_OARS = (
    "Brainstem",
    "SpinalCord",
    "RightParotid",
    "LeftParotid",
    "Esophagus",
    "Larynx",
    "Mandible",
)

_TARGET_PERCENTILES = {"D_99": 1.0, "D_95": 5.0, "D_1": 99.0}


def dvh_metrics(
    dose: ArrayLike, roi_mask: ArrayLike, *, is_target: bool, voxel_volume_mm3: float
) -> dict[str, float]:
    """OpenKBP DVH metrics of one ROI: D_99/D_95/D_1 for a target, D_0.1_cc/mean for an OAR.

    An empty ROI returns {} (the ROI is absent). When the ROI holds fewer voxels than 0.1 cc
    OpenKBP's percentile would be negative and numpy would raise; we clamp it to 0 (the
    minimum dose), the closest defined value.
    """
    d = np.asarray(dose, dtype=np.float64)
    m = np.asarray(roi_mask).astype(bool)
    if m.shape != d.shape:
        raise InputError("ROI mask must have the dose grid's shape", value=(m.shape, d.shape))
    if not voxel_volume_mm3 > 0:
        raise InputError("voxel volume must be positive (mm^3)", value=voxel_volume_mm3)
    roi_dose = d[m]
    if roi_dose.size == 0:
        return {}
    if is_target:
        return {k: float(np.percentile(roi_dose, q)) for k, q in _TARGET_PERCENTILES.items()}
    n_tenth_cc = max(1.0, float(np.round(100.0 / voxel_volume_mm3)))
    q = max(0.0, 100.0 - n_tenth_cc / roi_dose.size * 100.0)
    return {"D_0.1_cc": float(np.percentile(roi_dose, q)), "mean": float(roi_dose.mean())}


def _grid(name: str, arr: ArrayLike) -> NDArray[np.float64]:
    a = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} must contain only finite values", value="NaN or inf")
    return a


def dose_case(
    pred_dose: ArrayLike,
    ref_dose: ArrayLike,
    *,
    possible_dose_mask: ArrayLike,
    rois: Mapping[str, ArrayLike],
    targets: Iterable[str],
    voxel_volume_mm3: float,
    score_outside_mask: bool = False,
) -> dict[str, float]:
    """OpenKBP dose score, DVH score and per-ROI DVH values of one patient.

    Keys: ``dose_score``, ``dvh_score`` (NaN if no ROI is present), and per present ROI and
    metric ``dvh_error/<metric>/<roi>`` (absolute difference), ``dvh_ref/<metric>/<roi>``,
    ``dvh_pred/<metric>/<roi>``. ROIs named in ``targets`` get target metrics, all others
    OAR metrics.
    """
    p = _grid("predicted dose", pred_dose)
    r = _grid("reference dose", ref_dose)
    if p.shape != r.shape:
        raise InputError(
            "predicted and reference dose must share one grid", value=(p.shape, r.shape)
        )
    pdm = np.asarray(possible_dose_mask).astype(bool)
    if pdm.shape != r.shape:
        raise InputError("possible-dose mask must have the dose grid's shape", value=pdm.shape)
    if not pdm.any():
        raise InputError("possible-dose mask is empty: the dose score is undefined", value=0)
    target_set = set(targets)
    absdiff = np.abs(r - p)
    numerator = absdiff.sum() if score_outside_mask else absdiff[pdm].sum()
    out: dict[str, float] = {"dose_score": float(numerator / pdm.sum())}
    errors: list[float] = []
    for roi, mask in rois.items():
        is_target = roi in target_set
        ref_m = dvh_metrics(r, mask, is_target=is_target, voxel_volume_mm3=voxel_volume_mm3)
        pred_m = dvh_metrics(p, mask, is_target=is_target, voxel_volume_mm3=voxel_volume_mm3)
        for metric, ref_value in ref_m.items():
            err = abs(ref_value - pred_m[metric])
            errors.append(err)
            out[f"dvh_error/{metric}/{roi}"] = err
            out[f"dvh_ref/{metric}/{roi}"] = ref_value
            out[f"dvh_pred/{metric}/{roi}"] = pred_m[metric]
    out["dvh_score"] = float(np.mean(errors)) if errors else math.nan
    return out


def openkbp_scores(cases: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Dataset-level OpenKBP scores from :func:`dose_case` results.

    dose_score = mean of the patients' dose scores; dvh_score = nanmean of every
    ``dvh_error/*`` item of every patient (OpenKBP's nanmean over its patient x (metric, ROI)
    table, where absent ROIs are NaN).
    """
    dose_scores: list[float] = []
    items: list[float] = []
    for case in cases:
        dose_scores.append(case["dose_score"])
        items.extend(v for k, v in case.items() if k.startswith("dvh_error/"))
    if not dose_scores:
        raise InputError("no cases to aggregate", value=0)
    finite = [v for v in items if not math.isnan(v)]
    return {
        "dose_score": float(np.mean(dose_scores)),
        "dvh_score": float(np.mean(finite)) if finite else math.nan,
        "n_cases": float(len(dose_scores)),
        "n_dvh_items": float(len(finite)),
    }

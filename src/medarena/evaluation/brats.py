"""BraTS scoring: region Dice/HD95 (2017-2021 and 2023 labels) and BraTS 2023 lesion-wise metrics.

Regions (docs/metrics.md, "BraTS"): labels 2017-2021 1 NCR/NET, 2 ED, 4 ET; labels 2023
1 NETC, 2 SNFH, 3 ET. WT = all tumour labels, TC = necrosis + ET, ET = ET.

Legacy per-region scores: Dice, and HD95 (DeepMind area-weighted, as the BraTS 2023 code;
configurable) with BraTS empty conventions: both empty -> Dice 1, HD95 0; one empty ->
Dice 0, HD95 374 mm.

Lesion-wise scores follow rachitsaluja/BraTS-2023-Metrics ``metrics.py`` (reference §2.3):
26-connected components; GT components merged when their ``dil``-times dilated (26-structure)
masks touch; each merged GT lesion is matched to every predicted component that intersects its
own dilation; lesion Dice/HD95 are computed between the union of those components and the
undilated lesion (no match: Dice 0, HD95 374); GT lesions of volume <= threshold mm³ are
dropped after matching; predicted components matching no GT lesion count once each as FP;
lesion Dice = Σ Dice / (kept lesions + FP), lesion HD95 = (Σ HD95 + 374·FP) / (kept + FP),
0/0 -> Dice 1, HD95 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import cc3d
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from medarena.errors import InputError
from medarena.evaluation.policy import BRATS_POLICY, EmptyCase
from medarena.evaluation.segmentation import (
    HD95Variant,
    check_finite,
    check_spacing,
    hd95_from,
    per_region,
    union_box,
)
from medarena.evaluation.surface import (
    Representation,
    SurfacePair,
    point_labels,
    sub_pair_distances,
    surface_pair,
)

logger = logging.getLogger(__name__)

BRATS_PENALTY_MM = 374.0

#: region -> labels, per label convention.
BRATS_REGIONS: dict[str, dict[str, tuple[int, ...]]] = {
    "2021": {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
    "2023": {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
}

#: sub-challenge -> (dilation iterations, GT lesion volume threshold in mm³), BraTS 2023.
LESION_PARAMS: dict[str, tuple[int, float]] = {
    "GLI": (3, 50.0),
    "SSA": (3, 50.0),
    "PED": (3, 50.0),
    "MEN": (1, 50.0),
    "MET": (1, 2.0),
}

_STRUCT26 = ndi.generate_binary_structure(3, 2)


def _check_labels(arr: NDArray[Any], allowed: tuple[int, ...], side: str) -> None:
    check_finite(arr, side)
    box = union_box(arr, arr)
    if box is None:
        return
    present = {int(v) for v in np.unique(arr[box])}
    bad = sorted(present - set(allowed) - {0})
    if bad or np.any(arr[box] != np.round(arr[box])):
        raise InputError(
            f"{side} labels must be among {sorted({0, *allowed})} for this BraTS label convention",
            value=bad or "non-integer values",
            hint="use labels='2021' for (1, 2, 4) or labels='2023' for (1, 2, 3)",
        )


def lesion_wise_scores(
    pred: NDArray[np.bool_],
    ref: NDArray[np.bool_],
    spacing: Sequence[float],
    *,
    dilation: int,
    volume_threshold_mm3: float,
    penalty_mm: float = BRATS_PENALTY_MM,
    hd95_variant: HD95Variant = "surface_area",
) -> dict[str, float]:
    """BraTS 2023 lesion-wise Dice and HD95 of one binary 3D region.

    Returns ``lesion_dice``, ``lesion_hd95``, ``lesion_tp`` (kept GT lesions with a match),
    ``lesion_fn`` (kept GT lesions without) and ``lesion_fp`` (unmatched predicted
    components). Algorithm in the module docstring.
    """
    return _lesion_wise(
        pred, ref, spacing, dilation, volume_threshold_mm3, penalty_mm, hd95_variant
    )[0]


def _lesion_wise(
    pred: NDArray[np.bool_],
    ref: NDArray[np.bool_],
    spacing: Sequence[float],
    dilation: int,
    volume_threshold_mm3: float,
    penalty_mm: float,
    hd95_variant: HD95Variant,
) -> tuple[dict[str, float], dict[str, float]]:
    """Lesion-wise scores and the whole region's legacy ``dice``/``hd95`` (BraTS policy).

    The surfaces of the whole region pair are computed once; every lesion pair (a union of
    predicted components against a merged GT lesion, both unions of 26-connected
    components) takes its distances from them (:func:`sub_pair_distances`, exact).
    """
    sp = check_spacing(spacing, 3)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise InputError("lesion-wise scoring needs two 3D masks of one shape", value=pred.shape)
    voxel_mm3 = float(np.prod(sp))
    # everything (components, dilations) lives within `dilation` voxels of the union's box;
    # cropping there (clipped to the image, as the full-image dilation is) is exact
    box = union_box(pred, ref, margin=dilation)
    if box is None:
        return _lesion_summary([], 0, penalty_mm), _region_scores(pred, ref, sp, None, None)
    full_shape = pred.shape
    pred, ref = pred[box], ref[box]
    rep: Representation = "surfel" if hd95_variant == "surface_area" else "border"
    pair = surface_pair(pred, ref, sp, rep) if pred.any() and ref.any() else None
    region = _region_scores(pred, ref, sp, pair, hd95_variant, full_shape)
    if pair is None and not ref.any():
        n_fp = int(cc3d.connected_components(pred, connectivity=26).max()) if pred.any() else 0
        return _lesion_summary([], n_fp, penalty_mm), region
    pred_cc = cc3d.connected_components(pred, connectivity=26)
    ref_cc = cc3d.connected_components(ref, connectivity=26)
    dilated_cc = cc3d.connected_components(
        ndi.binary_dilation(ref, _STRUCT26, iterations=dilation), connectivity=26
    )
    # a GT lesion = GT voxels sharing one component of the dilated GT
    merged = np.where(ref_cc > 0, dilated_cc, 0)
    if pair is not None:
        pred_point_cc = point_labels(pair.pred_pts, pred_cc, rep)
        ref_point_lesion = point_labels(pair.ref_pts, merged, rep)
    lesions: list[tuple[float, float, float, bool]] = []  # (volume, dice, hd95, matched)
    matched_pred: set[int] = set()
    for label, sl in enumerate(ndi.find_objects(merged), start=1):
        if sl is None:
            continue
        # the lesion's own dilation reaches at most `dilation` voxels beyond its box
        grown = tuple(
            slice(max(s.start - dilation, 0), min(s.stop + dilation, n))
            for s, n in zip(sl, merged.shape, strict=True)
        )
        lesion = merged[grown] == label
        # the lesion's own dilation is its component of the dilated GT: dilation distributes
        # over the GT components, and each one's dilation is connected to it, so no second
        # dilation is needed
        hits = np.unique(pred_cc[grown][dilated_cc[grown] == label])
        hits = hits[hits != 0]
        matched_pred.update(int(h) for h in hits)
        n_lesion = int(np.count_nonzero(lesion))
        volume = float(n_lesion) * voxel_mm3
        if hits.size == 0 or pair is None:
            lesions.append((volume, 0.0, penalty_mm, False))
            continue
        pred_full = np.isin(pred_cc, hits)
        n_pred_full = int(np.count_nonzero(pred_full))
        overlap = int(np.count_nonzero(pred_full[grown] & lesion))
        dice = 2.0 * overlap / (n_pred_full + n_lesion)
        sd = sub_pair_distances(pair, np.isin(pred_point_cc, hits), ref_point_lesion == label)
        lesions.append((volume, dice, hd95_from(sd, hd95_variant), True))
    n_pred = int(pred_cc.max())
    n_fp = n_pred - len(matched_pred)
    kept = [les for les in lesions if les[0] > volume_threshold_mm3]
    return _lesion_summary(kept, n_fp, penalty_mm), region


def _region_scores(
    pred: NDArray[np.bool_],
    ref: NDArray[np.bool_],
    sp: tuple[float, ...],
    pair: SurfacePair | None,
    hd95_variant: HD95Variant | None,
    full_shape: tuple[int, ...] | None = None,
) -> dict[str, float]:
    """Legacy Dice and HD95 of a whole region with the BraTS empty-mask conventions."""
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    shape = full_shape or pred.shape
    if pair is None or hd95_variant is None:
        case: EmptyCase = (
            "both_empty" if n_pred == n_ref == 0 else ("ref_empty" if n_ref == 0 else "pred_empty")
        )
        return {m: BRATS_POLICY.value(m, case, shape, sp) for m in ("dice", "hd95")}
    tp = int(np.count_nonzero(pred & ref))
    return {"dice": 2.0 * tp / (n_pred + n_ref), "hd95": hd95_from(pair.distances(), hd95_variant)}


def _lesion_summary(
    kept: list[tuple[float, float, float, bool]], n_fp: int, penalty_mm: float
) -> dict[str, float]:
    n = len(kept) + n_fp
    tp = sum(1 for les in kept if les[3])
    if n == 0:
        ldice, lhd95 = 1.0, 0.0
    else:
        ldice = sum(les[1] for les in kept) / n
        lhd95 = (sum(les[2] for les in kept) + penalty_mm * n_fp) / n
    return {
        "lesion_dice": ldice,
        "lesion_hd95": lhd95,
        "lesion_tp": float(tp),
        "lesion_fn": float(len(kept) - tp),
        "lesion_fp": float(n_fp),
    }


def brats_case(
    pred: NDArray[Any],
    ref: NDArray[Any],
    spacing: Sequence[float],
    *,
    labels: Literal["2021", "2023"] = "2023",
    subchallenge: str = "GLI",
    lesion_wise: bool = True,
    hd95_variant: HD95Variant = "surface_area",
) -> dict[str, float]:
    """Score one BraTS case: keys ``"<region>/<metric>"`` for regions WT, TC, ET.

    ``pred``/``ref`` are 3D label maps (``labels`` convention "2021": 1, 2, 4 or "2023":
    1, 2, 3), ``spacing`` in mm in array-axis order. Always ``dice`` and ``hd95`` (legacy,
    full region); with ``lesion_wise`` also ``lesion_dice``, ``lesion_hd95``, ``lesion_tp``,
    ``lesion_fn`` and ``lesion_fp`` with the ``subchallenge`` parameters (GLI, SSA, PED,
    MEN, MET). Raises InputError on unexpected labels, shapes or spacing.
    """
    if labels not in BRATS_REGIONS:
        raise InputError("BraTS labels must be '2021' or '2023'", value=labels)
    if subchallenge not in LESION_PARAMS:
        raise InputError(
            f"BraTS sub-challenge must be one of {', '.join(LESION_PARAMS)}", value=subchallenge
        )
    if pred.shape != ref.shape or pred.ndim != 3:
        raise InputError(
            f"BraTS needs two 3D label maps of one shape, got {pred.shape} and {ref.shape}"
        )
    regions = BRATS_REGIONS[labels]
    allowed = regions["WT"]
    _check_labels(pred, allowed, "prediction")
    _check_labels(ref, allowed, "reference")
    if not lesion_wise:
        return per_region(
            pred,
            ref,
            spacing,
            regions,
            metrics=("dice", "hd95"),
            hd95_variant=hd95_variant,
            empty=BRATS_POLICY,
        )
    out: dict[str, float] = {}
    dilation, threshold = LESION_PARAMS[subchallenge]
    box = union_box(pred, ref, margin=dilation)
    for name, labs in regions.items():
        if box is None:
            p = r = np.zeros((1, 1, 1), bool)
        else:
            p, r = np.isin(pred[box], labs), np.isin(ref[box], labs)
        # the legacy region scores come from the same surfaces as the lesion-wise ones
        lesion, region = _lesion_wise(
            p, r, spacing, dilation, threshold, BRATS_PENALTY_MM, hd95_variant
        )
        out.update({f"{name}/{k}": v for k, v in region.items()})
        out.update({f"{name}/{k}": v for k, v in lesion.items()})
    return out

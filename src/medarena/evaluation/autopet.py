"""autoPET scoring: whole-volume Dice, false-positive and false-negative volume in ml.

Follows lab-midas/autoPET ``val_script.py`` (docs/metrics.md, "autoPET"):

- Dice = 2·Σ(gt·pred) / (Σgt + Σpred) over the whole volume;
- FPV = volume of predicted 18-connected components that do not overlap the reference;
- FNV = volume of reference 18-connected components that do not overlap the prediction;
- voxel volume in ml = product of the spacing in mm / 1000.

Negative cases (no lesion in the reference): the official Dice is 0/0 and the challenge
uses only FPV there. By default (``negative="fpv_only"``) such a case reports ``fpv_ml``
and ``negative = 1`` but no ``dice`` and no ``fnv_ml``, so per-metric means run over
positive cases only, as the challenge does. ``negative="all"`` also reports Dice by the
empty-mask policy (empty prediction 1, any false positive 0) and FNV 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import cc3d
import numpy as np
from numpy.typing import NDArray

from medarena.errors import InputError
from medarena.evaluation.policy import EmptyCase, EmptyPolicy
from medarena.evaluation.segmentation import bounding_box, check_finite, check_spacing


def _unmatched_volume(mask: NDArray[np.bool_], other: NDArray[np.bool_]) -> int:
    """Voxels of the 18-connected components of ``mask`` that do not touch ``other``."""
    if not mask.any():
        return 0
    cc = cc3d.connected_components(mask, connectivity=18)
    sizes = np.bincount(cc.ravel())
    hit = np.unique(cc[other & mask])
    sizes[hit] = 0
    sizes[0] = 0
    return int(sizes.sum())


def autopet_case(
    pred: NDArray[Any],
    ref: NDArray[Any],
    spacing: Sequence[float],
    *,
    negative: Literal["fpv_only", "all"] = "fpv_only",
    empty: EmptyPolicy | None = None,
) -> dict[str, float]:
    """Score one autoPET case: ``dice``, ``fpv_ml``, ``fnv_ml`` and ``negative`` (0 or 1).

    ``pred``/``ref`` are 3D masks (non-zero = lesion) and ``spacing`` the voxel size in mm.
    Negative cases are handled per ``negative`` (module docstring); ``empty`` sets the Dice
    of negative cases under ``negative="all"``. Raises InputError on mismatched shapes or
    bad spacing.
    """
    if pred.shape != ref.shape or pred.ndim != 3:
        raise InputError(
            f"autoPET needs two 3D masks of one shape, got {pred.shape} and {ref.shape}"
        )
    if negative not in ("fpv_only", "all"):
        raise InputError("negative must be 'fpv_only' or 'all'", value=negative)
    sp = check_spacing(spacing, 3)
    check_finite(pred, "prediction")
    check_finite(ref, "reference")
    voxel_ml = float(np.prod(sp)) / 1000.0
    p = np.asarray(pred) != 0
    r = np.asarray(ref) != 0
    box = bounding_box(p | r)  # components never leave the union's box: cropping is exact
    if box is not None:
        p, r = p[box], r[box]
    n_pred, n_ref = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    fpv = _unmatched_volume(p, r) * voxel_ml
    if n_ref == 0:
        out = {"fpv_ml": fpv, "negative": 1.0}
        if negative == "all":
            policy = empty if empty is not None else EmptyPolicy()
            case: EmptyCase = "both_empty" if n_pred == 0 else "ref_empty"
            out["dice"] = policy.value("dice", case, pred.shape, sp)
            out["fnv_ml"] = 0.0
        return out
    tp = int(np.count_nonzero(p & r))
    return {
        "dice": 2.0 * tp / (n_pred + n_ref),
        "fpv_ml": fpv,
        "fnv_ml": _unmatched_volume(r, p) * voxel_ml,
        "negative": 0.0,
    }

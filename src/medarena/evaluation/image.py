"""Image-to-image metrics (denoising, reconstruction, synthesis): PSNR, SSIM, NMSE, MAE, RMSE.

Conventions (fastMRI ``fastmri/evaluate.py`` by default; see docs/metrics-tasks.md):
- data range: ``"ref_max"`` = maximum of the whole reference volume (fastMRI), ``"ref_range"``
  = max - min of the reference, or an explicit positive number (e.g. a fixed HU window for
  CT, which a challenge must publish).
- PSNR = 10 log10(data_range^2 / MSE) over the whole volume; +inf when pred == ref.
- SSIM = mean over 2-D slices taken along ``slice_axis`` of ``skimage.metrics.
  structural_similarity`` with that data range and skimage defaults (7x7 uniform window,
  K1 = 0.01, K2 = 0.03, sample covariance). A 2-D image is one slice. fastMRI volumes are
  stored (slice, H, W): pass ``slice_axis=0`` to reproduce fastMRI exactly.
- NMSE = ||ref - pred||^2 / ||ref||^2 over the whole volume.
- MAE and RMSE are taken inside ``mask`` when one is given (otherwise over all voxels);
  PSNR, SSIM and NMSE always use the whole volume, as fastMRI does.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from skimage.metrics import structural_similarity

from medarena.errors import InputError

DataRange = float | Literal["ref_max", "ref_range"]


def _checked(pred: ArrayLike, ref: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape:
        raise InputError(
            "prediction and reference must have the same shape", value=(p.shape, r.shape)
        )
    if p.ndim not in (2, 3):
        raise InputError("images must be 2-D or 3-D", value=p.shape)
    for name, arr in (("prediction", p), ("reference", r)):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} must contain only finite values", value="NaN or inf")
    return p, r


def resolve_data_range(ref: NDArray[np.float64], data_range: DataRange) -> float:
    """Turn a data-range setting into a positive number for this reference volume."""
    if data_range == "ref_max":
        value = float(ref.max())
    elif data_range == "ref_range":
        value = float(ref.max() - ref.min())
    elif isinstance(data_range, int | float) and not isinstance(data_range, bool):
        value = float(data_range)
    else:
        raise InputError("data_range must be a number, 'ref_max' or 'ref_range'", value=data_range)
    if not value > 0:
        raise InputError(
            "data range must be positive",
            value=value,
            hint="a reference that is all zeros (or constant) needs an explicit data_range",
        )
    return value


def psnr(pred: ArrayLike, ref: ArrayLike, *, data_range: DataRange = "ref_max") -> float:
    """Peak signal-to-noise ratio in dB over the whole volume."""
    p, r = _checked(pred, ref)
    dr = resolve_data_range(r, data_range)
    mse = float(np.mean((p - r) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(dr**2 / mse)


def ssim(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: DataRange = "ref_max",
    slice_axis: int = -1,
) -> float:
    """Mean 2-D SSIM over slices along ``slice_axis`` (one data range for the whole volume)."""
    p, r = _checked(pred, ref)
    dr = resolve_data_range(r, data_range)
    if p.ndim == 2:
        p_sl, r_sl = p[None], r[None]
    else:
        p_sl, r_sl = np.moveaxis(p, slice_axis, 0), np.moveaxis(r, slice_axis, 0)
    if min(p_sl.shape[1:]) < 7:
        raise InputError(
            "SSIM needs slices of at least 7x7 pixels (skimage default window)",
            value=p_sl.shape[1:],
            hint="check slice_axis",
        )
    values = [
        structural_similarity(r2, p2, data_range=dr) for r2, p2 in zip(r_sl, p_sl, strict=True)
    ]
    return float(np.mean(values))


def nmse(pred: ArrayLike, ref: ArrayLike) -> float:
    """Normalised MSE ||ref - pred||^2 / ||ref||^2; NaN when the reference is all zeros."""
    p, r = _checked(pred, ref)
    denom = float(np.sum(r**2))
    if denom == 0.0:
        return math.nan
    return float(np.sum((r - p) ** 2)) / denom


def image_metrics(
    pred: ArrayLike,
    ref: ArrayLike,
    *,
    data_range: DataRange = "ref_max",
    mask: ArrayLike | None = None,
    slice_axis: int = -1,
) -> dict[str, float]:
    """PSNR, SSIM, NMSE (whole volume) and MAE, RMSE (inside ``mask`` if given) of one case.

    Raises InputError on a shape mismatch, NaN/inf values, a non-positive data range, an
    empty or mis-shaped mask.
    """
    p, r = _checked(pred, ref)
    dr = resolve_data_range(r, data_range)
    if mask is None:
        inside = np.ones(p.shape, dtype=bool)
    else:
        inside = np.asarray(mask).astype(bool)
        if inside.shape != p.shape:
            raise InputError("mask must have the image's shape", value=(inside.shape, p.shape))
        if not inside.any():
            raise InputError("mask is empty: MAE/RMSE are undefined", value=0)
    diff = (p - r)[inside]
    return {
        "psnr": psnr(p, r, data_range=dr),
        "ssim": ssim(p, r, data_range=dr, slice_axis=slice_axis),
        "nmse": nmse(p, r),
        "mae": float(np.mean(np.abs(diff))),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "data_range": dr,
    }

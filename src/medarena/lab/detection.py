"""Detection through heatmaps: training targets from findings, candidates from a heatmap.

Findings are spheres in world millimetres (``medarena.datasets.findings``: centre x, y, z
and ``diameter_mm``, NIfTI RAS world of the image). The lab trains a network to output one
heatmap channel whose sigmoid approaches the *target heatmap*:

    target(v) = max over findings f of exp(-d(v, f)^2 / (2 sigma_f^2)),  d in mm,
    sigma_f = max(sigma_scale * diameter_f / 2, largest voxel size),

set to 0 beyond ``3 * sigma_f`` (so a patch sampler can tell voxels near a finding from the
rest). Excluded findings get no blob: the network is neither taught to find them nor to
ignore them, as LUNA16 neither rewards nor penalises marks on them.

Candidates come from a probability heatmap (the sigmoid of the network output) by
:func:`heatmap_candidates`: voxels that are the maximum of their neighbourhood
(``min_distance_mm`` in each direction) and at least ``threshold``, strongest first, a
candidate closer than ``min_distance_mm`` to a stronger one dropped, at most
``max_candidates``; each is its position in world mm and the heatmap value at its voxel as
the probability. The position is refined below the voxel size: along each array axis, a
parabola through the logarithms of the peak and its two neighbours gives the offset (within
half a voxel), which is exact for a Gaussian blob (its logarithm is a parabola along every
axis of an axis-aligned or rotated grid), so a nodule smaller than a voxel is still hit; a
peak with a zero neighbour (a blob cut off, a single-voxel spike) stays at its voxel centre.
The same function serves the lab's validation (FROC / LUNA16 CPM of the evaluation engine)
and ONNX model submissions of detection tracks.

Detection through segmentation (``task.detection.mode: segmentation``): the target is a
label map of the nodules' spheres (:func:`sphere_mask`: voxels whose centre lies inside, and
at least the voxel holding the centre), the network a two-class segmenter, and the
candidates (:func:`component_candidates`) the connected components of the foreground
probability at ``threshold``: each one's centroid in world mm, its highest probability as
the candidate's, then the same strongest-first, ``min_distance_mm`` and ``max_candidates``
rules as for heatmap peaks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from medarena.errors import InputError

TRUNCATE_SIGMAS = 3.0


def _affine(affine: ArrayLike, ndim: int) -> NDArray[np.float64]:
    """A (ndim+1)x(ndim+1) voxel -> world affine from a 4x4 (or already small) one."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (ndim + 1, ndim + 1):
        return a
    if a.shape != (4, 4):
        raise InputError(f"affine must be 4x4 or {ndim + 1}x{ndim + 1}", value=list(a.shape))
    out = np.eye(ndim + 1)
    out[:ndim, :ndim] = a[:ndim, :ndim]
    out[:ndim, ndim] = a[:ndim, 3]
    if not np.all(np.isfinite(out)) or abs(np.linalg.det(out[:ndim, :ndim])) < 1e-12:
        raise InputError("affine must be finite and invertible", value=out.tolist())
    return out


def voxel_sizes(affine: ArrayLike, ndim: int) -> NDArray[np.float64]:
    """Voxel size in mm along each array axis (column norms of the affine)."""
    a = _affine(affine, ndim)
    return np.asarray(np.linalg.norm(a[:ndim, :ndim], axis=0))


def _box_d2(
    shape: Sequence[int], a: NDArray[np.float64], centre: NDArray[np.float64], radius: float
) -> tuple[tuple[slice, ...], NDArray[np.float64]] | None:
    """The voxel box that can lie within ``radius`` mm of ``centre`` and the squared world
    distance (mm^2) of each of its voxel centres; None when the box misses the grid.

    Only the box is computed, so a finding costs its neighbourhood, not the whole volume.
    """
    nd = len(shape)
    inverse = np.linalg.inv(a)
    voxel = inverse[:nd, :nd] @ centre + inverse[:nd, nd]
    # along axis k, world distance r moves the voxel index by at most r * |row k of inverse|
    half = radius * np.linalg.norm(inverse[:nd, :nd], axis=1)
    lo = np.maximum(np.floor(voxel - half).astype(int), 0)
    hi = np.minimum(np.ceil(voxel + half).astype(int) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None
    box = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi, strict=True))
    idx = np.stack(
        np.meshgrid(*(np.arange(x, y) for x, y in zip(lo, hi, strict=True)), indexing="ij"), axis=-1
    ).astype(np.float64)
    world = idx @ a[:nd, :nd].T + a[:nd, nd]
    return box, np.asarray(((world - centre) ** 2).sum(axis=-1))


def _diameter(f: Mapping[str, Any]) -> float:
    try:
        diameter = float(f.get("diameter_mm", math.nan))
    except (TypeError, ValueError):
        diameter = math.nan
    if not (math.isfinite(diameter) and diameter >= 0):
        raise InputError("finding diameter_mm must be a number >= 0", value=dict(f))
    return diameter


def _point(f: Mapping[str, Any], ndim: int, what: str) -> NDArray[np.float64]:
    keys = ("x", "y", "z")[:ndim]
    try:
        xyz = np.array([float(f[k]) for k in keys])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{what} needs numbers {', '.join(keys)}", value=dict(f)) from None
    if not np.all(np.isfinite(xyz)):
        raise InputError(f"{what} coordinates must be finite", value=dict(f))
    return xyz


def gaussian_heatmap(
    shape: Sequence[int],
    affine: ArrayLike,
    findings: Sequence[Mapping[str, Any]],
    *,
    sigma_scale: float = 0.5,
) -> NDArray[np.float32]:
    """The training target of a grid ``shape`` (2 or 3 axes) with voxel -> world ``affine``.

    ``findings``: dicts with x, y (, z) in world mm and ``diameter_mm`` (2D grids ignore z).
    See the module docstring for the formula; an empty list gives all zeros.
    """
    nd = len(shape)
    if nd not in (2, 3):
        raise InputError("a heatmap has 2 or 3 spatial axes", value=list(shape))
    if not sigma_scale > 0:
        raise InputError("sigma_scale must be positive", value=sigma_scale)
    a = _affine(affine, nd)
    out = np.zeros(tuple(shape), dtype=np.float32)
    min_sigma = float(voxel_sizes(a, nd).max())
    for f in findings:
        centre = _point(f, nd, "finding")
        sigma = max(sigma_scale * _diameter(f) / 2.0, min_sigma)
        near = _box_d2(shape, a, centre, TRUNCATE_SIGMAS * sigma)
        if near is None:
            continue
        box, d2 = near
        blob = np.exp(-d2 / (2.0 * sigma**2))
        blob[d2 > (TRUNCATE_SIGMAS * sigma) ** 2] = 0.0
        out[box] = np.maximum(out[box], blob.astype(np.float32))
    return out


def heatmap_candidates(
    heatmap: ArrayLike,
    affine: ArrayLike,
    *,
    threshold: float = 0.1,
    min_distance_mm: float = 5.0,
    max_candidates: int = 100,
) -> list[dict[str, float]]:
    """Candidates (x, y, z in world mm, probability) of a probability ``heatmap``.

    ``heatmap``: 2 or 3 spatial axes (a leading channel axis of size 1 is accepted), values
    in [0, 1]; ``affine``: voxel -> world (4x4, or 3x3 for 2D). 2D candidates have z = 0.
    Strongest first; see the module docstring for the rules. InputError on a heatmap with
    NaN/inf, a bad affine or parameter.
    """
    from scipy import ndimage

    h = _checked_map(heatmap, threshold, min_distance_mm, max_candidates)
    nd = h.ndim
    a = _affine(affine, nd)
    sizes = voxel_sizes(a, nd)
    # neighbourhood: every voxel within min_distance_mm along each axis (at least 3 wide)
    half = np.maximum(np.floor(min_distance_mm / sizes), 1).astype(int)
    local_max = ndimage.maximum_filter(h, size=tuple(2 * half + 1), mode="constant", cval=-np.inf)
    peaks = np.argwhere((h >= local_max) & (h >= threshold) & (h > 0))
    return _pick(a, _subvoxel(h, peaks), h[tuple(peaks.T)], min_distance_mm, max_candidates)


def _subvoxel(h: NDArray[np.float64], peaks: NDArray[np.intp]) -> NDArray[np.float64]:
    """Peak positions (voxel units) refined by a log-parabola along each axis (docstring)."""
    out = peaks.astype(np.float64)
    for axis in range(h.ndim):
        lo, hi = peaks.copy(), peaks.copy()
        lo[:, axis] -= 1
        hi[:, axis] += 1
        ok = (lo[:, axis] >= 0) & (hi[:, axis] < h.shape[axis])
        if not ok.any():
            continue
        idx = np.flatnonzero(ok)
        a, b, c = (h[tuple(q[idx].T)] for q in (lo, peaks, hi))
        ok2 = (a > 0) & (b > 0) & (c > 0)
        idx, a, b, c = idx[ok2], a[ok2], b[ok2], c[ok2]
        la, lb, lc = np.log(a), np.log(b), np.log(c)
        curvature = la - 2 * lb + lc
        bent = curvature < 0  # a true maximum along this axis
        offset = 0.5 * (la[bent] - lc[bent]) / curvature[bent]
        out[idx[bent], axis] += np.clip(offset, -0.5, 0.5)
    return out


def _checked_map(
    prob: ArrayLike, threshold: float, min_distance_mm: float, max_candidates: int
) -> NDArray[np.float64]:
    h = np.asarray(prob, dtype=np.float64)
    if h.ndim in (3, 4) and h.shape[0] == 1:
        h = h[0]
    if h.ndim not in (2, 3):
        raise InputError("probability map must have 2 or 3 spatial axes", value=list(h.shape))
    if not np.all(np.isfinite(h)):
        raise InputError("probability map holds NaN or infinite values", value="NaN or inf")
    if not 0 <= threshold <= 1:
        raise InputError("threshold must lie in [0, 1]", value=threshold)
    if not min_distance_mm >= 0:
        raise InputError("min_distance_mm must be >= 0", value=min_distance_mm)
    if max_candidates < 1:
        raise InputError("max_candidates must be >= 1", value=max_candidates)
    return h


def _pick(
    a: NDArray[np.float64],
    points: NDArray[np.float64],
    values: NDArray[np.float64],
    min_distance_mm: float,
    max_candidates: int,
) -> list[dict[str, float]]:
    """Candidates at voxel ``points`` (n, ndim) with ``values``: strongest first, a point
    closer than ``min_distance_mm`` to a kept stronger one dropped, at most ``max_candidates``."""
    if len(points) == 0:
        return []
    nd = points.shape[1]
    # strongest first; ties by voxel index so the result does not depend on numpy's sort
    order = np.lexsort((*points.T[::-1], -values))
    points, values = points[order], values[order]
    world = (a[:nd, :nd] @ points.T + a[:nd, nd : nd + 1]).T
    kept: list[int] = []
    for i in range(len(points)):
        if len(kept) == max_candidates:
            break
        if kept:
            d2 = ((world[kept] - world[i]) ** 2).sum(axis=1)
            if np.any(d2 < min_distance_mm**2):
                continue
        kept.append(i)
    out = []
    for i in kept:
        xyz = [float(v) for v in world[i]] + [0.0] * (3 - nd)
        out.append({"x": xyz[0], "y": xyz[1], "z": xyz[2], "probability": float(values[i])})
    return out


def sphere_mask(
    shape: Sequence[int], affine: ArrayLike, findings: Sequence[Mapping[str, Any]]
) -> NDArray[np.uint8]:
    """Label map (1 = finding) of the findings' spheres on a grid: voxels whose centre lies
    within the radius (mm), and at least the voxel holding each centre."""
    nd = len(shape)
    if nd not in (2, 3):
        raise InputError("a label map has 2 or 3 spatial axes", value=list(shape))
    a = _affine(affine, nd)
    out = np.zeros(tuple(shape), dtype=np.uint8)
    inverse = np.linalg.inv(a)
    for f in findings:
        centre = _point(f, nd, "finding")
        radius = _diameter(f) / 2.0
        near = _box_d2(shape, a, centre, radius)
        if near is not None:
            box, d2 = near
            out[box][d2 <= radius**2] = 1
        voxel = np.rint(inverse[:nd, :nd] @ centre + inverse[:nd, nd]).astype(int)
        if np.all(voxel >= 0) and np.all(voxel < np.asarray(shape)):
            out[tuple(voxel)] = 1
    return out


def component_candidates(
    prob: ArrayLike,
    affine: ArrayLike,
    *,
    threshold: float = 0.5,
    min_distance_mm: float = 5.0,
    max_candidates: int = 100,
) -> list[dict[str, float]]:
    """Candidates of a foreground probability map: one per connected component (faces and
    edges connect) of ``prob >= threshold``, at its centroid in world mm, with the
    component's highest probability. Then as :func:`heatmap_candidates` (strongest first,
    ``min_distance_mm``, ``max_candidates``); 2D candidates have z = 0.
    """
    from scipy import ndimage

    h = _checked_map(prob, threshold, min_distance_mm, max_candidates)
    a = _affine(affine, h.ndim)
    labels, n = ndimage.label((h >= threshold) & (h > 0), structure=np.ones((3,) * h.ndim))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    centres = np.asarray(ndimage.center_of_mass(np.ones_like(h), labels, index), dtype=float)
    peaks = np.asarray(ndimage.maximum(h, labels, index), dtype=float)
    return _pick(a, centres.reshape(n, h.ndim), peaks, min_distance_mm, max_candidates)

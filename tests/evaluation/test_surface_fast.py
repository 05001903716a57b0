"""The fast surface-distance paths against the plain reference they replaced.

The reference is the previous implementation, kept here on purpose: ``np.argwhere`` surface
points, 0 for points on both surfaces and one k-d tree query for every other point. The
fast paths (grid probing near the surface, cell bounds and selective queries for HD95/NSD,
region masks by comparison) must give the same numbers: distances within 1e-12 relative
(they are computed from the integer offset, the arithmetic of a distance transform, instead
of from scaled coordinates), statistics the same.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from medarena.evaluation import segmentation as seg
from medarena.evaluation import surface as surf

Mask = NDArray[np.bool_]


# ------------------------------------------------------------------------------ reference


def _ref_directed(
    src: NDArray[np.intp], dst_mask: Mask, dst: NDArray[np.intp], sp: NDArray[np.float64]
) -> NDArray[np.float64]:
    dist = np.zeros(src.shape[0])
    other = np.flatnonzero(~dst_mask[tuple(src.T)])
    if other.size:
        d, _ = cKDTree(dst * sp).query(src[other] * sp, k=1)
        dist[other] = d
    return dist


def ref_border(pred: Mask, ref: Mask, spacing: tuple[float, ...]) -> surf.SurfaceDistances:
    sp = np.asarray(spacing, np.float64)
    bp, br = surf.voxel_border(pred), surf.voxel_border(ref)
    pp, pr = np.argwhere(bp), np.argwhere(br)
    return surf.SurfaceDistances(_ref_directed(pp, br, pr, sp), _ref_directed(pr, bp, pp, sp))


def ref_surfel(pred: Mask, ref: Mask, spacing: tuple[float, ...]) -> surf.SurfaceDistances:
    sp = np.asarray(spacing, np.float64)
    table = surf.surfel_measure_table(spacing)
    full = len(table) - 1
    cp, cr = surf.neighbour_codes(pred), surf.neighbour_codes(ref)
    bp, br = (cp != 0) & (cp != full), (cr != 0) & (cr != full)
    pp, pr = np.argwhere(bp), np.argwhere(br)
    return surf.SurfaceDistances(
        _ref_directed(pp, br, pr, sp),
        _ref_directed(pr, bp, pp, sp),
        table[cp[tuple(pp.T)]],
        table[cr[tuple(pr.T)]],
    )


def ref_stats(sd: surf.SurfaceDistances, tol: float) -> dict[str, float]:
    a, b = sd.pred_to_ref, sd.ref_to_pred
    return {
        "max_directed": float(max(np.percentile(a, 95), np.percentile(b, 95))),
        "pooled": float(np.percentile(np.concatenate([a, b]), 95)),
        "nsd": float((np.count_nonzero(a <= tol) + np.count_nonzero(b <= tol)) / (a.size + b.size)),
    }


# ------------------------------------------------------------------------------ cases


def blob(shape: tuple[int, ...], seed: int, sigma: float, level: float) -> Mask:
    rng = np.random.default_rng(seed)
    return np.asarray(ndi.gaussian_filter(rng.random(shape), sigma) > level)


def pairs() -> list[tuple[str, Mask, Mask, tuple[float, ...]]]:
    """Random anisotropic blobs (near and far apart), nested, identical, single voxels, 2D,
    masks touching the array edge."""
    out: list[tuple[str, Mask, Mask, tuple[float, ...]]] = []
    rng = np.random.default_rng(7)
    for i in range(6):
        shape = (int(rng.integers(18, 34)), int(rng.integers(18, 34)), int(rng.integers(8, 20)))
        sp = tuple(float(s) for s in rng.choice([0.5, 0.7, 0.94, 1.0, 1.3, 2.5, 3.0], 3))
        a = blob(shape, 100 + i, 2.0, 0.5)
        b = blob(shape, 200 + i, 2.0, 0.5) if i % 2 else ndi.binary_dilation(a, iterations=2)
        out.append((f"blob3d-{i}", a, b, sp))
    shape3 = (24, 22, 16)
    far_a = np.zeros(shape3, bool)
    far_b = np.zeros(shape3, bool)
    far_a[1:6, 2:8, 1:5] = True
    far_b[15:23, 12:21, 9:16] = True  # touches the array edge on two axes
    out.append(("far-apart", far_a, far_b, (0.8, 1.1, 2.0)))
    inner = np.zeros(shape3, bool)
    inner[8:14, 8:14, 6:10] = True
    outer = ndi.binary_dilation(inner, iterations=3)
    out.append(("nested", inner, outer, (1.0, 1.0, 1.0)))
    out.append(("identical", outer, outer.copy(), (0.9, 0.9, 1.5)))
    one_a = np.zeros(shape3, bool)
    one_b = np.zeros(shape3, bool)
    one_a[0, 0, 0] = True  # a corner voxel
    one_b[20, 3, 15] = True
    out.append(("single-voxels", one_a, one_b, (1.2, 0.6, 2.2)))
    inside = np.zeros(shape3, bool)
    inside[18, 15, 12] = True  # a single voxel inside the other mask
    out.append(("voxel-in-blob", inside, far_b, (1.0, 2.0, 1.0)))
    full = np.ones((9, 7, 5), bool)
    part = np.zeros((9, 7, 5), bool)
    part[2:, :4, 1:] = True
    out.append(("whole-array", full, part, (1.0, 1.0, 3.0)))
    for i in range(4):
        shape2 = (int(rng.integers(30, 60)), int(rng.integers(30, 60)))
        sp2 = tuple(float(s) for s in rng.choice([0.5, 0.8, 1.0, 1.7], 2))
        out.append(
            (f"2d-{i}", blob(shape2, 300 + i, 2.5, 0.5), blob(shape2, 400 + i, 2.5, 0.5), sp2)
        )
    line_a = np.zeros((40, 3), bool)
    line_b = np.zeros((40, 3), bool)
    line_a[:, 0] = True
    line_b[5:9, 2] = True
    out.append(("2d-line", line_a, line_b, (0.5, 4.0)))
    return out


PAIRS = pairs()
IDS = [p[0] for p in PAIRS]
TOLERANCES = (0.0, 0.5, 1.0, 2.2, 6.0)


@pytest.mark.parametrize(("name", "a", "b", "sp"), PAIRS, ids=IDS)
def test_exact_distances_equal_the_reference(
    name: str, a: Mask, b: Mask, sp: tuple[float, ...]
) -> None:
    for fast, ref in (
        (surf.border_distances(a, b, sp), ref_border(a, b, sp)),
        (surf.surfel_distances(a, b, sp), ref_surfel(a, b, sp)),
    ):
        for x, y in ((fast.pred_to_ref, ref.pred_to_ref), (fast.ref_to_pred, ref.ref_to_pred)):
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=0)
        for x, y in ((fast.pred_weights, ref.pred_weights), (fast.ref_weights, ref.ref_weights)):
            if y is not None:
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(("name", "a", "b", "sp"), PAIRS, ids=IDS)
def test_statistics_from_bounded_distances_are_exact(
    name: str, a: Mask, b: Mask, sp: tuple[float, ...]
) -> None:
    exact = surf.border_distances(a, b, sp)
    reference = ref_border(a, b, sp)
    for tol, variant in itertools.product((None, *TOLERANCES), ("max_directed", "pooled", None)):
        if tol is None and variant is None:
            continue
        bounded = surf.border_distances_for_stats(
            a, b, sp, hd95_variant=variant, nsd_tolerance_mm=tol
        )
        if variant is not None:
            # bit for bit against the exact path, to 1e-12 against the reference
            assert seg.hd95_from(bounded, variant) == seg.hd95_from(exact, variant)
            want = ref_stats(reference, 0.0)[variant]
            assert seg.hd95_from(bounded, variant) == pytest.approx(want, rel=1e-12, abs=0)
        if tol is not None:
            assert seg.nsd_from(bounded, tol) == seg.nsd_from(exact, tol)
            assert seg.nsd_from(bounded, tol) == ref_stats(reference, tol)["nsd"]


def test_bounded_distances_skip_most_far_points_and_keep_bounds_on_the_right_side() -> None:
    # two blobs 10-20 voxels apart: every point is beyond the probe radius
    a = np.zeros((40, 40, 12), bool)
    b = np.zeros((40, 40, 12), bool)
    a[2:14, 2:14, 2:10] = True
    b[24:38, 20:38, 2:10] = True
    sp = (1.0, 1.0, 1.0)
    exact = surf.border_distances(a, b, sp)
    bounded = surf.border_distances_for_stats(
        a, b, sp, hd95_variant="max_directed", nsd_tolerance_mm=1.0
    )
    percentiles = []
    for x, y in (
        (bounded.pred_to_ref, exact.pred_to_ref),
        (bounded.ref_to_pred, exact.ref_to_pred),
    ):
        same = x == y
        # most values are only bounds, none on the wrong side of its distance
        assert np.count_nonzero(same) < 0.5 * x.size
        assert np.all(x <= y)
        percentiles.append((np.percentile(x, 95), np.percentile(y, 95)))
    # the larger directed 95th percentile (HD95) is exact; the other is at most it
    (bx, ex), (by, ey) = percentiles
    hd95 = max(ex, ey)
    assert max(bx, by) == hd95
    assert bx <= hd95 and by <= hd95
    assert seg.hd95_from(bounded, "max_directed") == seg.hd95_from(exact, "max_directed")


def test_hd95_settles_only_the_direction_that_decides_it() -> None:
    # the prediction is the reference's first block shifted by 3 voxels; the reference has a
    # second block 14 voxels away: reference -> prediction distances are the large ones
    ref = np.zeros((60, 30, 30), bool)
    ref[5:25, 5:25, 5:25] = True
    ref[39:55, 5:25, 5:25] = True
    pred = np.zeros_like(ref)
    pred[8:28, 5:25, 5:25] = True
    sp = np.array([1.0, 1.0, 1.0])
    exact = surf.border_distances(pred, ref, tuple(sp))
    bounded = surf.border_distances_for_stats(
        pred, ref, tuple(sp), hd95_variant="max_directed", nsd_tolerance_mm=None
    )
    assert np.percentile(exact.ref_to_pred, 95) > np.percentile(exact.pred_to_ref, 95) + 5
    assert seg.hd95_from(bounded, "max_directed") == seg.hd95_from(exact, "max_directed")
    assert np.percentile(bounded.ref_to_pred, 95) == np.percentile(exact.ref_to_pred, 95)
    # the other direction holds its first bounds: nothing of it was refined
    bp, br = surf.voxel_border(pred), surf.voxel_border(ref)
    pp, pr = surf.argwhere(bp), surf.argwhere(br)
    fresh = surf._BoundedDirected(pp, br, pr, sp)
    assert np.count_nonzero(fresh.lower < fresh.upper) > 0
    assert np.array_equal(bounded.pred_to_ref, surf._stand_ins(fresh, None))


def test_bounded_distances_refuse_the_surfel_variant_and_empty_masks() -> None:
    a = np.zeros((5, 5), bool)
    a[2, 2] = True
    with pytest.raises(ValueError, match="variant"):
        surf.border_distances_for_stats(
            a, a, (1.0, 1.0), hd95_variant="surface_area", nsd_tolerance_mm=1.0
        )
    with pytest.raises(ValueError, match="non-empty"):
        surf.border_distances_for_stats(
            a, np.zeros_like(a), (1.0, 1.0), hd95_variant=None, nsd_tolerance_mm=1.0
        )


@pytest.mark.parametrize(("name", "a", "b", "sp"), PAIRS, ids=IDS)
def test_surface_pair_nearest_points_are_nearest(
    name: str, a: Mask, b: Mask, sp: tuple[float, ...]
) -> None:
    reference = ref_border(a, b, sp)
    pair = surf.surface_pair(a, b, sp, "border")
    spa = np.asarray(sp)
    np.testing.assert_allclose(pair.pred_to_ref, reference.pred_to_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(pair.ref_to_pred, reference.ref_to_pred, rtol=1e-12, atol=0)
    # the recorded nearest point is at the recorded distance
    for src, dst, near, dist in (
        (pair.pred_pts, pair.ref_pts, pair.pred_nearest, pair.pred_to_ref),
        (pair.ref_pts, pair.pred_pts, pair.ref_nearest, pair.ref_to_pred),
    ):
        got = np.sqrt((((dst[near] - src) * spa) ** 2).sum(axis=1))
        np.testing.assert_allclose(got, dist, rtol=1e-12, atol=0)


def test_argwhere_equals_numpy() -> None:
    rng = np.random.default_rng(1)
    for shape in ((7,), (6, 9), (5, 4, 3), (0, 3, 2)):
        m = rng.random(shape) > 0.6
        np.testing.assert_array_equal(surf.argwhere(m), np.argwhere(m))


@pytest.mark.parametrize(
    "metrics", [("dice", "hd95", "nsd"), ("hd95",), ("nsd", "iou"), seg.DEFAULT_METRICS]
)
def test_segmentation_metrics_equal_the_reference(metrics: tuple[str, ...]) -> None:
    for name, a, b, sp in PAIRS:
        got = seg.segmentation_metrics(a, b, sp, metrics=metrics, nsd_tolerance_mm=1.0)
        r = ref_stats(ref_border(a, b, sp), 1.0)
        if "hd95" in got:
            assert got["hd95"] == pytest.approx(r["max_directed"], rel=1e-12, abs=0), name
        if "nsd" in got:
            assert got["nsd"] == r["nsd"], name
        pooled = seg.segmentation_metrics(a, b, sp, metrics=("hd95",), hd95_variant="pooled")
        assert pooled["hd95"] == pytest.approx(r["pooled"], rel=1e-12, abs=0), name


def test_per_region_masks_equal_isin() -> None:
    rng = np.random.default_rng(5)
    shape = (26, 24, 14)
    base = blob(shape, 11, 2.0, 0.5)
    ref = np.where(base, rng.integers(1, 4, shape), 0).astype(np.uint8)
    pred = np.where(blob(shape, 12, 2.0, 0.5), rng.integers(1, 4, shape), 0).astype(np.uint8)
    # a few labels are compared one by one, many go through np.isin
    regions = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,), "none": (7,), "many": tuple(range(2, 12))}
    sp = (1.0, 1.2, 2.0)
    names = ("dice", "hd95", "nsd")
    got = seg.per_region(pred, ref, sp, regions, metrics=names)
    as16 = seg.per_region(pred.astype(np.int16), ref.astype(np.int16), sp, regions, metrics=names)
    assert got == as16
    for region, labels in regions.items():
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        want = seg.segmentation_metrics(p, r, sp, metrics=names)
        for m in names:
            assert got[f"{region}/{m}"] == want[m]
    assert got["none/dice"] == 1.0  # both empty: the default policy


def test_union_box_any_layout_and_sign() -> None:
    rng = np.random.default_rng(9)
    for dtype, order in itertools.product((np.uint8, np.int16, np.float32, bool), "CF"):
        for _ in range(5):
            shape = (int(rng.integers(3, 12)), int(rng.integers(3, 12)), int(rng.integers(2, 9)))
            a = np.zeros(shape, dtype, order=order)
            b = np.zeros(shape, dtype, order=order)
            for arr in (a, b):
                for _ in range(int(rng.integers(0, 3))):
                    idx = tuple(int(rng.integers(0, n)) for n in shape)
                    arr[idx] = True if dtype is bool else (-1 if dtype is np.int16 else 2)
            want = seg.bounding_box((a != 0) | (b != 0), 1)
            assert seg.union_box(a, b, 1) == want
            assert seg.union_box(a[:, ::2], b[:, ::2]) == seg.bounding_box(
                (a[:, ::2] != 0) | (b[:, ::2] != 0)
            )


def test_fortran_ordered_label_maps_score_the_same() -> None:
    shape = (26, 24, 14)
    ref = (blob(shape, 21, 2.0, 0.5).astype(np.uint8) * 2) + blob(shape, 22, 2.0, 0.55)
    pred = (blob(shape, 23, 2.0, 0.5).astype(np.uint8) * 2) + blob(shape, 24, 2.0, 0.55)
    regions = {"a": (1, 2, 3), "b": (1, 3)}
    sp = (0.9, 1.0, 2.5)
    c_order = seg.per_region(pred, ref, sp, regions)
    f_order = seg.per_region(np.asfortranarray(pred), np.asfortranarray(ref), sp, regions)
    assert c_order == f_order


def test_settling_the_percentile_in_rounds_refines_fewer_points_than_all_candidates() -> None:
    # a ball against a bumpy, shifted ball: many far points around the 95th percentile
    rng = np.random.default_rng(7)
    grid = np.indices((48, 48, 40)).astype(float)
    centre = np.array([24.0, 24.0, 20.0])
    r_ref = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0))
    bumps = 3.0 * np.sin(grid[0] / 3.0) * np.cos(grid[1] / 4.0) + rng.normal(0, 0.3, grid[0].shape)
    shifted = centre + np.array([2.0, -1.0, 1.0])
    r_pred = np.sqrt(((grid - shifted[:, None, None, None]) ** 2).sum(axis=0))
    ref, pred = r_ref < 14, r_pred < 13 + bumps
    sp = np.array([1.0, 1.0, 1.5])
    bp, br = surf.voxel_border(pred), surf.voxel_border(ref)
    pp, pr = surf.argwhere(bp), surf.argwhere(br)
    exact = surf.border_distances(pred, ref, tuple(sp))
    once = surf._BoundedDirected(pp, br, pr, sp)
    settled = surf._BoundedDirected(pp, br, pr, sp)
    assert np.count_nonzero(once.lower < once.upper) > 100  # far points to settle
    once.refine(surf._percentile_candidates(once.lower, once.upper, 95.0))
    surf._settle_percentile([settled], 95.0)
    n_once = np.count_nonzero(once.lower == once.upper)
    n_settled = np.count_nonzero(settled.lower == settled.upper)
    assert n_settled < n_once
    want = np.percentile(exact.pred_to_ref, 95)
    assert np.percentile(settled.lower, 95) == want
    assert np.percentile(once.lower, 95) == want

"""Segmentation metrics: hand-computed cases, empty-mask policy, and MONAI/MedPy cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError
from scipy import ndimage as ndi

from medarena.errors import InputError
from medarena.evaluation import segmentation as seg
from medarena.evaluation.policy import EmptyPolicy, EmptyRule, image_diagonal_mm
from medarena.evaluation.surface import (
    border_distances,
    neighbour_codes,
    surfel_distances,
    surfel_measure_table,
    voxel_border,
)

SQRT2 = math.sqrt(2.0)


def square_with_outlier() -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Reference: 3x3 square; prediction: the same square plus one pixel 8 px to the right."""
    ref = np.zeros((5, 14), bool)
    ref[0:3, 0:3] = True
    pred = ref.copy()
    pred[1, 10] = True
    return pred, ref


def blobs(shape: tuple[int, ...], seed: int, sigma: float = 2.0) -> NDArray[np.bool_]:
    rng = np.random.default_rng(seed)
    return np.asarray(ndi.gaussian_filter(rng.random(shape), sigma) > 0.5)


# ------------------------------------------------------------------------------ hand-computed


def test_dice_iou_by_hand_2d() -> None:
    pred = np.zeros((6, 6), bool)
    ref = np.zeros((6, 6), bool)
    pred[1:3, 1:3] = True  # 4 px
    ref[1:3, 2:5] = True  # 6 px, overlap 2
    assert seg.dice(pred, ref) == pytest.approx(2 * 2 / 10)
    assert seg.iou(pred, ref) == pytest.approx(2 / 8)


def test_single_voxels_anisotropic_3d() -> None:
    pred = np.zeros((4, 4, 8), bool)
    ref = np.zeros((4, 4, 8), bool)
    pred[1, 1, 1] = True
    ref[1, 2, 4] = True
    sp = (1.0, 2.0, 3.0)
    d = math.sqrt(2.0**2 + 9.0**2)  # one step on axis 1 (2 mm), three on axis 2 (3 mm each)
    m = seg.segmentation_metrics(pred, ref, sp, nsd_tolerance_mm=d)
    assert m["dice"] == 0.0 and m["iou"] == 0.0
    for k in ("hd", "hd95", "assd", "masd"):
        assert m[k] == pytest.approx(d)
    assert m["nsd"] == 1.0  # tolerance is inclusive
    assert seg.nsd(pred, ref, sp, d - 1e-9) == 0.0


def test_square_with_outlier_every_variant_by_hand() -> None:
    pred, ref = square_with_outlier()
    sp = (1.0, 1.0)
    m = seg.segmentation_metrics(pred, ref, sp, nsd_tolerance_mm=1.0)
    # borders: ring of 8 px in both, plus the outlier (8 px from the square's right column)
    assert m["hd"] == pytest.approx(8.0)
    # pred->ref distances [0]*8 + [8]: numpy linear P95 at rank 7.6 -> 0.6*8
    assert m["hd95"] == pytest.approx(4.8)
    assert m["assd"] == pytest.approx(8 / 17)
    assert m["masd"] == pytest.approx(0.5 * 8 / 9)
    assert m["nsd"] == pytest.approx(16 / 17)
    # pooled (MedPy): 17 values [0]*16 + [8]: rank 15.2 -> 0.2*8
    assert seg.hd95(pred, ref, sp, variant="pooled") == pytest.approx(1.6)
    # surfels: ring = 4 corners (√2/2 each) + 8 edge points (1 each); outlier = 4 corners at
    # distances 7, 7, 8, 8. Cumulative pred area share reaches 0.95 only at the last 8:
    # (8 + 3.5√2)/(8 + 4√2) = 0.948 < 0.95.
    assert (8 + 3.5 * SQRT2) / (8 + 4 * SQRT2) < 0.95
    assert seg.hd95(pred, ref, sp, variant="surface_area") == pytest.approx(8.0)
    ring = 8 + 2 * SQRT2
    expected_sa = 2 * ring / (ring + ring + 2 * SQRT2)
    assert seg.nsd(pred, ref, sp, 1.0, variant="surface_area") == pytest.approx(expected_sa)
    # the four conventions give four different numbers on this example
    assert len({4.8, 1.6, 8.0}) == 3 and expected_sa != pytest.approx(16 / 17)


def test_assd_and_masd_differ_when_borders_differ_in_size() -> None:
    ref = np.zeros((5, 5), bool)
    ref[1:4, 1:4] = True  # ring of 8 around the centre
    pred = np.zeros((5, 5), bool)
    pred[2, 2] = True  # the centre
    m = seg.segmentation_metrics(pred, ref, (1.0, 1.0), metrics=("hd", "assd", "masd"))
    # pred->ref: [1]; ref->pred: four at 1, four at √2
    assert m["hd"] == pytest.approx(SQRT2)
    assert m["assd"] == pytest.approx((5 + 4 * SQRT2) / 9)
    assert m["masd"] == pytest.approx(0.5 * (1 + (4 + 4 * SQRT2) / 8))


def test_cube_surfel_areas_by_hand_anisotropic() -> None:
    sx, sy, sz = 0.8, 1.5, 2.5
    cube = np.zeros((7, 7, 7), bool)
    cube[2:5, 2:5, 2:5] = True  # 3x3x3 voxels
    sd = surfel_distances(cube, cube, (sx, sy, sz))
    assert sd.pred_weights is not None
    faces = 2 * 4 * (sy * sz + sx * sz + sx * sy)  # (n-1)^2 = 4 planar surfels per face
    # 12 edges, 2 surfels each: a strip of the edge's length and half a face diagonal wide
    edges = (
        2
        * 4
        * (
            sx * math.hypot(sy / 2, sz / 2)
            + sy * math.hypot(sx / 2, sz / 2)
            + sz * math.hypot(sx / 2, sy / 2)
        )
    )
    # 8 corner triangles through the three half-edge midpoints
    corners = 8 * math.sqrt((sy * sz) ** 2 + (sx * sz) ** 2 + (sx * sy) ** 2) / 8
    assert sd.pred_weights.sum() == pytest.approx(faces + edges + corners)
    assert np.all(sd.pred_to_ref == 0.0)


def test_surfel_tables_equal_monai_for_every_code() -> None:
    from monai.metrics.utils import (
        create_table_neighbour_code_to_contour_length,
        create_table_neighbour_code_to_surface_area,
    )

    for sp3 in [(1.0, 1.0, 1.0), (0.7, 1.3, 2.9)]:
        ref_table, _ = create_table_neighbour_code_to_surface_area(sp3)
        np.testing.assert_allclose(surfel_measure_table(sp3), ref_table.numpy(), atol=1e-6)
    ref2, _ = create_table_neighbour_code_to_contour_length((0.6, 1.7))
    np.testing.assert_allclose(surfel_measure_table((0.6, 1.7)), np.asarray(ref2), atol=1e-9)


def test_neighbour_codes_of_one_voxel() -> None:
    one = np.zeros((1, 1, 1), bool)
    one[0, 0, 0] = True
    codes = neighbour_codes(one)
    # each of the 8 corners sees the voxel at the opposite offset: one distinct bit each
    assert sorted(codes.ravel().tolist()) == [1, 2, 4, 8, 16, 32, 64, 128]


def test_voxel_border_equals_cross_erosion_xor() -> None:
    for shape in [(9, 11), (7, 8, 6)]:
        m = blobs(shape, 3, sigma=1.0)
        m[0] = True  # foreground on the array edge is border (erosion border_value 0)
        cross = ndi.generate_binary_structure(m.ndim, 1)
        np.testing.assert_array_equal(voxel_border(m), m ^ ndi.binary_erosion(m, cross))


def test_nearest_neighbour_distances_equal_distance_transform() -> None:
    a, b = blobs((20, 18, 16), 5), blobs((20, 18, 16), 6)
    sp = (1.2, 0.9, 2.0)
    sd = border_distances(a, b, sp)
    edt = ndi.distance_transform_edt(~voxel_border(b), sampling=sp)
    # element order is not specified (shared border points come first): compare as sets
    np.testing.assert_allclose(np.sort(sd.pred_to_ref), np.sort(edt[voxel_border(a)]))


def test_cropping_does_not_change_results() -> None:
    a, b = blobs((16, 15, 12), 8), blobs((16, 15, 12), 9)
    sp = (1.0, 1.5, 2.0)
    opts = {"nsd_tolerance_mm": 2.0}
    base = seg.segmentation_metrics(a, b, sp, **opts)
    big_a = np.pad(a, 5)
    big_b = np.pad(b, 5)
    assert seg.segmentation_metrics(big_a, big_b, sp, **opts) == pytest.approx(base)
    for variant in ("surface_area",):
        x = seg.segmentation_metrics(a, b, sp, hd95_variant=variant, nsd_variant=variant)
        y = seg.segmentation_metrics(big_a, big_b, sp, hd95_variant=variant, nsd_variant=variant)
        assert x == pytest.approx(y)


def test_per_region_keys_and_values() -> None:
    rng = np.random.default_rng(4)
    ref = (blobs((12, 12, 10), 1).astype(np.uint8) + blobs((12, 12, 10), 2)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.1, 0, ref).astype(np.uint8)
    sp = (1.0, 1.0, 2.0)
    regions = {"all": (1, 2), "core": (2,)}
    out = seg.per_region(pred, ref, sp, regions, metrics=("dice", "hd95"))
    assert set(out) == {"all/dice", "all/hd95", "core/dice", "core/hd95"}
    direct = seg.segmentation_metrics(pred == 2, ref == 2, sp, metrics=("dice", "hd95"))
    assert out["core/dice"] == pytest.approx(direct["dice"])
    assert out["core/hd95"] == pytest.approx(direct["hd95"])


# ------------------------------------------------------------------------------ empty masks


def test_empty_cases_default_policy() -> None:
    z = np.zeros((10, 20, 5), bool)
    one = z.copy()
    one[2, 2, 2] = True
    sp = (1.0, 0.5, 4.0)
    diag = image_diagonal_mm(z.shape, sp)
    assert diag == pytest.approx(math.sqrt(10**2 + 10**2 + 20**2))
    both = seg.segmentation_metrics(z, z, sp)
    assert both == {"dice": 1, "iou": 1, "hd": 0, "hd95": 0, "assd": 0, "masd": 0, "nsd": 1}
    for pred, ref in [(one, z), (z, one)]:
        m = seg.segmentation_metrics(pred, ref, sp)
        assert m["dice"] == m["iou"] == m["nsd"] == 0.0
        assert m["hd"] == m["hd95"] == m["assd"] == m["masd"] == pytest.approx(diag)
    assert not any(math.isnan(v) for v in both.values())


def test_empty_policy_fixed_penalty_and_override() -> None:
    z = np.zeros((6, 6), bool)
    one = z.copy()
    one[1, 1] = True
    pol = EmptyPolicy(
        worst_distance_mm=374.0,
        overrides={"hd95": EmptyRule(both_empty=0.0, ref_empty=100.0, pred_empty="worst")},
    )
    assert seg.hd95(one, z, (1.0, 1.0), empty=pol) == 100.0  # only the reference is empty
    assert seg.hd95(z, one, (1.0, 1.0), empty=pol) == 374.0
    assert seg.hausdorff(one, z, (1.0, 1.0), empty=pol) == 374.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"worst_distance_mm": float("nan")},
        {"worst_distance_mm": -1.0},
        {"overrides": {"dice": {"both_empty": 1.0, "ref_empty": 1.0, "pred_empty": 0.0}}},
        {"overrides": {"dice": {"both_empty": 1.0, "ref_empty": float("nan"), "pred_empty": 0}}},
        {"overrides": {"hd95": {"both_empty": 0.0, "ref_empty": 0.0, "pred_empty": "worst"}}},
        {"overrides": {"volume": {"both_empty": 0.0, "ref_empty": 1.0, "pred_empty": 1.0}}},
    ],
)
def test_empty_policy_refuses_nan_and_unpenalised_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        EmptyPolicy.model_validate(kwargs)


def test_bad_input_is_named() -> None:
    a = np.zeros((4, 4), bool)
    with pytest.raises(InputError, match="shape"):
        seg.segmentation_metrics(a, np.zeros((4, 5), bool), (1, 1))
    with pytest.raises(InputError, match="one value per array axis"):
        seg.segmentation_metrics(a, a, (1, 1, 1))
    with pytest.raises(InputError, match="positive"):
        seg.segmentation_metrics(a, a, (1, 0))
    with pytest.raises(InputError, match="unknown segmentation metric"):
        seg.segmentation_metrics(a, a, (1, 1), metrics=("dcie",))
    nan = np.zeros((4, 4))
    nan[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        seg.segmentation_metrics(nan, a, (1, 1))
    with pytest.raises(InputError, match="NaN"):
        seg.per_region(a, nan, (1, 1), {"x": (1,)})
    with pytest.raises(InputError, match="hd95_variant"):
        seg.segmentation_metrics(a, a, (1, 1), hd95_variant="median")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ references


CASES = [
    ((24, 22, 18), (1.0, 0.8, 2.5), 11),
    ((40, 37), (0.7, 1.3), 12),
    ((20, 20, 20), (1.0,) * 3, 13),
]


@pytest.mark.parametrize(("shape", "sp", "seed"), CASES)
def test_agrees_with_monai_on_random_masks(
    shape: tuple[int, ...], sp: tuple[float, ...], seed: int
) -> None:
    import torch
    from monai.metrics import (
        DiceMetric,
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    a, b = blobs(shape, seed), blobs(shape, seed + 100)
    tol = 1.5
    ours = seg.segmentation_metrics(a, b, sp, nsd_tolerance_mm=tol)
    ours_sa = seg.segmentation_metrics(
        a, b, sp, metrics=("nsd",), nsd_tolerance_mm=tol, nsd_variant="surface_area"
    )
    p = torch.from_numpy(a)[None, None].float()
    g = torch.from_numpy(b)[None, None].float()
    dm = DiceMetric(include_background=True, ignore_empty=False)
    dm(p, g)
    assert ours["dice"] == pytest.approx(dm.aggregate().item(), rel=1e-5)
    hd95_m = compute_hausdorff_distance(p, g, percentile=95, spacing=sp).item()
    hd_m = compute_hausdorff_distance(p, g, spacing=sp).item()
    assd_m = compute_average_surface_distance(p, g, symmetric=True, spacing=sp).item()
    nsd_m = compute_surface_dice(p, g, [tol], spacing=sp).item()
    nsd_sub = compute_surface_dice(p, g, [tol], spacing=sp, use_subvoxels=True).item()
    assert ours["hd95"] == pytest.approx(hd95_m, rel=1e-5)
    assert ours["hd"] == pytest.approx(hd_m, rel=1e-5)
    assert ours["assd"] == pytest.approx(assd_m, rel=1e-5)
    assert ours["nsd"] == pytest.approx(nsd_m, rel=1e-5)
    assert ours_sa["nsd"] == pytest.approx(nsd_sub, rel=1e-5)


@pytest.mark.parametrize(("shape", "sp", "seed"), CASES)
def test_agrees_with_medpy_where_definitions_agree(
    shape: tuple[int, ...], sp: tuple[float, ...], seed: int
) -> None:
    from medpy.metric import binary as mb

    a, b = blobs(shape, seed), blobs(shape, seed + 100)
    ours = seg.segmentation_metrics(a, b, sp, hd95_variant="pooled")
    assert ours["dice"] == pytest.approx(mb.dc(a, b))
    assert ours["iou"] == pytest.approx(mb.jc(a, b))
    assert ours["hd"] == pytest.approx(mb.hd(a, b, sp))
    assert ours["hd95"] == pytest.approx(mb.hd95(a, b, sp))  # MedPy hd95 pools both directions
    assert ours["assd"] == pytest.approx(mb.assd(a, b, sp))  # MedPy 0.5.2 assd is pooled
    # MASD = mean of MedPy's two directed asd values (= MedPy <= 0.4 assd)
    assert ours["masd"] == pytest.approx(0.5 * (mb.asd(a, b, sp) + mb.asd(b, a, sp)))


def test_where_references_disagree_and_what_we_follow() -> None:
    import torch
    from medpy.metric import binary as mb
    from monai.metrics import compute_dice, compute_hausdorff_distance

    pred, ref = square_with_outlier()
    p = torch.from_numpy(pred)[None, None].float()
    g = torch.from_numpy(ref)[None, None].float()
    # HD95: MONAI (max of directed P95) 4.8, MedPy (pooled) 1.6; default follows MONAI/MR
    assert compute_hausdorff_distance(p, g, percentile=95).item() == pytest.approx(4.8)
    assert mb.hd95(pred, ref) == pytest.approx(1.6)
    assert seg.hd95(pred, ref, (1.0, 1.0)) == pytest.approx(4.8)
    # empty reference + false positive: MONAI's default Dice ignores it (NaN), HD95 is NaN;
    # we score Dice 0 and the worst distance
    empty = np.zeros_like(ref)
    e = torch.from_numpy(empty)[None, None].float()
    assert math.isnan(compute_dice(p, e).item())  # ignore_empty=True by default
    with pytest.warns(UserWarning):
        assert math.isnan(compute_hausdorff_distance(p, e, percentile=95).item())
    m = seg.segmentation_metrics(pred, empty, (1.0, 1.0), metrics=("dice", "hd95"))
    assert m["dice"] == 0.0 and m["hd95"] == pytest.approx(image_diagonal_mm(ref.shape, (1, 1)))
    # MedPy raises on an empty mask instead of scoring it
    with pytest.raises(RuntimeError):
        mb.hd95(pred, empty)

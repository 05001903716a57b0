"""Heatmap targets and candidate extraction, against answers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medarena.errors import InputError
from medarena.lab.detection import (
    component_candidates,
    gaussian_heatmap,
    heatmap_candidates,
    sphere_mask,
)

# 2 mm voxels along i, 3 mm along j, 4 mm along k; origin (10, 20, 30) mm
AFFINE = np.array(
    [[2.0, 0, 0, 10.0], [0, 3.0, 0, 20.0], [0, 0, 4.0, 30.0], [0, 0, 0, 1.0]],
)


def test_peaks_in_world_mm_strongest_first() -> None:
    h = np.zeros((10, 10, 10))
    h[2, 3, 4] = 0.9  # world (14, 29, 46)
    h[7, 7, 7] = 0.6  # world (24, 41, 58)
    h[7, 7, 8] = 0.5  # neighbour of the 0.6 peak: not a local maximum
    h[0, 9, 0] = 0.05  # below the threshold
    got = heatmap_candidates(h, AFFINE, threshold=0.1, min_distance_mm=3.0, max_candidates=5)
    assert got == [
        {"x": 14.0, "y": 29.0, "z": 46.0, "probability": 0.9},
        {"x": 24.0, "y": 41.0, "z": 58.0, "probability": 0.6},
    ]


def test_min_distance_is_in_mm_and_max_candidates_keeps_the_strongest() -> None:
    h = np.zeros((12, 3, 3))
    h[1, 1, 1] = 0.8
    h[4, 1, 1] = 0.7  # 6 mm from the first (i spacing 2 mm)
    h[9, 1, 1] = 0.6  # 10 mm from the second
    xs = [c["x"] for c in heatmap_candidates(h, AFFINE, min_distance_mm=5.0)]
    assert xs == [12.0, 18.0, 28.0]  # 6 mm apart >= 5 mm: all kept
    xs = [c["x"] for c in heatmap_candidates(h, AFFINE, min_distance_mm=7.0)]
    assert xs == [12.0, 28.0]  # the 0.7 peak is 6 mm < 7 mm from a stronger one
    got = heatmap_candidates(h, AFFINE, min_distance_mm=5.0, max_candidates=2)
    assert [c["probability"] for c in got] == [0.8, 0.7]


def test_a_plateau_gives_one_candidate_and_a_flat_map_none() -> None:
    h = np.zeros((5, 5))
    h[2, 2] = h[2, 3] = 0.5  # two equal voxels 1 mm apart: the first by index is kept
    got = heatmap_candidates(h[None], np.eye(4), threshold=0.2, min_distance_mm=2.0)
    assert got == [{"x": 2.0, "y": 2.0, "z": 0.0, "probability": 0.5}]
    assert heatmap_candidates(np.zeros((4, 4)), np.eye(3)) == []


def test_bad_input_is_named() -> None:
    h = np.zeros((4, 4, 4))
    with pytest.raises(InputError, match="threshold must lie in"):
        heatmap_candidates(h, AFFINE, threshold=1.5)
    h[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        heatmap_candidates(h, AFFINE)
    with pytest.raises(InputError, match="affine must be"):
        heatmap_candidates(np.zeros((4, 4, 4)), np.eye(2))
    with pytest.raises(InputError, match="max_candidates"):
        heatmap_candidates(np.zeros((4, 4, 4)), AFFINE, max_candidates=0)


def test_gaussian_heatmap_values() -> None:
    # one finding of diameter 8 mm at voxel (1, 1, 1): sigma = 0.5 * 4 mm = 2 mm... but the
    # largest voxel is 4 mm, so sigma = 4 mm; voxel (2, 1, 1) is 2 mm away: exp(-4 / 32)
    finding = {"x": 12.0, "y": 23.0, "z": 34.0, "diameter_mm": 8.0}
    h = gaussian_heatmap((6, 4, 4), AFFINE, [finding], sigma_scale=0.5)
    assert h.dtype == np.float32 and h.shape == (6, 4, 4)
    assert h[1, 1, 1] == pytest.approx(1.0)
    assert h[2, 1, 1] == pytest.approx(math.exp(-4 / 32), rel=1e-6)
    assert h[1, 1, 2] == pytest.approx(math.exp(-16 / 32), rel=1e-6)  # 4 mm along k
    # cut off beyond 3 sigma = 12 mm: voxel (5, 3, 3) is sqrt(64 + 36 + 64) mm away
    assert h[5, 3, 3] == 0.0
    # sigma_scale 2 with a 20 mm finding: sigma = 20 mm > 4 mm voxel
    wide = gaussian_heatmap((6, 4, 4), AFFINE, [{**finding, "diameter_mm": 20.0}], sigma_scale=2)
    assert wide[2, 1, 1] == pytest.approx(math.exp(-4 / 800), rel=1e-6)
    # overlapping blobs: the maximum, not the sum
    two = gaussian_heatmap((6, 4, 4), AFFINE, [finding, finding])
    assert two.max() == pytest.approx(1.0)
    assert not gaussian_heatmap((3, 3), np.eye(3), []).any()


def test_heatmap_of_findings_gives_them_back() -> None:
    findings = [
        {"x": 16.0, "y": 26.0, "z": 38.0, "diameter_mm": 6.0},
        {"x": 30.0, "y": 47.0, "z": 62.0, "diameter_mm": 10.0},
    ]
    h = gaussian_heatmap((16, 12, 12), AFFINE, findings)
    got = heatmap_candidates(h, AFFINE, threshold=0.5, min_distance_mm=5.0)
    assert [(c["x"], c["y"], c["z"]) for c in got] == [(16.0, 26.0, 38.0), (30.0, 47.0, 62.0)]
    assert all(c["probability"] == pytest.approx(1.0) for c in got)


def test_sphere_mask_marks_voxels_within_the_radius() -> None:
    # centre at voxel (2, 2, 2) = world (14, 26, 38); radius 3 mm: the neighbours along i
    # (2 mm) are inside, those along j (3 mm) on the edge (inside), along k (4 mm) outside
    finding = {"x": 14.0, "y": 26.0, "z": 38.0, "diameter_mm": 6.0}
    m = sphere_mask((5, 5, 5), AFFINE, [finding])
    assert m.dtype == np.uint8
    assert {tuple(v) for v in np.argwhere(m)} == {
        (2, 2, 2),
        (1, 2, 2),
        (3, 2, 2),
        (2, 1, 2),
        (2, 3, 2),
    }
    # a finding smaller than a voxel still marks the voxel holding its centre
    tiny = sphere_mask((5, 5, 5), AFFINE, [{**finding, "x": 14.4, "diameter_mm": 0.5}])
    assert np.argwhere(tiny).tolist() == [[2, 2, 2]]


def test_components_give_centroids_and_their_peak_probability() -> None:
    p = np.zeros((8, 8))
    p[1:3, 1:3] = 0.6  # 2x2 block: centroid (1.5, 1.5)
    p[1, 1] = 0.9
    p[6, 5:8] = 0.7  # a row of 3: centroid (6, 6)
    p[4, 4] = 0.3  # below the threshold
    got = component_candidates(p, np.eye(3), threshold=0.5, min_distance_mm=1.0)
    assert got == [
        {"x": 1.5, "y": 1.5, "z": 0.0, "probability": 0.9},
        {"x": 6.0, "y": 6.0, "z": 0.0, "probability": 0.7},
    ]
    # diagonal neighbours connect; a wide min_distance keeps only the strongest
    p2 = np.zeros((4, 4))
    p2[0, 0] = p2[1, 1] = 0.8
    assert len(component_candidates(p2, np.eye(3), threshold=0.5)) == 1
    assert len(component_candidates(p, np.eye(3), threshold=0.5, min_distance_mm=8.0)) == 1
    assert component_candidates(np.zeros((3, 3)), np.eye(3)) == []


def test_peaks_are_refined_below_the_voxel_size() -> None:
    # along i the peak's neighbours are 0.25 and 0.5: the log-parabola's vertex lies at
    # 0.5 * (ln 0.25 - ln 0.5) / (ln 0.25 - 2 ln 1 + ln 0.5) = 1/6 voxel = 1/3 mm (2 mm voxels)
    h = np.zeros((7, 7, 7))
    h[3, 3, 3], h[2, 3, 3], h[4, 3, 3] = 1.0, 0.25, 0.5
    [c] = heatmap_candidates(h, AFFINE, threshold=0.5, min_distance_mm=3.0)
    assert c["x"] == pytest.approx(10 + 2 * (3 + 1 / 6))
    assert (c["y"], c["z"], c["probability"]) == (29.0, 42.0, 1.0)  # zero neighbours: kept
    # a Gaussian blob centred between voxels is found at its centre (exact for a Gaussian),
    # here a 2 mm nodule (radius 1 mm) on 2 x 3 x 4 mm voxels: a voxel centre would miss it
    finding = {"x": 17.1, "y": 31.4, "z": 45.3, "diameter_mm": 2.0}
    blob = gaussian_heatmap((8, 8, 8), AFFINE, [finding])
    [c] = heatmap_candidates(blob, AFFINE, threshold=0.5)
    got = np.array([c["x"], c["y"], c["z"]])
    assert np.abs(got - [17.1, 31.4, 45.3]).max() < 1e-3


def test_targets_on_a_rotated_grid_equal_the_formula_on_every_voxel() -> None:
    # only a box around each finding is computed: on an oblique grid (rotated 30 degrees,
    # 1 x 2 x 3 mm voxels) the box must still hold every voxel within reach
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.0, 2.0, 3.0])
    affine[:3, 3] = [-5.0, 3.0, 7.0]
    findings = [
        {"x": 4.0, "y": 12.0, "z": 20.0, "diameter_mm": 9.0},
        {"x": -1.0, "y": 30.0, "z": 40.0, "diameter_mm": 4.0},  # partly outside the grid
    ]
    shape = (20, 14, 12)
    idx = np.indices(shape).reshape(3, -1).T.astype(float)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    want_heat = np.zeros(len(idx))
    want_mask = np.zeros(len(idx), dtype=bool)
    for f in findings:
        sigma = max(0.5 * f["diameter_mm"] / 2, 3.0)  # largest voxel: 3 mm
        d2 = ((world - [f["x"], f["y"], f["z"]]) ** 2).sum(axis=1)
        blob = np.where(d2 > (3 * sigma) ** 2, 0.0, np.exp(-d2 / (2 * sigma**2)))
        want_heat = np.maximum(want_heat, blob)
        want_mask |= d2 <= (f["diameter_mm"] / 2) ** 2
    heat = gaussian_heatmap(shape, affine, findings)
    assert np.abs(heat.reshape(-1) - want_heat).max() < 1e-6
    assert (want_heat > 0).sum() > 100
    mask = sphere_mask(shape, affine, findings).reshape(-1).astype(bool)
    assert np.array_equal(mask | want_mask, mask)  # every voxel within a radius is marked
    assert (mask & ~want_mask).sum() <= 2  # plus at most the voxel holding each centre

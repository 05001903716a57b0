"""Lung-nodule detection (LUNA16-style): synthetic chest CT with inserted nodules.

Everything here is synthetic (no packaged chest CT volume exists).

Anatomy (HU). An elliptical chest of soft tissue (40 HU) with a fat rim (-100 HU), two lungs
(-850 HU), a heart (45 HU), a spine (500 HU) and 8-14 vessels per lung: thin tubes (radius
0.8-2 mm, 30 HU) running from the hilum outwards, the structures a detector must not flag.

Findings. 0-4 nodules per scan with diameters 3-30 mm (log-uniform, so small nodules are
common), solid (20 to 60 HU) and fully inside a lung; and 0-2 excluded findings per scan
("irrelevant findings" that LUNA16 neither rewards nor penalises): micronodules under 3 mm
and calcified granulomas (3-8 mm, 300-600 HU). Each is a sphere rendered with partial volume
(the fraction of a voxel inside the sphere is approximated linearly across one voxel width).
Findings never overlap each other.

Reference. ``annotations.csv`` (case_id, x, y, z, diameter_mm; a row with empty x, y, z
declares a scan without nodules) and ``annotations_excluded.csv``, in world millimetres of
the NIfTI affine (diagonal spacing, origin 0: x = i × spacing_x, NIfTI RAS axes, not the
LPS axes of ITK's world frame). The label map marks 1 = nodule, 2 = excluded finding (voxels
whose centre lies in the sphere, and at least the voxel holding the centre), so labels follow
the inserted findings. ``reference/`` holds the two CSVs of the test cases only: the format
``medarena evaluate --task detection`` reads (it does not read the excluded list; the
LUNA16 functions in ``medarena.evaluation.detection`` take it as ``excluded``).

Site effects: image noise and the reconstruction kernel (Gaussian blur, which lowers the
contrast of small nodules) differ by site.

Limits: no ribs, airways or motion; vessels are straight segments; nodules are spheres
(no spiculation, no ground-glass, no juxta-pleural attachment).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from medarena.demo.generators.common import (
    Cohort,
    GeneratedTrack,
    Grids,
    begin,
    case_rng,
    describe,
    vendors,
    write_csv,
    write_msd_layout,
)

TRACK = "lung_nodules"
VERSION = "1"
MIN_DIAMETER_MM = 3.0
MAX_DIAMETER_MM = 30.0
LUNG_HU = -850.0
ANNOTATION_COLUMNS = ("case_id", "x", "y", "z", "diameter_mm")
# site -> (scanner vendor, noise SD HU, reconstruction blur sigma in mm)
SITES: dict[str, tuple[str, float, float]] = {
    "site-A": ("Siemens", 15.0, 0.5),
    "site-B": ("Toshiba", 35.0, 1.5),
    "site-C": ("GE", 60.0, 2.5),
}
GRIDS: Grids = {
    "demo": ((96, 96, 64), (3.5, 3.5, 4.0)),
    "tiny": ((32, 32, 24), (10.0, 10.0, 12.0)),
}


class Finding:
    """An inserted sphere: centre in world mm, diameter in mm, CT value, whether included."""

    def __init__(self, centre: NDArray[np.float64], diameter: float, hu: float, included: bool):
        self.centre = centre
        self.diameter = diameter
        self.hu = hu
        self.included = included


def _chest(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """CT (HU), lung mask and body mask of one subject."""
    sp = np.asarray(spacing)
    ext = np.asarray(shape) * sp
    x, y, z = (np.arange(n) * s for n, s in zip(shape, spacing, strict=True))
    xx, yy, zz = np.meshgrid(x, y, z, indexing="ij", sparse=True)
    cx, cy = ext[0] / 2, ext[1] / 2
    w, d = ext[0] / 2 * rng.uniform(0.85, 0.95), ext[1] / 2 * rng.uniform(0.7, 0.8)
    body = np.broadcast_to(((xx - cx) / w) ** 2 + ((yy - cy) / d) ** 2 <= 1.0, shape)
    inner = np.broadcast_to(((xx - cx) / (w - 10)) ** 2 + ((yy - cy) / (d - 10)) ** 2 <= 1.0, shape)
    ct = np.full(shape, -1000.0)
    ct[body] = -100.0
    ct[inner] = 40.0
    lungs = np.zeros(shape, bool)
    zc, zh = ext[2] * 0.5, ext[2] * rng.uniform(0.5, 0.6)
    for sign in (-1.0, 1.0):
        lungs |= ((xx - cx - sign * 0.45 * w) / (0.38 * w)) ** 2 + ((yy - cy) / (0.7 * d)) ** 2 + (
            (zz - zc) / zh
        ) ** 2 <= 1.0
    heart = ((xx - cx - 0.12 * w) / (0.28 * w)) ** 2 + ((yy - cy - 0.3 * d) / (0.35 * d)) ** 2 + (
        (zz - zc + 0.3 * zh) / (0.5 * zh)
    ) ** 2 <= 1.0
    lungs &= ~heart & inner
    ct[lungs] = LUNG_HU
    ct[heart] = 45.0
    spine = np.broadcast_to(((xx - cx) / 15) ** 2 + ((yy - cy + 0.75 * d) / 13) ** 2 <= 1.0, shape)
    ct[spine & inner] = 500.0
    # Vessels: straight tubes from each hilum outwards, drawn only inside the lungs.
    for sign in (-1.0, 1.0):
        hilum = np.array([cx + sign * 0.2 * w, cy, zc])
        for _ in range(int(rng.integers(8, 15))):
            direction = rng.normal(size=3)
            direction[0] = sign * abs(direction[0])
            direction /= np.linalg.norm(direction)
            length = rng.uniform(0.3, 0.8) * w
            radius = rng.uniform(0.8, 2.0)
            _vessel(ct, lungs, sp, hilum, direction, length, radius)
    return ct, lungs, body


def _vessel(
    ct: NDArray[np.float64],
    lungs: NDArray[np.bool_],
    sp: NDArray[np.float64],
    start: NDArray[np.float64],
    direction: NDArray[np.float64],
    length: float,
    radius: float,
) -> None:
    """Draw a straight tube (partial volume, 30 HU) inside the lungs, in its bounding box."""
    end = start + length * direction
    pad = radius + 2 * sp.max()
    lo = np.maximum(np.floor((np.minimum(start, end) - pad) / sp).astype(int), 0)
    hi = np.minimum(np.ceil((np.maximum(start, end) + pad) / sp).astype(int) + 1, ct.shape)
    if np.any(hi <= lo):
        return
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    axes = [np.arange(a, b) * s for a, b, s in zip(lo, hi, sp, strict=True)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    t = np.clip((pts - start) @ direction, 0.0, length)
    dist = np.linalg.norm(pts - start - t[..., None] * direction, axis=-1)
    frac = np.clip((radius - dist) / sp.mean() + 0.5, 0.0, 1.0) * lungs[box]
    sub = ct[box]
    ct[box] = sub + frac * (30.0 - sub) * (sub < 30.0)


def _findings(
    rng: np.random.Generator,
    lungs: NDArray[np.bool_],
    spacing: tuple[float, float, float],
) -> list[Finding]:
    """Included nodules and excluded findings, non-overlapping, each fully inside a lung."""
    sp = np.asarray(spacing)
    lung_idx = np.argwhere(lungs)
    want = [True] * int(rng.integers(0, 5)) + [False] * int(rng.integers(0, 3))
    out: list[Finding] = []
    dist_in = ndimage.distance_transform_edt(lungs, sampling=spacing)
    for included in want:
        for _ in range(60):
            if included:
                diam = math.exp(rng.uniform(math.log(MIN_DIAMETER_MM), math.log(MAX_DIAMETER_MM)))
                hu = rng.uniform(20.0, 60.0)
            elif rng.random() < 0.5:
                diam, hu = rng.uniform(1.5, 2.9), rng.uniform(0.0, 40.0)
            else:
                diam, hu = rng.uniform(3.0, 8.0), rng.uniform(300.0, 600.0)
            v = lung_idx[int(rng.integers(len(lung_idx)))]
            centre = (v + rng.uniform(-0.5, 0.5, 3)) * sp
            if dist_in[tuple(v)] < diam / 2 + sp.max():
                continue
            if any(
                np.linalg.norm(centre - f.centre) < (diam + f.diameter) / 2 + 2 * sp.max()
                for f in out
            ):
                continue
            out.append(Finding(centre, float(diam), float(hu), included))
            break
    return out


def _render(
    ct: NDArray[np.float64],
    label: NDArray[np.uint8],
    finding: Finding,
    spacing: tuple[float, float, float],
) -> None:
    """Insert one sphere: partial-volume CT values and its label voxels."""
    sp = np.asarray(spacing)
    r = finding.diameter / 2
    # Only the sphere's bounding box (plus the partial-volume shell) can change.
    lo = np.maximum(np.floor((finding.centre - r) / sp).astype(int) - 2, 0)
    hi = np.minimum(np.ceil((finding.centre + r) / sp).astype(int) + 3, ct.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    grids = np.ogrid[box]
    dist = np.sqrt(
        sum(((g * s) - c) ** 2 for g, s, c in zip(grids, sp, finding.centre, strict=True))
    )
    frac = np.clip((r - dist) / sp.mean() + 0.5, 0.0, 1.0)
    ct[box] += frac * (finding.hu - ct[box])
    inside = dist <= r
    inside[tuple(np.rint(finding.centre / sp).astype(int) - lo)] = True
    label[box][inside] = 1 if finding.included else 2


COHORT = Cohort(track=TRACK, prefix="chest", sites=vendors(SITES), age_range=(50, 80))


def generate(
    out_dir: Path, *, n_train: int, n_test: int, seed: int, size: str = "demo"
) -> GeneratedTrack:
    """Write the lung-nodule track under ``out_dir`` and describe it (module docstring)."""
    root, subjects = begin(COHORT, out_dir, n_train, n_test, seed, size)
    shape, spacing = GRIDS[size]
    ingest_dir = root / "data"
    ref_dir = root / "reference"
    images: dict[str, list[NDArray[Any]]] = {}
    labels: dict[str, NDArray[Any]] = {}
    rows: dict[bool, list[tuple[Any, ...]]] = {True: [], False: []}
    test_rows: dict[bool, list[tuple[Any, ...]]] = {True: [], False: []}
    extra: dict[str, dict[str, Any]] = {}
    for i, s in enumerate(subjects):
        rng = case_rng(seed, TRACK, i)
        _vendor, noise, blur_mm = SITES[s.site]
        ct, lungs, body = _chest(rng, shape, spacing)
        label = np.zeros(shape, np.uint8)
        findings = _findings(rng, lungs, spacing)
        for f in findings:
            _render(ct, label, f, spacing)
        ct = ndimage.gaussian_filter(ct, [blur_mm / s for s in spacing])
        ct = ct + rng.normal(0.0, noise, shape) * body
        images[s.case_id] = [np.rint(ct).astype(np.int16)]
        labels[s.case_id] = label
        extra[s.case_id] = {"n_nodules": sum(f.included for f in findings)}
        for included in (True, False):
            mine = [
                (s.case_id, *(round(float(c), 2) for c in f.centre), round(f.diameter, 2))
                for f in findings
                if f.included == included
            ]
            if not mine:
                mine = [(s.case_id, "", "", "", "")]  # declares the scan
            rows[included].extend(mine)
            if s.test:
                test_rows[included].extend(mine)
    channels = ("CT",)
    write_msd_layout(
        ingest_dir,
        name="demo-lung-nodules",
        description="Synthetic chest CT with inserted nodules (1) and excluded findings (2)",
        channels=channels,
        label_names={"0": "background", "1": "nodule", "2": "excluded finding"},
        subjects=subjects,
        images=images,
        labels=labels,
        spacing=spacing,
        extra_columns=extra,
    )
    write_csv(root / "annotations.csv", ANNOTATION_COLUMNS, rows[True])
    write_csv(root / "annotations_excluded.csv", ANNOTATION_COLUMNS, rows[False])
    reference = write_csv(ref_dir / "annotations.csv", ANNOTATION_COLUMNS, test_rows[True])
    write_csv(ref_dir / "annotations_excluded.csv", ANNOTATION_COLUMNS, test_rows[False])
    return describe(
        root,
        subjects,
        track=TRACK,
        task="detection",
        task_config={},
        ingest_dir=ingest_dir,
        reference=reference,
        channels=channels,
        label_names={"0": "background", "1": "nodule", "2": "excluded finding"},
        real_parts=(),
        synthetic_parts=(
            "chest CT (ellipsoid anatomy, straight vessels)",
            "nodules 3-30 mm and excluded findings (spheres with partial volume)",
            "annotations.csv / annotations_excluded.csv (the inserted spheres)",
        ),
        seed=seed,
        size=size,
        notes={"excluded_reference": str((ref_dir / "annotations_excluded.csv").name)},
    )

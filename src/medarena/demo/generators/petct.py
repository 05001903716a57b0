"""PET/CT hypermetabolic lesion segmentation (autoPET-style): synthetic whole-body PET/CT.

Everything here is synthetic (no packaged whole-body PET/CT exists).

Anatomy (CT, HU). A head (skull 800 HU, brain 35 HU) on a neck above an elliptical trunk of
soft tissue (40 HU) with a fat rim (-100 HU): lungs (-820 HU), heart (45 HU), liver (60 HU),
two kidneys (35 HU), bladder (10 HU) and a spine (500 HU). Sizes and positions vary per
subject; the z axis runs from the pelvis (0) to the vertex.

PET (SUV). Physiological uptake: brain 6-9, heart 1.5-7 (myocardial uptake varies), liver
1.8-2.6, kidneys 3-6, bladder 8-25, lungs 0.4, other soft tissue 0.6, bone 1.0, air 0.
Lesions are balls of radius 5-20 mm (in lungs, liver or trunk soft tissue, never
overlapping each other or the bladder) with SUV = background × contrast, contrast 2-8;
30 % of cases are negative (no lesion). The activity is averaged onto a grid twice as coarse
(the PET voxel), blurred with a Gaussian point-spread function (FWHM per site), turned into
counts with Poisson noise (counts per SUV unit per site), converted back to SUV and
replicated onto the CT grid (nearest neighbour), as autoPET data come resampled to CT.

Labels. The lesion mask is the union of the inserted balls on the CT grid: its voxel count
equals the sum of the inserted lesions' voxel counts (tested). A lesion's visibility in the
PET is not guaranteed (small, low-contrast lesions at a blurry, noisy site may vanish), as
in real data.

Site effects: PET resolution (FWHM 6, 8 or 10 mm), count level (noise) and CT noise differ
by site.

Limits: no partial-volume correction, no attenuation or scatter modelling, no motion,
spherical lesions only, organs are ellipsoids.

Output: ``data/`` (MSD layout: channel 0 CT in HU, int16; 1 PET in SUV, float32; label
1 = lesion) and ``reference/`` (the test cases' lesion masks, as ``medarena evaluate --task
autopet`` reads them).
"""

from __future__ import annotations

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
    copy_test_labels,
    describe,
    vendors,
    write_msd_layout,
)

TRACK = "petct"
VERSION = "1"
NEGATIVE_FRACTION = 0.3
# site -> (scanner vendor, PET FWHM mm, counts per SUV unit per PET voxel, CT noise SD HU)
SITES: dict[str, tuple[str, float, float, float]] = {
    "site-A": ("Siemens", 6.0, 40.0, 12.0),
    "site-B": ("GE", 8.0, 15.0, 20.0),
    "site-C": ("Philips", 10.0, 6.0, 30.0),
}
GRIDS: Grids = {
    "demo": ((64, 48, 96), (6.0, 6.0, 6.0)),
    "tiny": ((24, 18, 36), (16.0, 16.0, 16.0)),
}


def _ellipsoid(
    grids: tuple[NDArray[Any], ...], centre: tuple[float, ...], semi: tuple[float, ...]
) -> NDArray[np.bool_]:
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, semi, strict=True))
    return np.asarray(d <= 1.0)


def _body(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[NDArray[np.float32], NDArray[np.float64], dict[str, NDArray[np.bool_]]]:
    """CT (HU), physiological SUV and organ masks of one subject (coordinates in mm)."""
    nx, ny, nz = shape
    x = (np.arange(nx) - (nx - 1) / 2) * spacing[0]
    y = (np.arange(ny) - (ny - 1) / 2) * spacing[1]
    z = np.arange(nz) * spacing[2]
    g = tuple(np.meshgrid(x, y, z, indexing="ij"))
    xx, yy, zz = g
    height = nz * spacing[2]
    w = nx * spacing[0] / 2 * rng.uniform(0.8, 0.92)
    d = ny * spacing[1] / 2 * rng.uniform(0.75, 0.9)
    z_trunk = 0.74 * height
    trunk = ((xx / w) ** 2 + (yy / d) ** 2 <= 1.0) & (zz < z_trunk)
    trunk_in = ((xx / (w - 10)) ** 2 + (yy / (d - 10)) ** 2 <= 1.0) & (zz < z_trunk)
    neck = ((xx / (0.25 * w)) ** 2 + (yy / (0.45 * d)) ** 2 <= 1.0) & (zz < 0.82 * height)
    head_c = (0.0, 0.0, 0.9 * height)
    head_r = (0.42 * w, 0.75 * d, 0.1 * height)
    head = _ellipsoid(g, head_c, head_r)
    brain = _ellipsoid(g, head_c, tuple(r * 0.8 for r in head_r))
    organs: dict[str, NDArray[np.bool_]] = {}
    lung_z, lung_h = 0.6 * height, 0.1 * height
    for name, sign in (("lung_r", -1.0), ("lung_l", 1.0)):
        organs[name] = _ellipsoid(g, (sign * 0.45 * w, 0.0, lung_z), (0.35 * w, 0.6 * d, lung_h))
    organs["heart"] = _ellipsoid(
        g, (0.15 * w, 0.3 * d, lung_z - 0.3 * lung_h), (0.28 * w, 0.3 * d, 0.6 * lung_h)
    )
    organs["liver"] = _ellipsoid(
        g,
        (-0.35 * w, 0.1 * d, 0.46 * height),
        (0.45 * w * rng.uniform(0.9, 1.1), 0.55 * d, 0.07 * height),
    )
    for name, sign in (("kidney_r", -1.0), ("kidney_l", 1.0)):
        organs[name] = _ellipsoid(
            g, (sign * 0.4 * w, -0.35 * d, 0.37 * height), (0.12 * w, 0.15 * d, 0.05 * height)
        )
    organs["bladder"] = _ellipsoid(
        g, (0.0, 0.3 * d, 0.07 * height), (0.2 * w, 0.25 * d, rng.uniform(0.03, 0.05) * height)
    )
    spine = ((xx / (0.1 * w)) ** 2 + ((yy + 0.6 * d) / (0.12 * d)) ** 2 <= 1.0) & (
        zz < 0.82 * height
    )
    organs["brain"] = brain
    lungs = organs["lung_r"] | organs["lung_l"]
    organs["lungs"] = lungs & ~organs["heart"]
    ct = np.full(shape, -1000.0, np.float32)
    suv = np.zeros(shape, np.float64)
    soft = trunk | neck | head
    ct[soft] = -100.0
    ct[trunk_in | neck] = 40.0
    suv[soft] = 0.6
    ct[head] = 800.0
    suv[head] = 1.0
    ct[brain] = 35.0
    suv[brain] = rng.uniform(6.0, 9.0)
    ct[organs["lungs"]] = -820.0
    suv[organs["lungs"]] = 0.4
    for name, hu, lo, hi in (
        ("heart", 45.0, 1.5, 7.0),
        ("liver", 60.0, 1.8, 2.6),
        ("kidney_r", 35.0, 3.0, 6.0),
        ("kidney_l", 35.0, 3.0, 6.0),
        ("bladder", 10.0, 8.0, 25.0),
    ):
        ct[organs[name]] = hu
        suv[organs[name]] = rng.uniform(lo, hi)
    ct[spine] = 500.0
    suv[spine] = 1.0
    organs["body"] = soft
    # Soft-tissue lesions stay between the pelvis floor and the lung apices.
    organs["soft"] = trunk_in & ~lungs & ~spine & (zz > 0.12 * height) & (zz < 0.7 * height)
    for k in ("heart", "kidney_r", "kidney_l", "bladder", "liver"):
        organs["soft"] &= ~organs[k]
    organs["spine"] = spine
    return ct, suv, organs


def _lesions(
    rng: np.random.Generator,
    organs: dict[str, NDArray[np.bool_]],
    spacing: tuple[float, float, float],
    n: int,
) -> list[NDArray[np.bool_]]:
    """Up to ``n`` non-overlapping lesion balls fully inside lungs, liver or soft tissue."""
    shape = organs["body"].shape
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    taken = organs["bladder"].copy()
    out: list[NDArray[np.bool_]] = []
    hosts = ("lungs", "liver", "soft")
    for _ in range(40 * max(n, 1)):
        if len(out) == n:
            break
        host = organs[hosts[int(rng.integers(len(hosts)))]]
        idx = np.argwhere(host)
        if len(idx) == 0:
            continue
        c = idx[int(rng.integers(len(idx)))]
        r_mm = rng.uniform(5.0, 20.0)
        semi = [max(r_mm / s, 0.6) for s in spacing]
        d = sum(((gr - ci) / si) ** 2 for gr, ci, si in zip(grids, c, semi, strict=True))
        ball = np.asarray(d <= 1.0)
        grown = ndimage.binary_dilation(ball)
        if (ball & ~host).any() or (grown & taken).any():
            continue
        out.append(ball)
        taken |= grown
    return out


def _pet_scan(
    rng: np.random.Generator,
    suv: NDArray[np.float64],
    spacing: tuple[float, float, float],
    fwhm_mm: float,
    counts_per_suv: float,
) -> NDArray[np.float32]:
    """Activity -> PET voxels (2x coarser), PSF blur, Poisson counts, back on the CT grid."""
    nx, ny, nz = suv.shape
    coarse = suv.reshape(nx // 2, 2, ny // 2, 2, nz // 2, 2).mean(axis=(1, 3, 5))
    sigma = [fwhm_mm / 2.3548 / (2 * s) for s in spacing]
    blurred = ndimage.gaussian_filter(coarse, sigma, mode="constant")
    counts = rng.poisson(np.clip(blurred, 0.0, None) * counts_per_suv)
    pet = counts / counts_per_suv
    fine = pet.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    return fine.astype(np.float32)


COHORT = Cohort(track=TRACK, prefix="pet", sites=vendors(SITES), age_range=(30, 85))


def generate(
    out_dir: Path, *, n_train: int, n_test: int, seed: int, size: str = "demo"
) -> GeneratedTrack:
    """Write the PET/CT track under ``out_dir`` and describe it (module docstring: model)."""
    root, subjects = begin(COHORT, out_dir, n_train, n_test, seed, size)
    shape, spacing = GRIDS[size]
    ingest_dir = root / "data"
    ref_dir = root / "reference"
    images: dict[str, list[NDArray[Any]]] = {}
    labels: dict[str, NDArray[Any]] = {}
    inserted: dict[str, list[int]] = {}
    extra: dict[str, dict[str, Any]] = {}
    for i, s in enumerate(subjects):
        rng = case_rng(seed, TRACK, i)
        _vendor, fwhm, counts, ct_noise = SITES[s.site]
        ct, suv, organs = _body(rng, shape, spacing)
        negative = rng.random() < NEGATIVE_FRACTION
        n_les = 0 if negative else int(rng.integers(1, 5))
        balls = _lesions(rng, organs, spacing, n_les)
        mask = np.zeros(shape, np.uint8)
        for b in balls:
            suv[b] = suv[b] * rng.uniform(2.0, 8.0) + rng.uniform(1.0, 2.0)
            ct[b] = 30.0
            mask[b] = 1
        inserted[s.case_id] = [int(b.sum()) for b in balls]
        pet = _pet_scan(rng, suv, spacing, fwhm, counts)
        ct = ct + rng.normal(0.0, ct_noise, shape).astype(np.float32) * organs["body"]
        images[s.case_id] = [np.rint(ct).astype(np.int16), pet]
        labels[s.case_id] = mask
        extra[s.case_id] = {
            "n_lesions": len(balls),
            "lesion_volume_ml": round(int(mask.sum()) * float(np.prod(spacing)) / 1000.0, 4),
        }
    channels = ("CT", "PET")
    written = write_msd_layout(
        ingest_dir,
        name="demo-petct",
        description="Synthetic whole-body PET/CT with hypermetabolic lesions",
        channels=channels,
        label_names={"0": "background", "1": "lesion"},
        subjects=subjects,
        images=images,
        labels=labels,
        spacing=spacing,
        extra_columns=extra,
    )
    copy_test_labels(written, ref_dir)
    return describe(
        root,
        subjects,
        track=TRACK,
        task="autopet",
        task_config={},
        ingest_dir=ingest_dir,
        reference=ref_dir,
        channels=channels,
        label_names={"0": "background", "1": "lesion"},
        real_parts=(),
        synthetic_parts=(
            "whole-body CT (ellipsoid organs)",
            "PET: physiological uptake, lesions, PSF blur and Poisson noise",
            "lesion masks (the inserted balls)",
        ),
        seed=seed,
        size=size,
        notes={"inserted_lesion_voxels": inserted},
    )

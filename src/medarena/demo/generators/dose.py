"""Radiotherapy dose prediction (OpenKBP-style): a synthetic head-and-neck CT, ROIs and a dose.

Everything here is synthetic (no packaged anatomy has radiotherapy structures).

Anatomy. An elliptical neck cylinder of soft tissue (40 HU) with a fat rim (-100 HU), a
vertebral body and spinal canal (bone 700 HU), and the OpenKBP ROIs as simple shapes with
names the ``dose`` task's default configuration knows: SpinalCord (a cylinder in the canal),
Brainstem (an ellipsoid above the cord), Esophagus (a cylinder in front of the vertebra),
Larynx (an ellipsoid, air lumen -900 HU), Mandible (bone, a half ring at the top), Left- and
RightParotid (ellipsoids) and one target, PTV70 (an ellipsoid of random size and position
in front of the cord). Sizes and positions vary per subject.

Beam model. ``n`` coplanar beams at equally spaced gantry angles (axial plane, start angle
drawn per case). Each beam is parallel; its fluence is the target's beam's-eye-view
projection dilated by a 5 mm margin and blurred by a Gaussian penumbra (sigma per site), and
it is attenuated as ``exp(-mu * radiological depth)`` with mu = 0.005 / mm of water-equivalent
depth (density from HU: 1 + HU / 1000, at least 0). Beams are summed, dose outside the body
is zero, and the sum is scaled so that the PTV70's D95 (the 5th percentile of its voxel
doses, as OpenKBP computes it) equals the 70 Gy prescription. The dose is rounded to whole
cGy (so it can be ingested as an integer map): D95 is then 70 Gy within 0.005 Gy.

Site effects (for subgroup analysis): the number of beams, the penumbra and the CT noise
differ by site, so the dose shape and its predictability differ by site.

Limits: no scatter, no heterogeneity beyond depth scaling, no inverse optimisation, one dose
level (PTV70 only); OAR sparing is not modelled, so OAR doses follow geometry alone.

Output: ``data/`` (MSD layout: channel 0 CT in HU, 1 possible-dose mask, 2 the ROIs as
bits of one uint8 map, bit k = ``ROIS[k]`` (PTV70, then the OARs in OpenKBP's order), so
overlapping ROIs survive and no two channels are identical files; label = dose in cGy,
uint16) and ``reference/<case>/`` for the test cases in the
layout ``medarena evaluate --task dose`` reads (dose.nii.gz in Gy, possible_dose_mask.nii.gz,
<ROI>.nii.gz).
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
    describe,
    vendors,
    write_msd_layout,
    write_nifti,
)
from medarena.evaluation.dose import OPENKBP_OARS

TRACK = "dose"
VERSION = "1"
PRESCRIPTION_GY = 70.0
TARGET = "PTV70"
OARS = OPENKBP_OARS  # the OpenKBP organ names, in its order
ROIS = (TARGET, *OARS)
MU_PER_MM = 0.005
MARGIN_MM = 5.0
# site -> (scanner vendor, number of beams, penumbra sigma in mm, CT noise SD in HU)
SITES: dict[str, tuple[str, int, float, float]] = {
    "site-A": ("Siemens", 7, 3.0, 10.0),
    "site-B": ("Philips", 5, 4.5, 20.0),
    "site-C": ("GE", 9, 2.5, 35.0),
}
GRIDS: Grids = {
    "demo": ((64, 64, 48), (3.5, 3.5, 4.0)),
    "tiny": ((24, 24, 20), (9.0, 9.0, 9.0)),
}


def _anatomy(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[NDArray[np.float32], NDArray[np.bool_], dict[str, NDArray[np.bool_]]]:
    """CT in HU, body mask and ROI masks of one subject."""
    nx, ny, nz = shape
    sx, sy, sz = spacing
    x = (np.arange(nx) - (nx - 1) / 2) * sx
    y = (np.arange(ny) - (ny - 1) / 2) * sy
    z = np.arange(nz) * sz
    xx, yy, zz = np.meshgrid(x, y, z, indexing="ij")
    half_w = nx * sx / 2
    ax, ay = rng.uniform(0.72, 0.85) * half_w, rng.uniform(0.6, 0.72) * half_w
    body = (xx / ax) ** 2 + (yy / ay) ** 2 <= 1.0
    inner = (xx / (ax - 8)) ** 2 + (yy / (ay - 8)) ** 2 <= 1.0
    ct = np.full(shape, -1000.0, np.float32)
    ct[body] = -100.0
    ct[inner] = 40.0
    # y grows anterior: the spine sits posterior (negative y)
    vy = -0.45 * ay + rng.uniform(-3, 3)
    vert = (xx / 14) ** 2 + ((yy - vy) / 12) ** 2 <= 1.0
    canal_y = vy - 16
    canal = (xx / 7) ** 2 + ((yy - canal_y) / 7) ** 2 <= 1.0
    ct[vert | ((xx / 11) ** 2 + ((yy - canal_y) / 11) ** 2 <= 1.0)] = 700.0
    ct[canal] = 20.0
    top = z.max()
    rois: dict[str, NDArray[np.bool_]] = {}
    # Thin structures keep at least a voxel's width on coarse grids (the "tiny" size).
    thin = max(4.5, 0.75 * max(sx, sy))  # a disc this wide always holds a voxel centre
    cord = ((xx / thin) ** 2 + ((yy - canal_y) / thin) ** 2 <= 1.0) & (zz < 0.75 * top)
    rois["SpinalCord"] = cord
    rois["Brainstem"] = (xx / 10) ** 2 + ((yy - canal_y - 4) / 10) ** 2 + (
        (zz - 0.87 * top) / (0.12 * top)
    ) ** 2 <= 1.0
    ey = vy + 18
    rois["Esophagus"] = ((xx / max(6.0, thin)) ** 2 + ((yy - ey) / thin) ** 2 <= 1.0) & (
        zz < 0.55 * top
    )
    ly = ey + rng.uniform(14, 20)
    larynx = (xx / 14) ** 2 + ((yy - ly) / 11) ** 2 + ((zz - 0.5 * top) / (0.15 * top)) ** 2 <= 1
    rois["Larynx"] = larynx
    ct[(xx / 5) ** 2 + ((yy - ly) / 4) ** 2 + ((zz - 0.5 * top) / (0.13 * top)) ** 2 <= 1] = -900
    r_man = 0.62 * ay
    ring = np.abs(np.sqrt(xx**2 + (yy - 0.05 * ay) ** 2) - r_man) <= thin
    mandible = ring & (yy > 0.05 * ay) & (zz > 0.78 * top) & body
    rois["Mandible"] = mandible
    ct[mandible] = 800.0
    px = rng.uniform(0.55, 0.65) * ax
    pz = rng.uniform(0.72, 0.82) * top
    for name, sign in (("RightParotid", -1.0), ("LeftParotid", 1.0)):
        rois[name] = ((xx - sign * px) / 11) ** 2 + (yy / 14) ** 2 + (
            (zz - pz) / (0.1 * top)
        ) ** 2 <= 1.0
    # The target: in front of the vertebra, off-centre, 2-4.5 cm semi-axes.
    centre = (
        rng.uniform(-0.35, 0.35) * ax,
        rng.uniform(0.0, 0.35) * ay,
        rng.uniform(0.3, 0.7) * top,
    )
    semi = rng.uniform(15.0, 35.0, 3)
    ptv = ((xx - centre[0]) / semi[0]) ** 2 + ((yy - centre[1]) / semi[1]) ** 2 + (
        (zz - centre[2]) / semi[2]
    ) ** 2 <= 1.0
    ptv &= body & ~cord
    if not ptv.any():  # never on a sane grid; a one-voxel target keeps D95 defined
        ptv[nx // 2, ny // 2 + 1, nz // 2] = True
    rois[TARGET] = ptv
    for k in rois:
        rois[k] = rois[k] & body
    return ct, body, rois


def beam_dose(
    ct_hu: NDArray[Any],
    body: NDArray[np.bool_],
    target: NDArray[np.bool_],
    spacing: tuple[float, float, float],
    angles_deg: list[float],
    penumbra_mm: float,
) -> NDArray[np.float64]:
    """Unnormalised dose of coplanar parallel beams (module docstring: beam model)."""
    sx, sy, _ = spacing
    density = np.clip(1.0 + ct_hu.astype(np.float64) / 1000.0, 0.0, None) * body
    total = np.zeros(ct_hu.shape, np.float64)
    margin_vox = max(1, round(MARGIN_MM / sx))
    for angle in angles_deg:
        # Rotate so the beam travels along +y (array axis 1), from y = 0 upwards.
        rot_d = ndimage.rotate(density, angle, axes=(0, 1), reshape=False, order=1)
        rot_t = ndimage.rotate(
            target.astype(np.float64), angle, axes=(0, 1), reshape=False, order=1
        )
        bev = rot_t.max(axis=1) > 0.5  # (x, z) beam's-eye-view of the target
        bev = ndimage.binary_dilation(bev, iterations=margin_vox)
        fluence = ndimage.gaussian_filter(bev.astype(np.float64), penumbra_mm / sx)
        depth = np.cumsum(rot_d, axis=1) * sy
        beam = fluence[:, None, :] * np.exp(-MU_PER_MM * depth) * (rot_d > 0)
        total += ndimage.rotate(beam, -angle, axes=(0, 1), reshape=False, order=1)
    total = np.clip(total, 0.0, None)
    total[~body] = 0.0
    return total


def structure_bits(rois: dict[str, NDArray[np.bool_]]) -> NDArray[np.uint8]:
    """All ROI masks in one uint8 map: bit k is set where ``ROIS[k]`` is (overlaps kept)."""
    out = np.zeros(next(iter(rois.values())).shape, np.uint8)
    for k, name in enumerate(ROIS):
        out |= rois[name].astype(np.uint8) << k
    return out


def normalise_to_prescription(dose: NDArray[np.float64], target: NDArray[np.bool_]) -> NDArray[Any]:
    """Scale so the target's D95 (OpenKBP: 5th percentile) equals the prescription."""
    d95 = float(np.percentile(dose[target], 5.0))
    return dose * (PRESCRIPTION_GY / d95)


COHORT = Cohort(track=TRACK, prefix="hn", sites=vendors(SITES), age_range=(35, 80))


def generate(
    out_dir: Path, *, n_train: int, n_test: int, seed: int, size: str = "demo"
) -> GeneratedTrack:
    """Write the dose track under ``out_dir`` and describe it (module docstring: model)."""
    root, subjects = begin(COHORT, out_dir, n_train, n_test, seed, size)
    shape, spacing = GRIDS[size]
    ingest_dir = root / "data"
    ref_dir = root / "reference"
    images: dict[str, list[NDArray[Any]]] = {}
    labels: dict[str, NDArray[Any]] = {}
    d95s: dict[str, float] = {}
    for i, s in enumerate(subjects):
        rng = case_rng(seed, TRACK, i)
        _vendor, n_beams, penumbra, noise = SITES[s.site]
        ct, body, rois = _anatomy(rng, shape, spacing)
        start = float(rng.uniform(0.0, 360.0 / n_beams))
        angles = [start + k * 360.0 / n_beams for k in range(n_beams)]
        dose = normalise_to_prescription(
            beam_dose(ct, body, rois[TARGET], spacing, angles, penumbra), rois[TARGET]
        )
        cgy = np.rint(dose * 100.0).astype(np.uint16)
        dose_gy = (cgy.astype(np.float64) / 100.0).astype(np.float32)
        d95s[s.case_id] = float(np.percentile(dose_gy[rois[TARGET]], 5.0))
        ct_noisy = ct + rng.normal(0.0, noise, shape).astype(np.float32) * body
        ct_i = np.rint(ct_noisy).astype(np.int16)
        images[s.case_id] = [ct_i, body.astype(np.uint8), structure_bits(rois)]
        labels[s.case_id] = cgy
        if s.test:
            case_dir = ref_dir / s.case_id
            write_nifti(case_dir / "dose.nii.gz", dose_gy, spacing)
            write_nifti(case_dir / "possible_dose_mask.nii.gz", body.astype(np.uint8), spacing)
            for r in ROIS:
                write_nifti(case_dir / f"{r}.nii.gz", rois[r].astype(np.uint8), spacing)
    channels = ("CT", "possible_dose_mask", "structures (bit k = ROIS[k])")
    write_msd_layout(
        ingest_dir,
        name="demo-dose",
        description="Synthetic head-and-neck CT, ROIs and a coplanar-beam dose (cGy)",
        channels=channels,
        label_names={"0": "dose in cGy (a value map, not classes)"},
        subjects=subjects,
        images=images,
        labels=labels,
        spacing=spacing,
    )
    ref_dir.mkdir(parents=True, exist_ok=True)
    return describe(
        root,
        subjects,
        track=TRACK,
        task="dose",
        task_config={"targets": [TARGET], "rois": list(ROIS)},
        ingest_dir=ingest_dir,
        reference=ref_dir,
        channels=channels,
        label_names={"dose": "dose in cGy (uint16); the reference folder holds Gy"},
        real_parts=(),
        synthetic_parts=(
            "head-and-neck CT (ellipsoid anatomy)",
            "ROI masks",
            "dose from a coplanar parallel-beam model normalised to D95 = 70 Gy",
        ),
        seed=seed,
        size=size,
        notes={"prescription_gy": PRESCRIPTION_GY, "d95_gy": d95s},
    )

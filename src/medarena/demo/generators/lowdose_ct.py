"""Low-dose CT denoising: real CT slices and Shepp-Logan-style phantoms, low dose by sinogram noise.

Real parts. Four CT slices shipped inside installed packages (read from the local files,
never downloaded): pydicom's ``CT_small.dcm`` (128 × 128, a vertebra) and pydicom-data's
``693_UNCR.dcm`` (512 × 512, a head) and the two frames of ``eCT_Supplemental.dcm``
(enhanced CT, a head). Each case takes one of them, flipped / rotated by a multiple of 90°
and cropped to 80-100 % of its field of view (drawn per case), resampled to the grid.
Synthetic parts. Every other case is a phantom: the ten ellipses of the modified
Shepp-Logan head (Toft's intensities mapped to HU: skull 800, brain 30, ventricles -10,
features 10-50), each ellipse's centre, axes and angle jittered, plus 0-3 small round
lesions (±20-60 HU).

Dose model. HU -> linear attenuation mu = 0.0193 / mm × (1 + HU / 1000) (water at about
70 keV; air is 0), zero outside the inscribed circle. Line integrals from
``skimage.transform.radon`` (parallel beam, 180 angles for "demo", 90 for "tiny"). The
low-dose scan: counts ~ Poisson(I0 × exp(-line integral)) with I0 photons per ray set by the
site, log-transformed back (a zero count becomes 1). Both images are filtered
back-projections (``iradon``, ramp filter) of the same geometry: the target is the
reconstruction of the noise-free sinogram (the full-dose limit), the input that of the noisy
one, so the difference is the dose noise alone.

Units: CT numbers + 1024 (air = 0, water = 1024), as stored by most scanners. The target
is rounded to whole numbers and clipped at 0 (so it can be ingested as an integer map);
the input is float32. PSNR/SSIM with ``data_range="ref_max"`` compare them directly.

Site effects: I0 (photons per ray) is 2e5, 5e4 or 1e4 by site, so noise and PSNR differ by
site.

Limits: 2-D slices only, monochromatic parallel-beam geometry, no beam hardening, scatter,
electronic noise or bowtie filter; a real slice's own scanner noise is part of its target.

Output: ``data/`` (MSD layout: channel 0 the low-dose image, label = target, each
``(n, n, 1)``) and ``reference/`` (the test targets, as ``medarena evaluate --task
image-to-image`` reads them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_rescale
from skimage.transform import iradon, radon, resize

from medarena.demo.generators.common import (
    Cohort,
    GeneratedTrack,
    begin,
    case_rng,
    copy_test_labels,
    describe,
    vendors,
    write_msd_layout,
)
from medarena.errors import MedarenaError

TRACK = "lowdose_ct"
VERSION = "1"
MU_WATER_PER_MM = 0.0193
OFFSET = 1024.0
REAL_FILES = ("CT_small.dcm", "693_UNCR.dcm", "eCT_Supplemental.dcm")
PHANTOM_FOV_MM = 250.0
SLICE_MM = 5.0
# site -> (scanner vendor, incident photons per ray)
SITES: dict[str, tuple[str, float]] = {
    "site-A": ("Siemens", 2e5),
    "site-B": ("GE", 5e4),
    "site-C": ("Canon", 1e4),
}
GRIDS: dict[str, tuple[int, int]] = {"demo": (128, 180), "tiny": (64, 90)}

# Modified Shepp-Logan (Toft): intensity, semi-axes a, b, centre x, y, angle (degrees).
_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


@dataclass(frozen=True)
class RealSlice:
    """One packaged CT slice in HU with its pixel size."""

    source: str
    hu: NDArray[np.float64]
    pixel_mm: float


def real_slices() -> list[RealSlice]:
    """The packaged CT slices (module docstring), read from installed files only."""
    out = []
    for name in REAL_FILES:
        path = get_testdata_file(name, download=False)
        if not isinstance(path, str):
            raise MedarenaError(
                f"packaged CT slice {name} is not installed; reinstall pydicom and pydicom-data"
            )
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
        if "PixelSpacing" in ds:
            pixel = float(ds.PixelSpacing[0])
            hu = apply_rescale(arr, ds)
        else:  # enhanced CT: geometry and rescale live in the shared functional groups
            shared = ds.SharedFunctionalGroupsSequence[0]
            pixel = float(shared.PixelMeasuresSequence[0].PixelSpacing[0])
            tr = shared.PixelValueTransformationSequence[0]
            hu = arr * float(tr.RescaleSlope) + float(tr.RescaleIntercept)
        frames = hu[None] if hu.ndim == 2 else hu
        for k, frame in enumerate(frames):
            tag = name if len(frames) == 1 else f"{name}#frame{k + 1}"
            out.append(RealSlice(f"pydicom:{tag}", frame.astype(np.float64), pixel))
    return out


def _from_real(rng: np.random.Generator, sl: RealSlice, n: int) -> tuple[NDArray[Any], float]:
    img = np.clip(sl.hu, -1024.0, 3071.0)
    img = np.rot90(img, int(rng.integers(4)))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    side = min(img.shape)
    crop = max(8, int(side * rng.uniform(0.8, 1.0)))
    r0 = int(rng.integers(0, img.shape[0] - crop + 1))
    c0 = int(rng.integers(0, img.shape[1] - crop + 1))
    img = img[r0 : r0 + crop, c0 : c0 + crop]
    out = resize(img, (n, n), order=1, anti_aliasing=True, preserve_range=True)
    return out, sl.pixel_mm * crop / n


def _phantom(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """A jittered modified Shepp-Logan head in HU with 0-3 small lesions."""
    coords = (np.arange(n) - (n - 1) / 2) / (n / 2)
    yy, xx = np.meshgrid(-coords, coords, indexing="ij")
    rel = np.zeros((n, n))
    for k, (value, a, b, x0, y0, ang) in enumerate(_SHEPP_LOGAN):
        j = 1.0 if k < 2 else rng.uniform(0.85, 1.15)  # keep the skull's shape
        a, b = a * j, b * rng.uniform(0.85, 1.15) if k >= 2 else b
        x0 += rng.uniform(-0.03, 0.03) if k >= 2 else 0.0
        y0 += rng.uniform(-0.03, 0.03) if k >= 2 else 0.0
        th = math.radians(ang + (rng.uniform(-10, 10) if k >= 2 else 0.0))
        xr = (xx - x0) * math.cos(th) + (yy - y0) * math.sin(th)
        yr = -(xx - x0) * math.sin(th) + (yy - y0) * math.cos(th)
        rel[(xr / a) ** 2 + (yr / b) ** 2 <= 1.0] += value
    # Toft's levels: 1.0 skull, 0.2 brain, 0.1-0.4 features; map 0.2 -> 30 HU, 1.0 -> 800 HU.
    a0, b0 = _SHEPP_LOGAN[0][1:3]
    head = (xx / a0) ** 2 + (yy / b0) ** 2 <= 1.0
    hu = np.where(head, 30.0 + (rel - 0.2) * 200.0, -1000.0)
    hu[rel >= 0.95] = 800.0
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(-0.4, 0.4, 2)
        r = rng.uniform(0.03, 0.08)
        hu[(xx - cx) ** 2 + (yy - cy) ** 2 <= r**2] += rng.choice([-1.0, 1.0]) * rng.uniform(
            20.0, 60.0
        )
    return hu


def _circle(n: int) -> NDArray[np.bool_]:
    c = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n]
    # Strictly inside radon's reconstruction circle (radius n // 2 about n // 2).
    return np.asarray((yy - n // 2) ** 2 + (xx - n // 2) ** 2 < (n // 2 - 1) ** 2) & (c >= 0)


def simulate(
    rng: np.random.Generator, hu: NDArray[Any], pixel_mm: float, n_angles: int, photons: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(full-dose target, low-dose input) in HU from a slice in HU (module docstring: model)."""
    n = hu.shape[0]
    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    mu = np.clip(MU_WATER_PER_MM * (1.0 + hu / 1000.0), 0.0, None) * _circle(n)
    sino = radon(mu, theta=theta, circle=True) * pixel_mm
    counts = rng.poisson(photons * np.exp(-sino))
    noisy = -np.log(np.maximum(counts, 1) / photons)

    def recon(s: NDArray[np.float64]) -> NDArray[np.float64]:
        m = iradon(s / pixel_mm, theta=theta, filter_name="ramp", circle=True, output_size=n)
        return np.asarray((m / MU_WATER_PER_MM - 1.0) * 1000.0)

    return recon(sino), recon(noisy)


COHORT = Cohort(track=TRACK, prefix="ldct", sites=vendors(SITES), age_range=(20, 85))


def generate(
    out_dir: Path, *, n_train: int, n_test: int, seed: int, size: str = "demo"
) -> GeneratedTrack:
    """Write the low-dose CT track under ``out_dir`` and describe it (module docstring)."""
    root, subjects = begin(COHORT, out_dir, n_train, n_test, seed, size)
    n, n_angles = GRIDS[size]
    ingest_dir = root / "data"
    ref_dir = root / "reference"
    reals = real_slices()
    images: dict[str, list[NDArray[Any]]] = {}
    labels: dict[str, NDArray[Any]] = {}
    extra: dict[str, dict[str, Any]] = {}
    spacings: dict[str, tuple[float, float, float]] = {}
    for i, s in enumerate(subjects):
        rng = case_rng(seed, TRACK, i)
        if i % 2 == 0:
            sl = reals[(i // 2) % len(reals)]
            hu, pixel = _from_real(rng, sl, n)
            source = sl.source
        else:
            hu, pixel, source = _phantom(rng, n), PHANTOM_FOV_MM / n, "phantom:shepp-logan"
        photons = SITES[s.site][1]
        target, low = simulate(rng, hu, pixel, n_angles, photons)
        target_i = np.clip(np.rint(target + OFFSET), 0, 65535).astype(np.uint16)
        images[s.case_id] = [(low + OFFSET).astype(np.float32)[:, :, None]]
        labels[s.case_id] = target_i[:, :, None]
        extra[s.case_id] = {"source": source, "incident_photons": int(photons)}
        spacings[s.case_id] = (round(pixel, 4), round(pixel, 4), SLICE_MM)
    written = write_msd_layout(
        ingest_dir,
        name="demo-lowdose-ct",
        description="Low-dose CT denoising: packaged CT slices and phantoms, sinogram noise",
        channels=("low-dose CT",),
        label_names={"0": "full-dose CT (a value map, not classes)"},
        subjects=subjects,
        images=images,
        labels=labels,
        spacing=spacings,
        extra_columns=extra,
    )
    copy_test_labels(written, ref_dir)
    return describe(
        root,
        subjects,
        track=TRACK,
        task="image-to-image",
        task_config={"data_range": "ref_max"},
        ingest_dir=ingest_dir,
        reference=ref_dir,
        channels=("low-dose CT (CT number + 1024)",),
        label_names={"target": "full-dose CT (CT number + 1024, uint16)"},
        real_parts=tuple(r.source for r in reals),
        synthetic_parts=(
            "Shepp-Logan-style phantoms (every other case)",
            "low-dose noise: Poisson counts on radon sinograms, FBP reconstruction",
        ),
        seed=seed,
        size=size,
        notes={"sources": {k: v["source"] for k, v in extra.items()}},
    )

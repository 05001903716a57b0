"""Glioma segmentation demo track: four MR contrasts from the MNI152 tissue maps, grown tumours.

Model (docs/demo-data.md, "Glioma segmentation"):

- Anatomy: the real MNI152 GM/WM maps (CSF derived, :mod:`.mni`), scaled per subject by a
  head-size factor (sex and individual variation) about the grid centre.
- Tumour: 1 lesion, or 2 in about a third of the cases, seeded in white matter at least one
  radius away from the ventricles. A lesion is an irregular ball: the normalised distance
  ``d = |x - c| / R`` is perturbed by smooth noise; necrotic core (label 1, NCR) where
  ``d < core``, enhancing rim (label 3, ET) where ``core <= d < 1``, oedema (label 2, ED)
  where ``d < reach * (0.75 + 0.5 * WM)`` (it spreads further along white matter). Tumour
  voxels are kept only inside brain parenchyma (GM + WM >= 0.5, not ventricle); a later
  lesion never overwrites an earlier one's core or rim. Small second lesions may have no core.
- Contrasts: each voxel mixes tissue intensities by its GM/WM/CSF fractions; tumour labels
  replace the tissue value (ET bright on T1ce, ED bright on FLAIR and T2, NCR dark on T1 and
  bright on T2). Then a site-specific bias field, blur (resolution) and Rician noise.
- Labels: BraTS 2023 (0 background, 1 NCR, 2 ED (SNFH), 3 ET). The label map is drawn first
  and the images are synthesised from it, so the ground truth is exact by construction.

Limits: no mass effect (the tumour does not push the anatomy), no contrast-enhancing vessels,
no skull or scalp, one template brain (subjects differ by scale, site and tumours only),
a coarse grid (3 mm demo, 6 mm tiny). Images are stored as int16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from medarena.demo.generators.common import (
    Cohort,
    GeneratedTrack,
    begin,
    case_rng,
    describe,
    write_msd_layout,
)
from medarena.demo.generators.mni import MNI_SOURCE, TissueMaps, bias_field, rician, tissue_maps

TRACK = "glioma"
VERSION = "1"
CHANNELS = ("T1", "T1ce", "T2", "FLAIR")
LABELS = {"0": "background", "1": "NCR", "2": "ED", "3": "ET"}
SPACING = {"demo": 3.0, "tiny": 6.0}
#: site -> scanner manufacturer; the sites differ in noise, bias field and blur (below).
SITES = {"site-A": "SIEMENS", "site-B": "GE MEDICAL SYSTEMS", "site-C": "Philips"}
SITE_EFFECTS: dict[str, dict[str, float]] = {
    # noise: Rician sigma (fraction of WM T1); bias: field amplitude; blur: Gaussian sigma (voxels)
    "site-A": {"noise": 0.02, "bias": 0.08, "blur": 0.0},
    "site-B": {"noise": 0.05, "bias": 0.15, "blur": 0.0},
    "site-C": {"noise": 0.04, "bias": 0.25, "blur": 0.8},
}
#: intensity per channel of CSF, GM, WM, NCR, ED, ET (arbitrary units; WM on T1 = 1).
CONTRAST: dict[str, tuple[float, float, float, float, float, float]] = {
    "T1": (0.25, 0.70, 1.00, 0.35, 0.60, 0.65),
    "T1ce": (0.25, 0.72, 1.00, 0.35, 0.62, 1.60),
    "T2": (1.00, 0.60, 0.40, 0.95, 0.85, 0.70),
    "FLAIR": (0.15, 0.65, 0.50, 0.55, 1.10, 0.85),
}


@dataclass(frozen=True)
class Lesion:
    """One inserted tumour: centre (voxels), enhancing radius (mm), core and oedema ratios."""

    centre: tuple[float, float, float]
    radius_mm: float
    core: float
    reach: float


def _scaled(maps: TissueMaps, factor: float) -> TissueMaps:
    """The maps scaled by ``factor`` about the grid centre (head size)."""
    centre = (np.array(maps.shape) - 1) / 2.0
    matrix = np.eye(3) / factor
    offset = centre - matrix @ centre

    def warp(a: NDArray[Any], order: int) -> NDArray[Any]:
        return ndi.affine_transform(a, matrix, offset=offset, order=order, mode="constant")

    return TissueMaps(
        gm=warp(maps.gm, 1).astype(np.float32),
        wm=warp(maps.wm, 1).astype(np.float32),
        csf=warp(maps.csf, 1).astype(np.float32),
        ventricles=warp(maps.ventricles.astype(np.uint8), 0).astype(bool),
        spacing=maps.spacing,
    )


def _draw_lesions(maps: TissueMaps, rng: np.random.Generator, count: int) -> list[Lesion]:
    s = maps.spacing
    far_from_ventricles = ndi.distance_transform_edt(~maps.ventricles) * s
    depth = ndi.distance_transform_edt(maps.brain) * s
    lesions: list[Lesion] = []
    for k in range(count):
        radius = float(rng.uniform(9.0, 16.0) if k == 0 else rng.uniform(6.0, 10.0))
        ok = (maps.wm > 0.6) & (far_from_ventricles > radius) & (depth > radius * 0.8)
        for other in lesions:
            grids = np.indices(maps.shape).astype(np.float32)
            dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, other.centre, strict=True))) * s
            ok &= dist > (other.radius_mm + radius) * 2.2
        candidates = np.argwhere(ok)
        if len(candidates) == 0:
            candidates = np.argwhere(maps.wm > 0.5)
        c = candidates[rng.integers(len(candidates))]
        core = float(rng.uniform(0.5, 0.75)) if (k == 0 or rng.random() < 0.5) else 0.0
        reach = float(rng.uniform(1.3, 1.8))
        lesions.append(Lesion((float(c[0]), float(c[1]), float(c[2])), radius, core, reach))
    return lesions


def tumour_labels(
    maps: TissueMaps, lesions: list[Lesion], rng: np.random.Generator
) -> NDArray[np.uint8]:
    """The BraTS 2023 label map of ``lesions`` in ``maps`` (see the module docstring)."""
    grids = np.indices(maps.shape).astype(np.float32)
    allowed = maps.brain & ~maps.ventricles
    labels = np.zeros(maps.shape, np.uint8)
    for lesion in lesions:
        dist = (
            np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, lesion.centre, strict=True)))
            * maps.spacing
        )
        noise = ndi.gaussian_filter(rng.normal(0.0, 1.0, maps.shape), 1.5)
        noise /= max(float(np.abs(noise).max()), 1e-6)
        d = dist / lesion.radius_mm + 0.15 * noise
        oedema = (d < lesion.reach * (0.75 + 0.5 * maps.wm)) & allowed & (labels == 0)
        labels[oedema] = 2
        free = allowed & (labels != 1) & (labels != 3)
        labels[(d < 1.0) & free] = 3
        labels[(d < lesion.core) & free] = 1
    return labels


def synthesise(
    maps: TissueMaps, labels: NDArray[np.uint8], site: str, rng: np.random.Generator
) -> list[NDArray[np.int16]]:
    """T1, T1ce, T2 and FLAIR of one subject (site effects included)."""
    effects = SITE_EFFECTS[site]
    field = bias_field(maps.shape, effects["bias"], rng)
    out = []
    for name in CHANNELS:
        csf, gm, wm, ncr, ed, et = CONTRAST[name]
        img = maps.csf * csf + maps.gm * gm + maps.wm * wm
        for value, tissue in ((ncr, 1), (ed, 2), (et, 3)):
            img = np.where(labels == tissue, value, img)
        img = img * field
        if effects["blur"] > 0:
            img = ndi.gaussian_filter(img, effects["blur"])
        img = rician(img.astype(np.float32), effects["noise"], rng)
        out.append(np.round(np.clip(img * 1000.0, 0, 32767)).astype(np.int16))
    return out


COHORT = Cohort(track=TRACK, prefix="gli", sites=SITES, age_range=(25, 80))


def generate(
    out_dir: Path, *, n_train: int, n_test: int, seed: int, size: str = "demo"
) -> GeneratedTrack:
    """Write the glioma track (MSD layout, test labels in ``labelsTs``) under ``out_dir``."""
    root, subjects = begin(COHORT, out_dir, n_train, n_test, seed, size)
    ingest_dir = root / "data"
    template = tissue_maps(SPACING[size])
    images: dict[str, list[NDArray[np.int16]]] = {}
    labels: dict[str, NDArray[np.uint8]] = {}
    cases: dict[str, Any] = {}
    for i, subj in enumerate(subjects):
        rng = case_rng(seed, TRACK, i)
        head = (1.03 if subj.sex == "M" else 0.97) * float(rng.normal(1.0, 0.02))
        maps = _scaled(template, head)
        count = 2 if rng.random() < 1 / 3 else 1
        lesions = _draw_lesions(maps, rng, count)
        lab = tumour_labels(maps, lesions, rng)
        labels[subj.case_id] = lab
        images[subj.case_id] = synthesise(maps, lab, subj.site, rng)
        voxel_ml = maps.spacing**3 / 1000.0
        cases[subj.case_id] = {
            "lesions": len(lesions),
            "head_scale": round(head, 4),
            "volume_ml": {
                name: round(float((lab == int(v)).sum()) * voxel_ml, 4)
                for v, name in LABELS.items()
                if v != "0"
            },
        }
    write_msd_layout(
        ingest_dir,
        name="medarena demo: glioma segmentation",
        description="Synthetic gliomas in the MNI152 brain; see docs/demo-data.md",
        channels=CHANNELS,
        label_names=LABELS,
        subjects=subjects,
        images=images,
        labels=labels,
        spacing=(template.spacing,) * 3,
    )
    return describe(
        root,
        subjects,
        track=TRACK,
        task="brats",
        task_config={"labels": "2023", "subchallenge": "GLI", "lesion_wise": True},
        ingest_dir=ingest_dir,
        reference=ingest_dir / "labelsTs",
        channels=CHANNELS,
        label_names=LABELS,
        real_parts=(MNI_SOURCE,),
        synthetic_parts=(
            "CSF map (derived from the GM/WM maps)",
            "MR contrasts T1, T1ce, T2, FLAIR (tissue mixing model)",
            "tumours: necrotic core, enhancing rim, oedema (grown in white matter)",
            "head-size scaling, bias field, blur, Rician noise",
            "sex, age, site, scanner manufacturer",
        ),
        seed=seed,
        size=size,
        notes={"version": VERSION, "spacing_mm": template.spacing, "cases": cases},
    )

"""Brain-age regression demo track: T1-weighted MNI152 brains warped per subject, target = age.

Model (docs/demo-data.md, "Brain-age regression"), for a subject of age ``a`` years:

- Cortical thinning: grey matter loses the fraction ``0.004 * (a - 20) * r * outer`` of itself,
  which becomes CSF. ``outer`` (0..1) is high at the outer cortex and low next to white matter
  (1 minus the normalised WM map smoothed by 4 mm); ``r`` is the subject's atrophy rate,
  drawn from N(1, 0.2) (people age at different speeds, so age is not read off exactly).
- Ventricle enlargement (ex vacuo): the ventricle wall recedes ``0.016 * (a - 20)`` mm into
  the surrounding tissue (partial volume at the new wall); the tissue it passes becomes CSF,
  so the intracranial volume does not change with age. The rate is calibrated so that the
  ventricular CSF grows about 2.5-fold from 20 to 80 years at 3 mm (the derived ventricle
  mask of the template has a large, fragmented surface, hence the small rate).
- Per subject: head size (1.03 men, 0.97 women, times N(1, 0.02)) and a smooth random
  deformation of about 1.5 mm.
- Image: T1 contrast mixing CSF, GM and WM by their fractions with site-specific tissue
  values, a site-specific multiplicative bias field and Rician noise, stored as int16.
- Target: the age (whole years), in ``targets.csv`` (column ``chronological_age``) and as
  the ``age`` attribute in ``metadata.csv`` for training cases only (attributes are shown to
  participants; a test case's age would be its hidden label); the test reference is
  ``reference.csv`` (``case_id,value``) for ``medarena evaluate --task regression``.

Limits: one template brain (no real inter-subject anatomy), linear-in-age atrophy from 20
years (real trajectories are non-linear and vary by region), WM ageing and lesions are not
modelled, no skull, a coarse grid (3 mm demo, 6 mm tiny).
"""

from __future__ import annotations

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
    image_dir,
    write_csv,
    write_csv_labelled_folder,
    write_nifti,
)
from medarena.demo.generators.mni import MNI_SOURCE, TissueMaps, bias_field, rician, tissue_maps

TRACK = "brain_age"
VERSION = "2"  # 2: no age attribute on test cases (it is their label)
SPACING = {"demo": 3.0, "tiny": 6.0}
AGE_RANGE = (20, 85)
THINNING_PER_YEAR = 0.004
VENTRICLE_GROWTH_MM_PER_YEAR = 0.016
SITES = {"site-A": "SIEMENS", "site-B": "GE MEDICAL SYSTEMS", "site-C": "Philips"}
#: per site: T1 values of CSF, GM, WM; Rician noise sigma; bias field amplitude.
SITE_EFFECTS: dict[str, dict[str, Any]] = {
    "site-A": {"tissue": (0.20, 0.62, 1.00), "noise": 0.02, "bias": 0.08},
    "site-B": {"tissue": (0.28, 0.70, 1.00), "noise": 0.05, "bias": 0.15},
    "site-C": {"tissue": (0.15, 0.55, 1.00), "noise": 0.04, "bias": 0.30},
}


def subject_maps(
    template: TissueMaps,
    age: float,
    *,
    rate: float = 1.0,
    head: float = 1.0,
    deformation: NDArray[np.float32] | None = None,
) -> TissueMaps:
    """The tissue maps of one subject of ``age`` years (the model in the module docstring)."""
    years = max(float(age) - AGE_RANGE[0], 0.0)
    s = template.spacing
    wm_smooth = ndi.gaussian_filter(template.wm, 4.0 / s)
    outer = 1.0 - wm_smooth / max(float(wm_smooth.max()), 1e-6)
    loss = template.gm * np.clip(THINNING_PER_YEAR * years * rate * outer, 0.0, 0.9)
    gm = template.gm - loss
    csf = template.csf + loss
    # ex-vacuo ventricle enlargement: the ventricle wall recedes into the tissue around it
    reach = VENTRICLE_GROWTH_MM_PER_YEAR * years
    dist = np.asarray(ndi.distance_transform_edt(~template.ventricles)) * s
    grow = np.where(template.ventricles, 0.0, np.clip((reach - dist) / s + 1.0, 0.0, 1.0))
    moved = (gm + template.wm) * grow
    gm, wm, csf = gm * (1 - grow), template.wm * (1 - grow), csf + moved
    ventricles = template.ventricles | (grow > 0)
    centre = (np.array(template.shape, dtype=np.float32) - 1) / 2.0
    grids = np.indices(template.shape).astype(np.float32)
    coords = np.stack([c + (g - c) / head for g, c in zip(grids, centre, strict=True)])
    if deformation is not None:
        coords = coords + deformation

    def warp(a: NDArray[Any], order: int) -> NDArray[Any]:
        return ndi.map_coordinates(a, coords, order=order, mode="constant")

    return TissueMaps(
        gm=warp(gm, 1).astype(np.float32),
        wm=warp(wm, 1).astype(np.float32),
        csf=warp(csf, 1).astype(np.float32),
        ventricles=warp(ventricles.astype(np.uint8), 0).astype(bool),
        spacing=s,
    )


def ventricle_volume_ml(maps: TissueMaps) -> float:
    """CSF volume (partial-volume fractions) inside the (grown) ventricle mask, in ml."""
    return float((maps.csf * maps.ventricles).sum()) * maps.spacing**3 / 1000.0


def _deformation(shape: tuple[int, ...], spacing: float, rng: np.random.Generator) -> Any:
    field = np.stack(
        [ndi.gaussian_filter(rng.normal(0.0, 1.0, shape), 12.0 / spacing) for _ in shape]
    )
    field /= max(float(np.abs(field).max()), 1e-6)
    return (field * 1.5 / spacing).astype(np.float32)


def t1_image(maps: TissueMaps, site: str, rng: np.random.Generator) -> NDArray[np.int16]:
    """The T1-weighted image of ``maps`` as acquired at ``site``."""
    eff = SITE_EFFECTS[site]
    csf, gm, wm = eff["tissue"]
    img = (maps.csf * csf + maps.gm * gm + maps.wm * wm) * bias_field(maps.shape, eff["bias"], rng)
    img = rician(img.astype(np.float32), eff["noise"], rng)
    return np.round(np.clip(img * 1000.0, 0, 32767)).astype(np.int16)


COHORT = Cohort(track=TRACK, prefix="bage", sites=SITES, age_range=AGE_RANGE)


def generate(
    out_dir: Path, *, n_train: int, n_test: int, seed: int, size: str = "demo"
) -> GeneratedTrack:
    """Write the brain-age track (MSD images, targets.csv, metadata.csv) under ``out_dir``."""
    root, subjects = begin(COHORT, out_dir, n_train, n_test, seed, size)
    data = root / "data"
    template = tissue_maps(SPACING[size])
    spacing = (template.spacing,) * 3
    voxel_ml = template.spacing**3 / 1000.0
    cases: dict[str, Any] = {}
    for i, subj in enumerate(subjects):
        rng = case_rng(seed, TRACK, i)
        rate = float(np.clip(rng.normal(1.0, 0.2), 0.4, 1.6))
        head = (1.03 if subj.sex == "M" else 0.97) * float(rng.normal(1.0, 0.02))
        maps = subject_maps(
            template,
            subj.age,
            rate=rate,
            head=head,
            deformation=_deformation(template.shape, template.spacing, rng),
        )
        write_nifti(
            image_dir(data, subj) / f"{subj.case_id}_0000.nii.gz",
            t1_image(maps, subj.site, rng),
            spacing,
        )
        cases[subj.case_id] = {
            "atrophy_rate": round(rate, 4),
            "head_scale": round(head, 4),
            "icv_ml": round(float((maps.gm + maps.wm + maps.csf).sum()) * voxel_ml, 3),
            "gm_ml": round(float(maps.gm.sum()) * voxel_ml, 3),
            "ventricles_ml": round(ventricle_volume_ml(maps), 3),
        }
    write_csv_labelled_folder(
        data,
        name="medarena demo: brain-age regression",
        description="MNI152 brains aged by a documented atrophy model; see docs/demo-data.md",
        channels=("T1",),
        subjects=subjects,
        suffix=".nii.gz",
        labels_file="targets.csv",
        header=("case_id", "chronological_age"),
        rows=[(s.case_id, s.age) for s in subjects],
        age_is_target=True,
    )
    reference = write_csv(
        root / "reference.csv",
        ("case_id", "value"),
        [(s.case_id, s.age) for s in subjects if s.test],
    )
    return describe(
        root,
        subjects,
        track=TRACK,
        task="regression",
        task_config={"value_column": "value"},
        ingest_dir=data,
        reference=reference,
        channels=("T1",),
        label_names={"chronological_age": "age in whole years (the regression target)"},
        real_parts=(MNI_SOURCE,),
        synthetic_parts=(
            "CSF map (derived from the GM/WM maps)",
            "age-dependent cortical thinning and ventricle enlargement (documented model)",
            "head-size scaling and smooth random deformation",
            "T1 contrast, bias field, Rician noise",
            "sex, age, site, scanner manufacturer",
        ),
        seed=seed,
        size=size,
        notes={"version": VERSION, "spacing_mm": template.spacing, "cases": cases},
    )

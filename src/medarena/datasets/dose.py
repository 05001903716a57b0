"""Reference of a dose-prediction case, stored as objects of the case (OpenKBP layout).

A dose case is the CT (role ``image``, as ingested) plus three kinds of reference objects:

- role ``dose``: the reference dose in Gy, on the CT's grid;
- role ``possible_dose_mask``: where dose may be deposited (the OpenKBP dose score's mask);
- role ``roi:<NAME>``: one structure mask per region of interest (``roi:PTV70``,
  ``roi:SpinalCord``); the role carries the name, so two structures with identical masks
  are still two objects.

On disk the same reference is the folder ``medarena evaluate --task dose`` reads:
``<case>/dose.nii.gz``, ``<case>/possible_dose_mask.nii.gz``, ``<case>/<NAME>.nii.gz``
(:func:`write_reference_folder`). :func:`attach_dose_references` stores such folders
(what the dose demo generator writes under ``reference/``) as case objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from medarena.datasets.case_objects import NewObject, replace_objects
from medarena.datasets.catalogue import Catalogue
from medarena.db.models import Case, Dataset
from medarena.errors import InputError, NotFoundError
from medarena.storage import LocalObjectStore

DOSE_ROLE = "dose"
MASK_ROLE = "possible_dose_mask"
ROI_PREFIX = "roi:"
NIFTI_GZ_MEDIA_TYPE = "application/x-nifti+gzip"
_ROI_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,27}$")  # fits role (32) and a file name
_SUFFIXES = (".nii.gz", ".nii")


def is_dose_role(role: str) -> bool:
    """True for the roles of a dose reference (never shown to participants of hidden splits)."""
    return role in (DOSE_ROLE, MASK_ROLE) or role.startswith(ROI_PREFIX)


def reference_file_name(role: str) -> str:
    """File name of a dose reference object in the evaluation layout."""
    name = role[len(ROI_PREFIX) :] if role.startswith(ROI_PREFIX) else role
    return f"{name}.nii.gz"


def write_reference_folder(store: LocalObjectStore, case: Case, dest: Path) -> Path:
    """Write ``case``'s dose reference as ``dest/<case>/`` (the layout the dose task reads).

    RuntimeError when the case has no dose or no possible-dose mask: an organizer's data
    problem, never a message for a team.
    """
    objects = [o for o in case.objects if is_dose_role(o.role)]
    roles = [o.role for o in objects]
    for needed in (DOSE_ROLE, MASK_ROLE):
        if roles.count(needed) != 1:
            raise RuntimeError(
                f"case {case.case_key!r} has {roles.count(needed)} {needed!r} objects; "
                "exactly one is needed"
            )
    folder = dest / case.case_key
    folder.mkdir(parents=True)
    for o in objects:
        store.copy_to(o.digest, folder / reference_file_name(o.role))
    return folder


@dataclass
class AttachSummary:
    """What :func:`attach_dose_references` stored."""

    cases: int = 0
    objects: int = 0
    rois: set[str] = field(default_factory=set)


def _nifti_of(folder: Path, stem: str) -> Path | None:
    for suffix in _SUFFIXES:
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _read(path: Path, grid: list[int], what: str) -> tuple[np.ndarray, bytes]:
    """Voxels of a reference file checked against the case grid, and its gzipped NIfTI bytes."""
    import gzip

    import nibabel as nib

    try:
        img = nib.nifti1.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for a broken file
        raise InputError(f"not a readable NIfTI file ({type(exc).__name__})", path=path) from None
    shape = [int(n) for n in data.shape]
    if grid and shape != [int(n) for n in grid]:
        raise InputError(
            f"{what} grid {shape} differs from the case's image grid {list(grid)}", path=path
        )
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise InputError(f"{what} holds NaN or infinite values", path=path)
    raw = path.read_bytes()
    return data, raw if raw[:2] == b"\x1f\x8b" else gzip.compress(raw, mtime=0)


def _case_objects(folder: Path, grid: list[int]) -> list[tuple[str, bytes]]:
    """(role, gzipped NIfTI) of one reference folder, every file checked."""
    out: list[tuple[str, bytes]] = []
    dose_path = _nifti_of(folder, DOSE_ROLE)
    mask_path = _nifti_of(folder, MASK_ROLE)
    if dose_path is None or mask_path is None:
        raise InputError(
            "a dose reference folder needs dose.nii.gz and possible_dose_mask.nii.gz",
            path=folder,
        )
    dose, raw = _read(dose_path, grid, "reference dose")
    if np.any(dose < 0):
        raise InputError("reference dose has negative values (dose is in Gy, >= 0)", path=dose_path)
    out.append((DOSE_ROLE, raw))
    mask, raw = _read(mask_path, list(dose.shape), "possible-dose mask")
    if not np.any(mask):
        raise InputError("possible-dose mask is empty", path=mask_path)
    out.append((MASK_ROLE, raw))
    for p in sorted(folder.iterdir()):
        stem = next((p.name[: -len(s)] for s in _SUFFIXES if p.name.endswith(s)), None)
        if stem is None or stem in (DOSE_ROLE, MASK_ROLE):
            continue
        if not _ROI_NAME.match(stem):
            raise InputError(
                "structure names are 1-28 letters, digits, '_', '-' or '.'", path=p, value=stem
            )
        arr, raw = _read(p, list(dose.shape), f"structure {stem}")
        if not np.isin(np.unique(arr), (0, 1)).all():
            raise InputError(f"structure {stem} must be a 0/1 mask", path=p)
        out.append((f"{ROI_PREFIX}{stem}", raw))
    return out


def attach_dose_references(
    cat: Catalogue, dataset: str, root: Path, case_keys: Iterable[str] | None = None
) -> AttachSummary:
    """Store ``root/<case>/`` reference folders as dose objects of the dataset's cases.

    Every folder is checked first (the dose and mask present, every file on the case's
    image grid, finite, dose >= 0, structures 0/1); on any problem InputError names the
    file and nothing is stored. A case's earlier dose objects are replaced.
    """
    with cat.sessions() as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == dataset))
        if ds is None:
            raise NotFoundError(f"no dataset named {dataset!r}")
        keys = (
            list(case_keys)
            if case_keys is not None
            else sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        )
        cases = {
            c.case_key: c
            for c in s.scalars(
                select(Case)
                .where(Case.dataset_id == ds.id, Case.case_key.in_(keys))
                .options(selectinload(Case.objects))
            )
        }
        unknown = sorted(set(keys) - set(cases))
        if unknown:
            raise InputError(
                f"reference folders for cases not in dataset {dataset!r}", path=root, value=unknown
            )
        staged = {k: _case_objects(root / k, list(cases[k].shape)) for k in keys}
    summary = AttachSummary()
    with cat.sessions() as s, s.begin():
        for key, objects in staged.items():
            case = s.scalars(
                select(Case).where(Case.id == cases[key].id).options(selectinload(Case.objects))
            ).one()
            new = [
                NewObject(role, raw, NIFTI_GZ_MEDIA_TYPE, f"{key}/{reference_file_name(role)}")
                for role, raw in objects
            ]
            replace_objects(s, cat.store, case, is_dose_role, new)
            for role, _raw in objects:
                if role.startswith(ROI_PREFIX):
                    summary.rois.add(role[len(ROI_PREFIX) :])
            summary.cases += 1
            summary.objects += len(objects)
    return summary

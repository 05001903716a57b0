"""Test data factories for tests and benchmarks: DICOM series with planted PHI, NIfTI."""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

PHI_NAME = "Doe^Jonathan^Planted"
PHI_ID = "PLANTED-MRN-99812"
PHI_INSTITUTION = "Saint Planted Hospital"
PHI_PRIVATE = "PLANTED-PRIVATE-SECRET"
PHI_NESTED = "Dr^Nested^Planted"


def make_ct_series(
    dest: Path,
    *,
    patient_id: str = PHI_ID,
    patient_name: str = PHI_NAME,
    n: int = 4,
    study_date: str = "20200115",
    birth_date: str = "19700301",
    sex: str = "F",
    series_uid: str | None = None,
    study_uid: str | None = None,
) -> list[Path]:
    """Write ``n`` CT slices (real CT_small pixels) with PHI planted at every depth."""
    base = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    dest.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    out = []
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = birth_date
        ds.PatientSex = sex
        ds.PatientAge = ""
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
        ds.InstitutionName = PHI_INSTITUTION
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 2.5 * k]
        ds.SliceThickness = 2.5
        ds.SliceLocation = -75.0 + 2.5 * k
        inner = Dataset()
        inner.PersonName = PHI_NESTED
        outer = Dataset()
        outer.ReferringPhysicianName = PHI_NESTED
        outer.ContentSequence = Sequence([inner])
        ds.RequestAttributesSequence = Sequence([outer])
        block = ds.private_block(0x0011, "PLANTED CREATOR", create=True)
        block.add_new(0x01, "LO", PHI_PRIVATE)
        p = dest / f"slice_{k:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def write_nifti(path: Path, array: np.ndarray, zooms: tuple[float, ...] = (1.0, 1.0, 2.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*zooms, 1.0])
    img = nib.Nifti1Image(array, affine)
    img.header["descrip"] = b"PLANTED descrip text"
    nib.save(img, path)
    return path

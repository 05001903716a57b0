"""What ingest needs from an original DICOM header before de-identification removes it.

Only derived, non-identifying values leave this module: the age at the study
(capped at 90, as HIPAA Safe Harbor requires for older ages) and the institution
name, which the caller turns into a keyed site pseudonym at once. The original
header is read once, in memory, and never stored or logged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pydicom

AGE_CAP_YEARS = 90.0


@dataclass(frozen=True)
class DerivedMetadata:
    age_years: float | None
    institution: str | None


def _str(v: object) -> str | None:
    s = str(v).strip() if v not in (None, "") else ""
    return s or None


def parse_age_string(value: str | None) -> float | None:
    """PS3.5 AS value ('045Y', '006M', '003W', '010D') to years; None if malformed."""
    if not value or len(value) != 4 or not value[:3].isdigit():
        return None
    n = int(value[:3])
    unit = value[3].upper()
    per_year = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.2425}.get(unit)
    return None if per_year is None else n / per_year


def _parse_date(value: str | None) -> dt.date | None:
    if not value or len(value) < 8:
        return None
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


def derived_metadata(ds: pydicom.Dataset) -> DerivedMetadata:
    """Age at the study and institution from an original (not yet de-identified) header."""
    age = parse_age_string(_str(ds.get("PatientAge")))
    if age is None:
        born = _parse_date(_str(ds.get("PatientBirthDate")))
        seen = _parse_date(_str(ds.get("StudyDate")))
        if born and seen and seen >= born:
            age = (seen - born).days / 365.2425
    if age is not None:
        age = round(min(age, AGE_CAP_YEARS), 2)
    return DerivedMetadata(age_years=age, institution=_str(ds.get("InstitutionName")))

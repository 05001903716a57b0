"""A small sample dataset from DICOM files that ship inside installed packages.

pydicom's own test files and the pydicom-data wheel hold real CT, MR and
radiograph objects (plus ultrasound and secondary-capture files, which the
de-identification quarantines because they may carry burned-in text). Nothing
is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# (package, relative path) of each sample file.
_PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm")
_PYDICOM_DATA_FILES = (
    "693_UNCR.dcm",
    "MR2_UNCR.dcm",
    "RG1_UNCR.dcm",
    "emri_small.dcm",
    "US1_UNCR.dcm",
    "SC_rgb.dcm",
)


def sample_dicom_files() -> list[Path]:
    """Paths of the sample files inside the installed pydicom and pydicom-data packages."""
    import pydicom

    files = [Path(pydicom.__file__).parent / "data" / "test_files" / n for n in _PYDICOM_FILES]
    try:
        import data_store  # the pydicom-data wheel installs this top-level package

        root = Path(data_store.__file__).parent / "data"
        files += [root / n for n in _PYDICOM_DATA_FILES]
    except ImportError:
        pass
    return [f for f in files if f.is_file()]


def stage_sample(dest: Path) -> Path:
    """Copy the sample files into ``dest`` (a folder ingest can walk) and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sample_dicom_files():
        target = dest / f.name
        if not target.exists():
            shutil.copyfile(f, target)
    return dest

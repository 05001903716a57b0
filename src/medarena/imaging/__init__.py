"""Imaging I/O: the Image type and readers / writers for DICOM, NIfTI and 2D pictures.

``read_image`` is the one entry point other packages use: it picks the reader by the
file name, then by content (content-addressed objects have no suffix).
"""

from __future__ import annotations

from pathlib import Path

from medarena.errors import InputError
from medarena.imaging.dicom import (
    group_dicom_series,
    image_from_datasets,
    read_dicom,
    read_dicom_series,
)
from medarena.imaging.image import Image, Kind, from_ras_affine
from medarena.imaging.nifti import read_nifti, write_nifti
from medarena.imaging.raster import read_raster

__all__ = [
    "Image",
    "Kind",
    "from_ras_affine",
    "group_dicom_series",
    "image_from_datasets",
    "read_dicom",
    "read_dicom_series",
    "read_image",
    "read_nifti",
    "read_raster",
    "write_nifti",
]

_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_RASTER_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")
_NIFTI_MAGIC = (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00")


def read_image(path: Path | str, kind: Kind | None = None) -> Image:
    """Read a DICOM file or folder (one series), NIfTI, PNG, JPEG or TIFF as an Image.

    ``kind="label"`` asks for a label map (integer values required); by default a
    NIfTI keeps the kind medarena recorded when writing it, anything else is intensity.
    A folder must hold exactly one DICOM series (other files are ignored).
    """
    path = Path(path)
    if path.is_dir():
        img = _read_dicom_folder(path)
    elif not path.exists():
        raise InputError("file does not exist", path=path)
    else:
        name = path.name.lower()
        if name.endswith((".nii", ".nii.gz")):
            return read_nifti(path, kind)
        with open(path, "rb") as fh:
            head = fh.read(352)
        if head[128:132] == b"DICM":  # the preamble before it may look like a TIFF header
            img = read_dicom(path)
        elif head[:2] == b"\x1f\x8b" or (len(head) >= 348 and head[344:348] in _NIFTI_MAGIC):
            return read_nifti(path, kind)
        elif name.endswith(_RASTER_SUFFIXES) or head.startswith(_RASTER_MAGIC):
            img = read_raster(path)
        else:
            img = read_dicom(path)
    if kind == "label" and img.kind != "label":
        if img.array.dtype.kind not in "iub":
            raise InputError(
                "a label map must hold integers", path=path, value=str(img.array.dtype)
            )
        img = img.with_array(img.array, kind="label")
    return img


def _read_dicom_folder(folder: Path) -> Image:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    series = group_dicom_series(files)
    if len(series) != 1:
        raise InputError(
            f"a folder read as one image must hold exactly one DICOM series, found {len(series)}",
            path=folder,
            hint="use group_dicom_series() and read_dicom_series() for several",
        )
    return read_dicom_series(next(iter(series.values())))

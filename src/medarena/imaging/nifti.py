"""NIfTI-1 reading and writing (.nii, .nii.gz) through nibabel.

Writing builds a fresh header from the Image (qform and sform from
:meth:`Image.nifti_affine`, codes 1 = scanner), so no free-text field of a source
file (descrip, aux_file) survives a read-write cycle. 2D images are written as
(i, j, 1) volumes with intent name ``medarena-2d``, which the reader turns back
into 2D; a channel axis is written as a 4th dimension.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.fileholders import FileHolder
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from medarena.errors import InputError
from medarena.imaging.image import Image, Kind, from_ras_affine

_INTENT_2D = "medarena-2d"
_INTENT_LABEL = "medarena-label"


def read_nifti(path: Path | str, kind: Kind | None = None) -> Image:
    """Read a NIfTI file; ``kind`` defaults to what the writer recorded (else intensity)."""
    path = Path(path)
    try:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            img = nib.load(path)
            array = _voxels(img, path)
        else:  # content-addressed objects have no suffix for nibabel to go by
            with open(path, "rb") as raw:
                gz = raw.read(2) == b"\x1f\x8b"
            # Stream from the file (no whole-file bytes copy); header size tells 1 from 2.
            with gzip.open(path, "rb") if gz else open(path, "rb") as fh:
                nifti2 = fh.read(4) in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")
                fh.seek(0)
                klass = nib.Nifti2Image if nifti2 else nib.Nifti1Image
                holder = FileHolder(fileobj=fh)
                img = klass.from_file_map({"image": holder, "header": holder})
                array = _voxels(img, path)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError("file does not exist", path=path) from None
    except (
        ImageFileError,
        HeaderDataError,
        WrapStructError,
        EOFError,
        OSError,
        ValueError,
        zlib.error,
        gzip.BadGzipFile,
    ) as exc:
        raise InputError(
            f"unreadable NIfTI (broken header or truncated data): {exc}", path=path
        ) from None
    assert isinstance(img, nib.Nifti1Image | nib.Nifti2Image)  # checked in _voxels
    header = img.header
    intent = header.get_intent()[2] if hasattr(header, "get_intent") else ""
    stored_kind: Kind = (
        "label" if intent == _INTENT_LABEL or intent.endswith("label") else ("intensity")
    )
    if array.dtype.names:  # RGB24 and other structured types become a channel axis
        array = np.stack([array[n] for n in array.dtype.names], axis=-1)
    is_2d = intent.startswith(_INTENT_2D)
    kind = kind or stored_kind
    if kind == "label" and array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise InputError("label map holds non-integer values", path=path)
        array = array.astype(np.int32)
    if array.ndim > 4:
        array = array.reshape((*array.shape[:3], -1))
    affine = img.affine
    if is_2d and array.ndim >= 3 and array.shape[2] == 1:
        array = array[:, :, 0, ...]
        return from_ras_affine(
            np.asarray(array), affine, kind, ndim=2, meta={"source_format": "nifti"}
        )
    if array.ndim == 2:
        array = array[:, :, None]
    return from_ras_affine(np.asarray(array), affine, kind, ndim=3, meta={"source_format": "nifti"})


def _voxels(img: object, path: Path) -> np.ndarray:
    """The voxel array in native byte order; float32 when scl_slope / scl_inter apply."""
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError("not a NIfTI-1/2 image", path=path)
    if _is_scaled(img.dataobj):  # like DICOM rescale: float32 out
        array = np.asarray(img.get_fdata(dtype=np.float32))
    else:
        array = np.asarray(img.dataobj)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _is_scaled(proxy: object) -> bool:
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    return (np.isfinite(slope) and slope != 1.0) or (np.isfinite(inter) and inter != 0.0)


def _storable(array: np.ndarray) -> np.ndarray:
    """bool -> uint8, 64-bit integers -> the narrowest common type holding the values.

    Many NIfTI readers (ITK-SNAP, older FSL) refuse 64-bit integers; values are kept
    exactly, only the width changes, and only when every value fits.
    """
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for cand in (np.uint8, np.int16, np.int32):
            info = np.iinfo(cand)
            if info.min <= lo and hi <= info.max:
                return array.astype(cand)
    return array


def write_nifti(image: Image, path: Path | str) -> Path:
    """Write ``image`` as NIfTI-1 (gzip when the name ends in .gz); returns the path.

    Voxel values round-trip exactly through :func:`read_nifti`; the dtype too, except
    bool (stored as uint8) and 64-bit integers (narrowed when the values fit).
    Geometry round-trips to float32 precision (NIfTI-1 stores it as float32).
    """
    path = Path(path)
    array = _storable(image.array)
    if image.ndim == 2:
        array = array[:, :, None, ...]
    nii = nib.Nifti1Image(np.asarray(array), image.nifti_affine(), dtype=array.dtype)
    nii.header.set_qform(image.nifti_affine(), code=1)
    nii.header.set_sform(image.nifti_affine(), code=1)
    nii.header.set_xyzt_units("mm", "sec")
    nii.header["descrip"] = b"medarena"
    if image.ndim == 2:
        intent = _INTENT_2D + ("label" if image.kind == "label" else "")  # <= 16 characters
    else:
        intent = _INTENT_LABEL if image.kind == "label" else ""
    if intent:
        nii.header.set_intent("none", name=intent)
    nib.save(nii, path)
    return path

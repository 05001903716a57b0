"""DICOM series and multi-frame objects to an Image.

Geometry (see medarena.imaging.image for the axis and world conventions):
- Slices are sorted by their position along the slice normal (ImagePositionPatient
  projected on the cross product of the ImageOrientationPatient cosines), never by
  file name or InstanceNumber. They must share one series, frame size and
  orientation, sit at distinct positions with gaps uniform within 1 % (a missing
  slice is an error, not a silent stretch) and be stacked along the normal (gantry
  tilt is refused).
- Enhanced multi-frame objects take their geometry from the functional groups
  (PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence), per
  frame first, then shared. RT Dose takes it from GridFrameOffsetVector.
- Objects without patient geometry (radiographs, secondary captures) keep the
  identity direction; a single frame is a 2D image. Pixel spacing comes from
  PixelSpacing, else ImagerPixelSpacing, else 1.0 mm with ``spacing_assumed`` in meta.

Values: modality rescale (slope / intercept, per slice or per frame; DoseGridScaling
for RT Dose) is applied. The result keeps an integer dtype when every slope is 1 and
every intercept whole (the smallest of int16 / int32 that holds every storable value
given BitsStored), else it is float32. Colour frames (RGB, YBR converted to RGB by
pydicom, PALETTE COLOR expanded through its LUT) get a trailing channel axis.
MONOCHROME1 values are kept as stored (meta ``photometric`` says how to display them).
Compressed transfer syntaxes decode through pydicom's pixel handlers (pylibjpeg
with its libjpeg and openjpeg plugins, RLE natively).

Each file is parsed once and its pixel data decoded once, straight into the output
buffer; the returned array is a transposed view of that buffer (Fortran order).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, pixel_array

from medarena.errors import InputError
from medarena.imaging.image import Image

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
RT_DOSE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.2"
SPACING_TOLERANCE = 0.01
"""Relative deviation of a slice gap from the median gap that is still one series."""

_META_ATTRIBUTES = (
    ("modality", "Modality"),
    ("manufacturer", "Manufacturer"),
    ("model", "ManufacturerModelName"),
    ("body_part", "BodyPartExamined"),
    ("sex", "PatientSex"),
    ("age", "PatientAge"),
    ("study_date", "StudyDate"),
    ("series_uid", "SeriesInstanceUID"),
    ("sop_class_uid", "SOPClassUID"),
    ("photometric", "PhotometricInterpretation"),
)
_READ_ERRORS = (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError)


def read_dicom(path: Path | str) -> Image:
    """Read one DICOM file: a single frame, or every frame of a multi-frame object."""
    return read_dicom_series([Path(path)])


def read_dicom_series(paths: Sequence[Path | str]) -> Image:
    """Read the files of one series (or one multi-frame file) as a single Image.

    Raises InputError naming the file when a file is unreadable, holds no pixels, or
    does not fit the others (series, frame size, orientation, spacing).
    """
    files = [Path(p) for p in paths]
    if not files:
        raise InputError("no DICOM files given: a series needs at least one file")
    return image_from_datasets([_read(p) for p in files], files)


def image_from_datasets(datasets: Sequence[Dataset], names: Sequence[Path | str]) -> Image:
    """Build an Image from datasets already in memory (one series, or one multi-frame object).

    ``names`` (file paths or names) are only used in error messages. The pixel data of
    each dataset is released once it is decoded into the output buffer, so a caller that
    still needs the encoded object must serialise it first.
    """
    files = [Path(p) for p in names]
    if not datasets or len(files) != len(datasets):
        raise InputError("need one name per dataset, and at least one dataset")
    datasets = list(datasets)
    for ds, p in zip(datasets, files, strict=True):
        if str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP_CLASS:
            raise InputError("a DICOMDIR holds no image; read the files it lists", path=p)
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise InputError("DICOM object has no pixel data", path=p)
    if len(datasets) == 1 and _frame_count(datasets[0]) > 1:
        return _read_multiframe(datasets[0], files[0])
    return _read_single_frames(datasets, files)


def group_dicom_series(
    paths: Sequence[Path | str], skipped: list[tuple[Path, str]] | None = None
) -> dict[str, list[Path]]:
    """Group DICOM files by SeriesInstanceUID, reading headers only.

    Files that are not DICOM, DICOMDIRs and objects without a SeriesInstanceUID are
    left out; each is appended to ``skipped`` (when given) as (path, reason) and
    their count is logged. Groups keep the input order of their files.
    """
    groups: dict[str, list[Path]] = defaultdict(list)
    left_out: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        try:
            ds = pydicom.dcmread(
                p,
                stop_before_pixels=True,
                specific_tags=["SOPClassUID", "SeriesInstanceUID", "DirectoryRecordSequence"],
            )
        except _READ_ERRORS as exc:
            left_out.append((p, f"not a readable DICOM file ({type(exc).__name__})"))
            continue
        if str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
            left_out.append((p, "DICOMDIR (a directory index, holds no image)"))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            left_out.append((p, "no SeriesInstanceUID"))
            continue
        groups[uid].append(p)
    if left_out:
        log.info("group_dicom_series: %d of %d files skipped", len(left_out), len(paths))
    if skipped is not None:
        skipped.extend(left_out)
    return dict(groups)


# --- reading -----------------------------------------------------------------------


def _read(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except FileNotFoundError:
        raise InputError("file does not exist", path=path) from None
    except InvalidDicomError:
        # Old files lack the preamble / file meta; accept one only if it parses to an image.
        ds = _read_forced(path)
        if ds is None:
            raise InputError(
                "not a DICOM file: no 'DICM' prefix and no image dataset could be parsed",
                path=path,
            ) from None
        return ds
    except _READ_ERRORS as exc:
        raise InputError(f"unreadable DICOM ({exc})", path=path) from None


def _read_forced(path: Path) -> Dataset | None:
    try:
        ds = pydicom.dcmread(path, force=True)
        ok = "PixelData" in ds and "Rows" in ds and "SOPClassUID" in ds
    except _READ_ERRORS:
        return None
    if not ok:
        return None
    if "TransferSyntaxUID" not in ds.file_meta:
        # A file without meta is implicit VR little endian (PS3.5 A.1, the default).
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    return ds


def _frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """All frames of ``ds`` in native byte order, palette colour expanded to RGB."""
    try:
        arr = pixel_array(ds)  # unlike ds.pixel_array, keeps no cached copy on ds
        if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
    except Exception as exc:  # decoders raise many types for bad or unsupported data
        ts = ds.file_meta.get("TransferSyntaxUID", "unknown")
        raise InputError(
            f"cannot decode pixel data (transfer syntax {getattr(ts, 'name', ts)}): {exc}",
            path=path,
        ) from None
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _is_colour(ds: Dataset) -> bool:
    return (
        int(ds.get("SamplesPerPixel", 1) or 1) > 1
        or ds.get("PhotometricInterpretation") == "PALETTE COLOR"
    )


def _meta(ds: Dataset) -> dict[str, Any]:
    """Non-identifying source metadata kept with the Image."""
    out: dict[str, Any] = {"source_format": "dicom"}
    for key, attr in _META_ATTRIBUTES:
        value = ds.get(attr)
        if value not in (None, ""):
            out[key] = str(value)
    if _is_colour(ds):  # YBR and palette frames are converted on reading
        out["colour_space"] = "RGB"
    return out


def _rescale_of(ds: Dataset, item: Dataset | None = None) -> tuple[float, float]:
    """(slope, intercept) of a frame: functional-group item first, then the top level."""
    src = item if item is not None else ds
    slope = float(src.get("RescaleSlope", 1) or 1)
    intercept = float(src.get("RescaleIntercept", 0) or 0)
    if str(ds.get("SOPClassUID", "")) == RT_DOSE_SOP_CLASS and "DoseGridScaling" in ds:
        slope *= float(ds.DoseGridScaling)
    return slope, intercept


def _output_dtype(ds: Dataset, raw: np.dtype, slopes: np.ndarray, inters: np.ndarray) -> np.dtype:
    """dtype that holds every rescaled value exactly (integer) or float32."""
    if raw.kind not in "iu" or not (np.all(slopes == 1.0) and np.all(inters == np.round(inters))):
        return np.dtype(np.float32)
    if np.all(inters == 0):
        return raw
    bits = int(ds.get("BitsStored", raw.itemsize * 8) or raw.itemsize * 8)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    lo = -(2 ** (bits - 1)) if signed else 0
    hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    lo_out, hi_out = lo + float(inters.min()), hi + float(inters.max())
    for cand in (np.int16, np.int32):
        info = np.iinfo(cand)
        if info.min <= lo_out and hi_out <= info.max:
            return np.dtype(cand)
    return np.dtype(np.int64)


def _store(out: np.ndarray, k: int, frame: np.ndarray, slope: float, intercept: float) -> None:
    """Write one rescaled frame into ``out[k]`` without an intermediate full copy."""
    if out.dtype.kind == "f":
        np.multiply(frame, np.float32(slope), out=out[k], casting="unsafe")
        out[k] += np.float32(intercept)
    else:
        out[k] = frame
        if intercept:
            out[k] += out.dtype.type(intercept)


def _narrow(values: np.ndarray) -> np.ndarray:
    """int32 -> int16 when the values fit, as most CT (HU) volumes do."""
    if values.dtype == np.int32 and values.size:
        lo, hi = int(values.min()), int(values.max())
        if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
            return values.astype(np.int16)
    return values


def _or_identity(direction: np.ndarray | None) -> np.ndarray:
    return np.eye(3) if direction is None else direction


def _to_ijk(frames: np.ndarray, colour: bool) -> np.ndarray:
    """(frame, row, column[, rgb]) -> (column, row, frame[, rgb]) as a view (no copy)."""
    return np.transpose(frames, (2, 1, 0, 3) if colour else (2, 1, 0))


def _pixel_spacing(ds: Dataset) -> tuple[float, float, bool]:
    """(row spacing, column spacing, assumed) from PixelSpacing or ImagerPixelSpacing."""
    for attr in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        value = ds.get(attr)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return float(value[0]), float(value[1]), False
    return 1.0, 1.0, True


def _orientation(ds: Dataset, path: Path) -> np.ndarray | None:
    """3x3 matrix with columns row direction, column direction, slice normal (LPS)."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        return None
    v = np.asarray([float(x) for x in iop])
    if v.shape != (6,):
        raise InputError("ImageOrientationPatient must have 6 values", path=path, value=list(v))
    row, col = v[:3], v[3:]
    if not (
        np.isclose(np.linalg.norm(row), 1, atol=1e-3)
        and np.isclose(np.linalg.norm(col), 1, atol=1e-3)
        and abs(np.dot(row, col)) < 1e-3
    ):
        raise InputError(
            "ImageOrientationPatient must hold two orthogonal unit vectors",
            path=path,
            value=list(v),
        )
    # Stored cosines carry rounding (often 6 decimals): re-orthonormalise them.
    row = row / np.linalg.norm(row)
    col = col - np.dot(col, row) * row
    col = col / np.linalg.norm(col)
    return np.stack([row, col, np.cross(row, col)], axis=1)


def _slice_step(positions: np.ndarray, paths: Sequence[Path], what: str = "slices") -> float:
    """Median gap between sorted slice positions; refuses duplicates and uneven gaps."""
    gaps = np.diff(positions)
    if np.any(np.abs(gaps) < 1e-4):
        i = int(np.argmin(np.abs(gaps)))
        raise InputError(
            f"two {what} share one position ({positions[i]:.3f} mm along the normal): "
            "not a single volume (duplicates, or several stacks / echoes / time points)",
            path=paths[i + 1],
        )
    step = float(np.median(gaps))
    if np.any(np.abs(gaps - step) > SPACING_TOLERANCE * abs(step) + 1e-3):
        i = int(np.argmax(np.abs(gaps - step)))
        raise InputError(
            f"slice spacing is not uniform: gap {gaps[i]:.3f} mm next to the median "
            f"{step:.3f} mm (a slice is missing or the series is irregular)",
            path=paths[i + 1],
        )
    return step


def _check_stacking(ipp: np.ndarray, normal: np.ndarray, path: Path) -> None:
    """The first-to-last slice vector must run along the normal (no gantry tilt)."""
    d = ipp[-1] - ipp[0]
    d = d / np.linalg.norm(d)
    if abs(float(np.dot(d, normal))) < 1 - 1e-4:
        raise InputError(
            "slices are not stacked along the slice normal (gantry tilt or a sheared "
            "series is not supported; resample it first)",
            path=path,
        )


def _read_single_frames(datasets: list[Dataset], paths: list[Path]) -> Image:
    first, p0 = datasets[0], paths[0]
    rows, cols = int(first.Rows), int(first.Columns)
    series = str(first.get("SeriesInstanceUID", ""))
    colour = _is_colour(first)
    for ds, p in zip(datasets[1:], paths[1:], strict=True):
        if _frame_count(ds) > 1:
            raise InputError("a multi-frame object cannot be mixed with other files", path=p)
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise InputError(
                f"frame size {ds.Rows}x{ds.Columns} differs from {rows}x{cols} of {p0.name}: "
                "the files are not one series",
                path=p,
            )
        if str(ds.get("SeriesInstanceUID", "")) != series:
            raise InputError(f"belongs to another series than {p0.name}", path=p)
        if _is_colour(ds) != colour:
            raise InputError(f"colour and greyscale frames mixed with {p0.name}", path=p)
    row_sp, col_sp, assumed = _pixel_spacing(first)
    meta = _meta(first)
    if assumed:
        meta["spacing_assumed"] = True
    orient = _orientation(first, p0)
    has_geometry = orient is not None and all("ImagePositionPatient" in ds for ds in datasets)
    origin: tuple[float, ...] = ()
    direction: np.ndarray | None = None
    if has_geometry:
        assert orient is not None
        for ds, p in zip(datasets[1:], paths[1:], strict=True):
            other = _orientation(ds, p)
            if other is None or not np.allclose(other, orient, atol=1e-4):
                raise InputError(
                    f"image orientation differs from {p0.name}: the files are not one series",
                    path=p,
                )
        ipp = np.array([[float(x) for x in ds.ImagePositionPatient] for ds in datasets])
        order = np.argsort(ipp @ orient[:, 2], kind="stable")
        ipp = ipp[order]
        datasets = [datasets[i] for i in order]
        paths = [paths[i] for i in order]
        if len(datasets) > 1:
            slice_sp = abs(_slice_step(ipp @ orient[:, 2], paths))
            _check_stacking(ipp, orient[:, 2], paths[-1])
        else:
            slice_sp = float(
                first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
            )
        origin, direction = tuple(ipp[0]), orient
    else:
        # Radiographs and secondary captures: no patient geometry, keep acquisition order.
        order = np.argsort(
            [int(ds.get("InstanceNumber", 0) or 0) for ds in datasets], kind="stable"
        )
        datasets = [datasets[i] for i in order]
        paths = [paths[i] for i in order]
        slice_sp = 1.0
        if len(datasets) > 1:
            meta["slice_spacing_assumed"] = True
    rescale = np.array([_rescale_of(ds) for ds in datasets])
    slopes, inters = rescale[:, 0], rescale[:, 1]
    out: np.ndarray | None = None
    for k, (ds, p) in enumerate(zip(datasets, paths, strict=True)):
        frame = _decode(ds, p)
        if out is None:
            dtype = _output_dtype(ds, frame.dtype, slopes, inters)
            out = np.empty((len(datasets), *frame.shape), dtype=dtype)
        elif frame.shape != out.shape[1:]:
            raise InputError(f"decoded frame shape {frame.shape} differs from {p0.name}", path=p)
        _store(out, k, frame, float(slopes[k]), float(inters[k]))
        del ds.PixelData  # the decoded copy lives in ``out`` now
    assert out is not None
    out = _narrow(out)
    meta["rescale_applied"] = bool(np.any(slopes != 1) or np.any(inters != 0))
    array = _to_ijk(out, colour)
    if not has_geometry and len(datasets) == 1:
        return Image(array[:, :, 0, ...], (col_sp, row_sp), meta=meta)
    return Image(array, (col_sp, row_sp, slice_sp), origin, _or_identity(direction), meta=meta)


# --- multi-frame -------------------------------------------------------------------


def _fg(ds: Dataset, i: int, seq: str) -> Dataset | None:
    """Functional group item ``seq`` of frame ``i``: per-frame first, then shared."""
    for groups_name, idx in (
        ("PerFrameFunctionalGroupsSequence", i),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(groups_name)
        if groups is not None and len(groups) > idx:
            items = groups[idx].get(seq)
            if items:
                item: Dataset = items[0]
                return item
    return None


def _read_multiframe(ds: Dataset, path: Path) -> Image:
    n = _frame_count(ds)
    colour = _is_colour(ds)
    meta = _meta(ds)
    row_sp, col_sp, assumed = _pixel_spacing(ds)
    pm = _fg(ds, 0, "PixelMeasuresSequence")
    if pm is not None and "PixelSpacing" in pm:
        row_sp, col_sp = (float(v) for v in pm.PixelSpacing)
        assumed = False
    if assumed:
        meta["spacing_assumed"] = True
    thickness = (pm or ds).get("SpacingBetweenSlices") or (pm or ds).get("SliceThickness")
    po = _fg(ds, 0, "PlaneOrientationSequence")
    orient = _orientation(po, path) if po is not None else _orientation(ds, path)
    for i in range(1, n):
        poi = _fg(ds, i, "PlaneOrientationSequence")
        if poi is not None and orient is not None:
            other = _orientation(poi, path)
            if other is None or not np.allclose(other, orient, atol=1e-4):
                raise InputError(f"frame {i + 1} has another orientation than frame 1", path=path)
    ipp = _frame_positions(ds, n, orient, path)
    rescale = np.array(
        [_rescale_of(ds, _fg(ds, i, "PixelValueTransformationSequence")) for i in range(n)]
    )
    slopes, inters = rescale[:, 0], rescale[:, 1]
    raw = _decode(ds, path)
    del ds.PixelData
    if raw.ndim == (3 if colour else 2):
        raw = raw[None]
    order = np.arange(n)
    if orient is not None and ipp is not None:
        pos = ipp @ orient[:, 2]
        order = np.argsort(pos, kind="stable")
        if n > 1:
            slice_sp = abs(_slice_step(pos[order], [path] * n, what="frames"))
            _check_stacking(ipp[order], orient[:, 2], path)
        else:
            slice_sp = float(thickness or 1.0)
        origin: tuple[float, ...] = tuple(ipp[order[0]])
        direction: np.ndarray | None = orient
    else:
        meta["slice_spacing_assumed"] = thickness is None
        slice_sp = float(thickness or 1.0)
        origin, direction = (), None
    dtype = _output_dtype(ds, raw.dtype, slopes, inters)
    if dtype == raw.dtype and np.all(order == np.arange(n)):
        frames = raw  # nothing to rescale or reorder: use the decoded buffer as is
    else:
        frames = np.empty(raw.shape, dtype=dtype)
        for k, src in enumerate(order):
            _store(frames, k, raw[src], float(slopes[src]), float(inters[src]))
    meta["rescale_applied"] = bool(np.any(slopes != 1) or np.any(inters != 0))
    meta["frames"] = n
    frames = _narrow(frames)
    return Image(
        _to_ijk(frames, colour),
        (col_sp, row_sp, slice_sp),
        origin,
        _or_identity(direction),
        meta=meta,
    )


def _frame_positions(
    ds: Dataset, n: int, orient: np.ndarray | None, path: Path
) -> np.ndarray | None:
    """ImagePositionPatient of every frame, or None when the object does not say."""
    positions = []
    for i in range(n):
        item = _fg(ds, i, "PlanePositionSequence")
        if item is None or "ImagePositionPatient" not in item:
            break
        positions.append([float(x) for x in item.ImagePositionPatient])
    if len(positions) == n:
        return np.asarray(positions)
    offsets = ds.get("GridFrameOffsetVector")
    if orient is not None and "ImagePositionPatient" in ds and offsets is not None:
        # RT Dose (PS3.3 C.8.8.3.2): offsets along the normal, relative to the first
        # frame when the first value is 0, else absolute; both reduce to this.
        off = np.asarray([float(x) for x in offsets])
        if off.shape != (n,):
            raise InputError(
                f"GridFrameOffsetVector has {off.size} values for {n} frames", path=path
            )
        ipp0 = np.asarray([float(x) for x in ds.ImagePositionPatient])
        return ipp0[None, :] + (off - off[0])[:, None] * orient[:, 2][None, :]
    if n == 1 and orient is not None and "ImagePositionPatient" in ds:
        return np.asarray([[float(x) for x in ds.ImagePositionPatient]])
    return None

"""Builders for imaging tests: multi-slice CT series built from pydicom's CT_small.dcm.

CT_small.dcm (shipped with pydicom) is one 128x128 axial CT slice. A series is made
by copying it N times with shifted ImagePositionPatient, a distinct pixel offset per
slice (so the slice order can be checked), new SOP Instance UIDs and file names in
shuffled order. An oblique variant rotates ImageOrientationPatient.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))
SLICE_OFFSET = 7  # raw value added per slice index, so every slice differs


@dataclass
class Series:
    """A written test series and the geometry it was built with."""

    files: list[Path]  # in shuffled (file system) order
    positions: np.ndarray  # (n, 3) ImagePositionPatient in slice order
    row_dir: np.ndarray  # ImageOrientationPatient[:3]
    col_dir: np.ndarray  # ImageOrientationPatient[3:]
    spacing: float  # slice gap along the normal, mm
    raw: np.ndarray  # CT_small's stored pixels (rows, cols)


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues rotation matrix about a unit ``axis``."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def write_series(
    folder: Path,
    n: int = 6,
    spacing: float = 2.5,
    rot: np.ndarray | None = None,
    seed: int = 0,
    series_uid: str | None = None,
) -> Series:
    """Write an n-slice series of CT_small copies into ``folder`` (file order shuffled)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(CT_SMALL)
    raw = base.pixel_array.copy()
    rot = np.eye(3) if rot is None else rot
    row_dir = rot @ np.array([1.0, 0.0, 0.0])
    col_dir = rot @ np.array([0.0, 1.0, 0.0])
    normal = np.cross(row_dir, col_dir)
    origin = np.array([float(x) for x in base.ImagePositionPatient])
    positions = np.array([origin + k * spacing * normal for k in range(n)])
    uid = series_uid or generate_uid()
    names = [f"im{i:03d}.dcm" for i in range(n)]
    random.Random(seed).shuffle(names)
    files = []
    for k in range(n):
        ds = pydicom.dcmread(CT_SMALL)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        # InstanceNumber runs against the geometry on purpose: sorting must use positions.
        ds.InstanceNumber = n - k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.SliceLocation = f"{positions[k] @ normal:.6f}"
        ds.PixelData = (raw + SLICE_OFFSET * k).astype(np.int16).tobytes()
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    order = sorted(range(n), key=lambda i: files[i].name)
    return Series(
        files=[files[i] for i in order],
        positions=positions,
        row_dir=row_dir,
        col_dir=col_dir,
        spacing=spacing,
        raw=raw,
    )

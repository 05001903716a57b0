"""Turn a DICOM SEG into a label map on the grid of the series it segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from medarena.errors import InputError
from medarena.imaging import Image, read_dicom_series


def _sorted_instance_uids(paths: list[Path]) -> list[str]:
    """SOP Instance UIDs of a single-frame series in slice order (position along the normal)."""
    rows = []
    for p in paths:
        ds = pydicom.dcmread(
            p,
            stop_before_pixels=True,
            specific_tags=[
                "SOPInstanceUID",
                "ImagePositionPatient",
                "ImageOrientationPatient",
                "NumberOfFrames",
            ],
        )
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(
                "a DICOM SEG over multi-frame source images cannot be converted to a label map yet",
                path=p,
            )
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        rows.append(
            (
                float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))),
                str(ds.SOPInstanceUID),
            )
        )
    rows.sort()
    return [uid for _, uid in rows]


def seg_to_label_image(seg: pydicom.Dataset, source_paths: list[Path]) -> Image:
    """Label map (segment number per voxel; later segments win on overlap) for the source series."""
    import highdicom as hd

    source = read_dicom_series(source_paths)
    uids = _sorted_instance_uids(source_paths)
    try:
        hseg = hd.seg.Segmentation.from_dataset(seg, copy=False)
        stack = hseg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids,
            combine_segments=True,
            skip_overlap_checks=True,
        )
    except (ValueError, KeyError, AttributeError) as exc:
        raise InputError(f"DICOM SEG cannot be mapped onto its source series: {exc}") from None
    # highdicom gives (instance, row, column); medarena arrays are (column, row, slice).
    labels = np.ascontiguousarray(np.transpose(stack, (2, 1, 0)))
    if labels.shape != source.array.shape[: source.ndim]:
        raise InputError(
            f"DICOM SEG frames give a label map of shape {labels.shape}, but the source series "
            f"has shape {source.array.shape[: source.ndim]}"
        )
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    return source.with_array(labels.astype(dtype), kind="label")

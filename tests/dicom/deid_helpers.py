"""Helpers for the de-identification tests: real sample files, contexts, a CT + SEG pair."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import data_store
import numpy as np
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from medarena.dicom.deid import DeidContext, DeidOptions

SECRET = b"test-secret-for-deid-0123456789abcdef"
DATA_STORE = Path(data_store.__file__).parent / "data"


def sample(name: str) -> Path:
    """Path of a pydicom test file or a pydicom-data data_store file."""
    candidate = DATA_STORE / name
    if candidate.exists():
        return candidate
    path = get_testdata_file(name, download=False)
    assert path is not None, name
    return Path(str(path))


def make_ctx(**options: bool) -> DeidContext:
    """A fresh context (no identity database) with the given options."""
    return _cached_ctx(tuple(sorted(options.items())))


@lru_cache(maxsize=64)
def _cached_ctx(options: tuple[tuple[str, bool], ...]) -> DeidContext:
    return DeidContext.create(DeidOptions(**dict(options)), SECRET)


def make_seg(ct_path: Path, out: Path) -> Path:
    """A real DICOM SEG (highdicom) referencing the CT at ``ct_path``."""
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept

    ct = dcmread(ct_path)
    mask = np.zeros((1, int(ct.Rows), int(ct.Columns)), dtype=bool)
    mask[0, 10:30, 10:30] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=CodedConcept(
            "49755003", "SCT", "Morphologically Altered Structure"
        ),
        segmented_property_type=CodedConcept("4147007", "SCT", "Mass"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=[ct],
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medarena-test",
        manufacturer_model_name="synthetic",
        software_versions="1",
        device_serial_number="SN-SECRET-42",
    )
    seg.save_as(out)
    return out


def dataset_bytes(ds: Dataset, tmp_path: Path, name: str = "out.dcm") -> bytes:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()

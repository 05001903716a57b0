from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from medarena.datasets.catalogue import Catalogue, case_records
from medarena.datasets.ingest import ingest
from medarena.imaging import read_image
from medarena_testkit import make_ct_series


def test_dicom_seg_becomes_label_map_on_its_series(catalogue: Catalogue, tmp_path: Path) -> None:
    files = make_ct_series(tmp_path / "in" / "ct", n=3)
    sources = [pydicom.dcmread(f) for f in files]
    mask = np.zeros((3, 128, 128), dtype=bool)  # (slice, row, column) in file order
    mask[1, 40:60, 70:90] = True
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="lesion",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Neoplasm,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medarena-test",
        manufacturer_model_name="fixture",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(tmp_path / "in" / "seg.dcm")
    summary = ingest(catalogue, tmp_path / "in", "ct")
    assert summary.cases_added == 1 and not summary.issues, summary.issues
    [rec] = case_records(catalogue, "ct")
    assert sorted(o["role"] for o in rec["objects"]).count("seg") == 1
    label_obj = next(o for o in rec["objects"] if o["role"] == "label")
    label = read_image(catalogue.store.path_of(label_obj["digest"]))
    assert label.array.shape == (128, 128, 3)
    # (column, row, slice) in medarena order; slices sorted by position = file order here.
    assert label.array[70:90, 40:60, 1].all() and label.array.sum() == 400

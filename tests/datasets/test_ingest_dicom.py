from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from medarena.datasets import ingest as ingest_mod
from medarena.datasets.catalogue import Catalogue, case_records
from medarena.datasets.ingest import ingest
from medarena.db.models import Case, CaseObject, IngestedSource
from medarena.imaging import read_image
from medarena_testkit import (
    PHI_ID,
    PHI_INSTITUTION,
    PHI_NAME,
    PHI_NESTED,
    PHI_PRIVATE,
    make_ct_series,
)

PLANTED = [PHI_NAME, PHI_ID, PHI_INSTITUTION, PHI_PRIVATE, PHI_NESTED, "Doe", "Jonathan"]


def _all_stored_bytes(cat: Catalogue) -> list[bytes]:
    return [cat.store.get_bytes(d) for d in cat.store.iter_digests()]


def test_dicom_series_becomes_one_deidentified_case(
    any_catalogue: Catalogue, tmp_path: Path
) -> None:
    cat = any_catalogue
    make_ct_series(tmp_path / "in" / "s1", n=4)
    summary = ingest(cat, tmp_path / "in", "ct")
    assert summary.cases_added == 1 and summary.files_stored == 4 and not summary.issues
    [rec] = case_records(cat, "ct")
    assert rec["modality"] == "CT" and rec["sex"] == "F"
    # Age at study from birth date and study date (1970-03-01 -> 2020-01-15).
    assert rec["age_years"] == pytest.approx(49.87, abs=0.02)
    assert rec["site"].startswith("site-")
    assert rec["study_date"] and rec["study_date"] != "20200115"  # shifted, not removed
    assert rec["shape"] == [128, 128, 4]
    assert rec["spacing"][2] == pytest.approx(2.5)
    assert PHI_ID not in rec["patient_pseudonym"]
    roles = sorted(o["role"] for o in rec["objects"])
    assert roles == ["dicom"] * 4 + ["image"]
    # No planted identifier anywhere in what was stored, nor in the database record.
    for blob in _all_stored_bytes(cat):
        for phi in PLANTED:
            assert phi.encode() not in blob
    assert not any(phi in str(rec) for phi in PLANTED)
    # The stored volume is the real pixel data of the series.
    image_obj = next(o for o in rec["objects"] if o["role"] == "image")
    vol = read_image(cat.store.path_of(image_obj["digest"]))
    src = pydicom.dcmread(tmp_path / "in" / "s1" / "slice_000.dcm")
    expected = src.pixel_array.T * float(src.RescaleSlope) + float(src.RescaleIntercept)
    assert (vol.array[:, :, 0] == expected).all()


def test_ingest_twice_adds_nothing(catalogue: Catalogue, tmp_path: Path) -> None:
    make_ct_series(tmp_path / "in", n=3)
    ingest(catalogue, tmp_path / "in", "ct")
    n_objects = len(list(catalogue.store.iter_digests()))
    again = ingest(catalogue, tmp_path / "in", "ct")
    assert again.cases_added == 0 and again.files_stored == 0 and again.files_skipped == 3
    assert len(list(catalogue.store.iter_digests())) == n_objects
    with catalogue.session() as s:
        assert s.scalar(select(func.count(Case.id))) == 1
        assert s.scalar(select(func.count(CaseObject.id))) == 4


def test_series_in_two_batches_links_up(catalogue: Catalogue, tmp_path: Path) -> None:
    files = make_ct_series(tmp_path / "all", n=4)
    (tmp_path / "b1").mkdir()
    (tmp_path / "b2").mkdir()
    for f in files[:2]:
        shutil.copy(f, tmp_path / "b1")
    for f in files[2:]:
        shutil.copy(f, tmp_path / "b2")
    ingest(catalogue, tmp_path / "b1", "ct")
    second = ingest(catalogue, tmp_path / "b2", "ct")
    assert second.cases_added == 0 and second.cases_updated == 1
    [rec] = case_records(catalogue, "ct")
    assert rec["shape"] == [128, 128, 4]
    assert sum(o["role"] == "dicom" for o in rec["objects"]) == 4


def test_killed_ingest_reruns_to_completion(
    catalogue: Catalogue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        make_ct_series(tmp_path / "in" / f"s{i}", patient_id=f"PAT{i}", n=2)
    original = ingest_mod._Run._ingest_series
    calls = {"n": 0}

    def dying(self: ingest_mod._Run, members: list) -> None:  # type: ignore[type-arg]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stands for a kill between two series
        original(self, members)

    monkeypatch.setattr(ingest_mod._Run, "_ingest_series", dying)
    with pytest.raises(KeyboardInterrupt):
        ingest(catalogue, tmp_path / "in", "ct")
    monkeypatch.setattr(ingest_mod._Run, "_ingest_series", original)
    summary = ingest(catalogue, tmp_path / "in", "ct")
    assert summary.cases_added == 2 and summary.files_skipped == 2
    with catalogue.session() as s:
        assert s.scalar(select(func.count(Case.id))) == 3
        assert s.scalar(select(func.count(IngestedSource.id))) == 6
        referenced = set(s.scalars(select(CaseObject.digest)).all())
    # No orphans: every object in the store belongs to a case.
    assert set(catalogue.store.iter_digests()) == referenced


def test_bad_files_are_listed_and_the_rest_goes_on(catalogue: Catalogue, tmp_path: Path) -> None:
    src = tmp_path / "in"
    make_ct_series(src / "good", n=2)
    good = (src / "good" / "slice_000.dcm").read_bytes()
    (src / "truncated.dcm").write_bytes(good[: len(good) // 3])
    (src / "notes.txt").write_text("not an image")
    summary = ingest(catalogue, src, "ct")
    assert summary.cases_added == 1
    reasons = {i.path: i.reason for i in summary.issues}
    assert "notes.txt" in reasons and "DICOM" in reasons["notes.txt"]
    assert "truncated.dcm" in reasons
    # Nothing already stored changes when a bad batch comes in.
    before = case_records(catalogue, "ct")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.dcm").write_bytes(b"\x00" * 500)
    ingest(catalogue, tmp_path / "bad", "ct")
    assert case_records(catalogue, "ct") == before


def test_dicomdir_is_reported_not_ingested(catalogue: Catalogue, tmp_path: Path) -> None:
    from pydicom.fileset import FileSet

    make_ct_series(tmp_path / "series", n=2)
    fs = FileSet()
    for f in sorted((tmp_path / "series").iterdir()):
        fs.add(pydicom.dcmread(f))
    fs.write(tmp_path / "media")
    summary = ingest(catalogue, tmp_path / "media", "ct")
    assert any("DICOMDIR" in i.reason for i in summary.issues), summary.issues
    assert summary.cases_added == 1


def test_identifying_file_names_reach_neither_records_nor_logs(
    catalogue: Catalogue, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in" / "Doe_Jonathan_MRN99812"
    files = make_ct_series(folder, n=2)
    for i, f in enumerate(files):
        f.rename(folder / f"Doe_Jonathan_{i}.dcm")
    (folder / "Doe_Jonathan_notes.txt").write_text("x")
    caplog.set_level("DEBUG")
    summary = ingest(catalogue, tmp_path / "in", "ct")
    assert summary.cases_added == 1
    records = case_records(catalogue, "ct")
    assert "Doe" not in str(records) and "Jonathan" not in str(records)
    assert "Doe" not in caplog.text and "Jonathan" not in caplog.text
    # The steward's own summary still names the rejected file, so it can be found.
    assert any("Doe_Jonathan_notes.txt" in i.path for i in summary.issues)

"""De-identification of real sample files: planted PHI, pixels, file meta, UIDs, dates, rules."""

from __future__ import annotations

import os
import shutil
import stat
from datetime import datetime
from pathlib import Path

import pytest
from deid_helpers import SECRET, dataset_bytes, make_ctx, make_seg, sample
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence

from medarena.config import get_settings
from medarena.dicom.deid import (
    DeidContext,
    DeidOptions,
    deidentify_dataset,
    deidentify_tree,
    open_identity_map,
)

PHI = {
    "name": "Zyxwander^Quintessa",
    "id": "MRN-98765-QX",
    "institution": "St Elsewhere Hospital Qx",
    "physician": "Drfoobar^Hieronymus",
    "accession": "ACC77441Q",
}
REAL_FILES = ["CT_small.dcm", "MR_small.dcm", "MR2_UNCR.dcm", "693_UNCR.dcm"]


def _plant_phi(ds: Dataset) -> None:
    ds.PatientName = PHI["name"]
    ds.PatientID = PHI["id"]
    ds.OtherPatientIDs = PHI["id"] + "-OLD"
    ds.InstitutionName = PHI["institution"]
    ds.ReferringPhysicianName = PHI["physician"]
    ds.AccessionNumber = PHI["accession"]
    ds.StudyDescription = f"CT head for {PHI['name']}"
    # Two and three levels deep, inside sequences the table keeps (K) and walks.
    inner = Dataset()
    inner.PatientName = PHI["name"]
    inner.OperatorsName = PHI["physician"]
    inner.InstitutionName = PHI["institution"]
    deeper = Dataset()
    deeper.PersonName = PHI["physician"]
    deeper.PatientID = PHI["id"]
    inner.ReferencedInstanceSequence = Sequence([deeper])
    outer = Dataset()
    outer.ReferencedSeriesSequence = Sequence([inner])
    ds.ReferencedImageEvidenceSequence = Sequence([outer])
    # Private block with identifiers.
    block = ds.private_block(0x0011, "ACME HOSPITAL PHI", create=True)
    block.add_new(0x01, "LO", PHI["name"])
    block.add_new(0x02, "LO", PHI["id"])


@pytest.mark.parametrize("name", REAL_FILES)
def test_planted_phi_is_gone_from_output_bytes(name: str, tmp_path: Path) -> None:
    ds = dcmread(sample(name))
    _plant_phi(ds)
    pixels = ds.PixelData
    outcome = deidentify_dataset(ds, make_ctx())
    assert outcome.status == "done"
    data = dataset_bytes(outcome.dataset, tmp_path)  # type: ignore[arg-type]
    for value in PHI.values():
        for token in {value, value.replace("^", " "), *value.split("^")}:
            assert token.encode() not in data, token
    back = dcmread(tmp_path / "out.dcm")
    assert back.PixelData == pixels  # byte-identical pixel data
    assert back.PatientIdentityRemoved == "YES"
    assert back.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [item.CodeValue for item in back.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107"]
    assert "medarena-deid v1" in list(back.DeidentificationMethod)
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPClassUID == back.SOPClassUID
    assert not any(e.tag.group & 1 for e in back)


def test_original_uids_and_dates_do_not_survive(tmp_path: Path) -> None:
    ds = dcmread(sample("CT_small.dcm"))
    orig_uids = [
        ds.SOPInstanceUID,
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.FrameOfReferenceUID,
    ]
    orig_dates = {ds.StudyDate, ds.ContentDate}
    sop_class, syntax = ds.SOPClassUID, ds.file_meta.TransferSyntaxUID
    out = deidentify_dataset(ds, make_ctx()).dataset
    data = dataset_bytes(out, tmp_path)  # type: ignore[arg-type]
    for uid in orig_uids:
        assert uid.encode() not in data
    for d in orig_dates:
        assert d.encode() not in data
    back = dcmread(tmp_path / "out.dcm")
    assert back.SOPClassUID == sop_class and back.file_meta.TransferSyntaxUID == syntax
    for uid in (back.SOPInstanceUID, back.StudyInstanceUID, back.FrameOfReferenceUID):
        assert uid.startswith("2.25.") and len(uid) <= 64 and uid.is_valid


def test_seg_references_resolve_across_separate_runs(tmp_path: Path) -> None:
    ct_in = tmp_path / "in_ct"
    seg_in = tmp_path / "in_seg"
    ct_in.mkdir()
    seg_in.mkdir()
    shutil.copy(sample("CT_small.dcm"), ct_in / "ct.dcm")
    make_seg(ct_in / "ct.dcm", seg_in / "seg.dcm")
    settings = get_settings(data_dir=tmp_path / "data", secret_key=SECRET.decode())
    opts = DeidOptions()
    # Two runs, two contexts, same project secret: like two batches on different days.
    s1 = deidentify_tree(ct_in, tmp_path / "out1", opts, settings)
    s2 = deidentify_tree(seg_in, tmp_path / "out2", opts, settings)
    assert [r.status for r in s1.results + s2.results] == ["done", "done"]
    ct = dcmread(tmp_path / "out1" / s1.results[0].output)  # type: ignore[operator]
    seg = dcmread(tmp_path / "out2" / s2.results[0].output)  # type: ignore[operator]
    ref_series = seg.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == ct.SeriesInstanceUID
    assert ref_series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert seg.FrameOfReferenceUID == ct.FrameOfReferenceUID
    assert seg.StudyInstanceUID == ct.StudyInstanceUID
    src = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert src.ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert seg.PatientID == ct.PatientID
    assert b"SN-SECRET-42" not in (tmp_path / "out2" / s2.results[0].output).read_bytes()  # type: ignore[operator]


def _dt(ds: Dataset, d: str, t: str) -> datetime:
    return datetime.strptime(
        ds.data_element(d).value + ds.data_element(t).value[:6], "%Y%m%d%H%M%S"
    )


def test_date_shift_per_patient_keeps_intervals_to_the_second() -> None:
    ctx = make_ctx()
    a1, a2, b = (dcmread(sample("CT_small.dcm")) for _ in range(3))
    a1.PatientID = a2.PatientID = "PAT-A"
    b.PatientID = "PAT-B"
    a1.StudyDate, a1.StudyTime = "20200101", "235959"
    a2.StudyDate, a2.StudyTime = "20200315", "080001"
    b.StudyDate, b.StudyTime = "20200101", "235959"
    a1.AcquisitionDateTime = "20200101235959.5+0100"
    before = _dt(a2, "StudyDate", "StudyTime") - _dt(a1, "StudyDate", "StudyTime")
    for ds in (a1, a2, b):
        assert ctx.deidentify(ds).status == "done"
    after = _dt(a2, "StudyDate", "StudyTime") - _dt(a1, "StudyDate", "StudyTime")
    assert after == before
    assert a1.StudyDate != "20200101"
    assert a1.StudyDate != b.StudyDate  # different patients, different shifts
    assert a1.AcquisitionDateTime == a1.StudyDate + "235959.5+0100"
    # The same patient in another run (fresh context) gets the same shift.
    again = dcmread(sample("CT_small.dcm"))
    again.PatientID, again.StudyDate = "PAT-A", "20200101"
    assert make_ctx(clean_descriptors=True).deidentify(again).status == "done"
    assert again.StudyDate == a1.StudyDate


def test_without_retain_dates_dates_are_removed() -> None:
    ds = dcmread(sample("CT_small.dcm"))
    out = make_ctx(retain_modified_dates=False).deidentify(ds).dataset
    assert out is not None
    assert not out.StudyDate and out.LongitudinalTemporalInformationModified == "REMOVED"
    assert "AcquisitionDate" in out and not out.AcquisitionDate  # X/Z resolved to Z


def test_patient_characteristics_option() -> None:
    ds = dcmread(sample("CT_small.dcm"))
    ds.PatientSex, ds.PatientAge, ds.PatientWeight, ds.PatientSize = "F", "045Y", 61.5, 1.62
    kept = make_ctx(retain_patient_characteristics=True).deidentify(ds).dataset
    assert kept is not None
    assert (kept.PatientSex, kept.PatientAge, kept.PatientWeight) == ("F", "045Y", 61.5)
    codes = [i.CodeValue for i in kept.DeidentificationMethodCodeSequence]
    assert "113108" in codes
    ds2 = dcmread(sample("CT_small.dcm"))
    ds2.PatientAge, ds2.PatientWeight = "045Y", 61.5
    plain = make_ctx().deidentify(ds2).dataset
    assert plain is not None and "PatientAge" not in plain and "PatientWeight" not in plain


def test_clean_descriptors_removes_identifying_tokens_keeps_the_rest() -> None:
    ds = dcmread(sample("CT_small.dcm"))
    ds.PatientName = "Quintessa^Zyx"
    ds.PatientID = "MRN12345"
    ds.StudyDescription = "CT CHEST W CONTRAST zyx quintessa MRN12345 2019-03-04 ph 555123"
    ds.SeriesDescription = "AXIAL 5mm"
    out = make_ctx(clean_descriptors=True).deidentify(ds).dataset
    assert out is not None
    assert out.StudyDescription == "CT CHEST W CONTRAST ph"
    assert out.SeriesDescription == "AXIAL 5mm"
    assert "113105" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    ds2 = dcmread(sample("CT_small.dcm"))
    ds2.StudyDescription = "CT CHEST"
    assert "StudyDescription" not in make_ctx().deidentify(ds2).dataset  # type: ignore[operator]


def test_retain_safe_private_keeps_only_the_allow_list(tmp_path: Path) -> None:
    ds = dcmread(sample("CT_small.dcm"))
    safe = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    safe.add_new(0x0C, "IS", "1000")  # B value: on the allow-list
    safe.add_new(0x0D, "CS", "DIRECTIONAL")
    safe.add_new(0x10, "LO", "Zyxwander PHI")  # same creator, not on the list
    other = ds.private_block(0x0029, "ACME PHI", create=True)
    other.add_new(0x0C, "LO", "MRN-98765-QX")
    out = make_ctx(retain_safe_private=True).deidentify(ds).dataset
    assert out is not None
    block = out.private_block(0x0019, "SIEMENS MR HEADER")
    assert block[0x0C].value == "1000"
    assert 0x0C in block and 0x10 not in block
    data = dataset_bytes(out, tmp_path)
    assert b"Zyxwander" not in data and b"MRN-98765-QX" not in data and b"ACME PHI" not in data


def test_overlays_are_removed_pixels_kept() -> None:
    ds = dcmread(sample("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert any(e.tag.group == 0x6000 for e in ds)
    pixels = ds.PixelData
    out = make_ctx().deidentify(ds).dataset
    assert out is not None
    assert not any(0x6000 <= e.tag.group <= 0x601E for e in out)
    assert out.PixelData == pixels


def test_quarantine_and_reject_rules() -> None:
    ctx = make_ctx()
    sc = dcmread(sample("SC_rgb.dcm"))
    assert ctx.deidentify(sc).status == "quarantined"
    us = dcmread(sample("US1_J2KR.dcm"))
    res = ctx.deidentify(us)
    assert res.status == "quarantined" and "Ultrasound" in (res.reason or "")
    ct = dcmread(sample("CT_small.dcm"))
    ct.BurnedInAnnotation = "YES"
    res = ctx.deidentify(ct)
    assert res.status == "quarantined" and "0028,0301" in (res.reason or "")
    assert ct.PatientName != ""  # quarantined datasets are left untouched
    sr = dcmread(sample("CT_small.dcm"))
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    assert ctx.deidentify(sr).status == "rejected"
    sr2 = dcmread(sample("CT_small.dcm"))
    sr2.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    assert make_ctx(allow_unknown_sop_classes=True).deidentify(sr2).status == "done"


def test_tree_reports_bad_input_and_goes_on(tmp_path: Path) -> None:
    src = tmp_path / "in" / "Doe John"
    src.mkdir(parents=True)
    ct = sample("CT_small.dcm").read_bytes()
    (src / "a_ct.dcm").write_bytes(ct)
    (src / "b_truncated.dcm").write_bytes(ct[: len(ct) // 2])
    (src / "c_notes.txt").write_text("not dicom at all\n" * 20)
    shutil.copy(sample("DICOMDIR"), src / "DICOMDIR")
    shutil.copy(sample("SC_rgb.dcm"), src / "d_sc.dcm")
    (src / "e_mr.dcm").write_bytes(sample("MR_small.dcm").read_bytes())
    settings = get_settings(data_dir=tmp_path / "data", secret_key=SECRET.decode())
    seen: list[int] = []
    summary = deidentify_tree(
        tmp_path / "in",
        tmp_path / "out",
        DeidOptions(),
        settings,
        progress=lambda i, n, p: seen.append(i),
    )
    by_name = {Path(r.path).name: r for r in summary.results}
    assert by_name["a_ct.dcm"].status == "done" and by_name["e_mr.dcm"].status == "done"
    assert by_name["b_truncated.dcm"].status == "rejected"
    assert "truncated" in (by_name["b_truncated.dcm"].reason or "")
    assert by_name["c_notes.txt"].status == "rejected"
    assert by_name["DICOMDIR"].status == "rejected" and "DICOMDIR" in (
        by_name["DICOMDIR"].reason or ""
    )
    assert by_name["d_sc.dcm"].status == "quarantined"
    assert seen == list(range(1, 7))
    written = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert len(written) == 2  # quarantined and rejected files are never written
    assert all("Doe" not in str(p) for p in written)
    assert not summary.all_done


def test_identity_map_is_admin_only_and_records_pseudonyms(tmp_path: Path) -> None:
    settings = get_settings(data_dir=tmp_path / "data", secret_key=SECRET.decode())
    ctx = DeidContext.from_settings(settings, DeidOptions())
    ds = dcmread(sample("CT_small.dcm"))
    original_id = ds.PatientID
    out = ctx.deidentify(ds)
    db = tmp_path / "data" / "identity" / "identity.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    ident = open_identity_map(settings)
    assert ident.original_patient_id(out.patient_pseudonym or "") == original_id
    assert (
        original_id.encode() not in (tmp_path / "data").joinpath("medarena.db").read_bytes()
        if (tmp_path / "data" / "medarena.db").exists()
        else True
    )
    os.chmod(db, 0o644)
    with pytest.raises(Exception, match="owner only"):
        open_identity_map(settings)


def test_pseudonyms_stable_and_distinct() -> None:
    a = dcmread(sample("CT_small.dcm"))
    b = dcmread(sample("CT_small.dcm"))
    c = dcmread(sample("CT_small.dcm"))
    b.PatientID = "SOMEONE-ELSE"
    pa = make_ctx().deidentify(a).patient_pseudonym
    pb = make_ctx().deidentify(b).patient_pseudonym
    pc = make_ctx(clean_descriptors=True).deidentify(c).patient_pseudonym
    assert pa == pc and pa != pb
    other_project = DeidContext.create(DeidOptions(), b"another-project-secret-0123456789")
    d = dcmread(sample("CT_small.dcm"))
    assert other_project.deidentify(d).patient_pseudonym != pa

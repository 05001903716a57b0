from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import PngImagePlugin

from medarena.datasets.catalogue import Catalogue, case_records
from medarena.datasets.ingest import IngestOptions, ingest
from medarena.imaging import read_image
from medarena_testkit import write_nifti


def _vol(seed: int, shape: tuple[int, ...] = (12, 10, 6)) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)


def test_msd_layout_with_channels_labels_and_test_images(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    root = tmp_path / "Task01_BrainTumour"
    root.mkdir()
    (root / "dataset.json").write_text(
        json.dumps({"name": "x", "modality": {"0": "T1", "1": "T2"}})
    )
    for case in ("brats_001", "brats_002"):
        for ch in (0, 1):
            write_nifti(root / "imagesTr" / f"{case}_{ch:04d}.nii.gz", _vol(10 * ch + len(case)))
        lab = np.zeros((12, 10, 6), np.uint8)
        lab[3:6, 3:6, 2:4] = 2
        write_nifti(root / "labelsTr" / f"{case}.nii.gz", lab)
    write_nifti(root / "imagesTs" / "brats_100_0000.nii.gz", _vol(5))
    write_nifti(root / "imagesTs" / "brats_100_0001.nii.gz", _vol(6))
    summary = ingest(catalogue, root, "brain")
    assert summary.cases_added == 3 and not summary.issues
    recs = {r["case_key"]: r for r in case_records(catalogue, "brain")}
    assert set(recs) == {"brats_001", "brats_002", "brats_100"}
    r = recs["brats_001"]
    assert [o["role"] for o in r["objects"]].count("image") == 2
    label_obj = next(o for o in r["objects"] if o["role"] == "label")
    label = read_image(catalogue.store.path_of(label_obj["digest"]))
    assert label.kind == "label" and int(label.array.max()) == 2 and label.array.sum() == 2 * 18
    assert r["spacing"] == [1.0, 1.0, 2.0] and r["shape"] == [12, 10, 6]
    assert not any(o["role"] == "label" for o in recs["brats_100"]["objects"])
    # The re-written header carries no free text from the source file.
    for o in r["objects"]:
        assert b"PLANTED" not in catalogue.store.get_bytes(o["digest"])


def test_identical_channel_files_are_rejected_not_crashed(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    root = tmp_path / "Task02_Dup"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"name": "x", "modality": {"0": "A", "1": "B"}}))
    for ch in (0, 1):  # the same bytes twice, e.g. two empty masks stored as channels
        write_nifti(root / "imagesTr" / f"dup_{ch:04d}.nii.gz", np.zeros((6, 5, 4), np.float32))
    write_nifti(root / "imagesTr" / "ok_0000.nii.gz", _vol(1, (6, 5, 4)))
    write_nifti(root / "imagesTr" / "ok_0001.nii.gz", _vol(2, (6, 5, 4)))
    summary = ingest(catalogue, root, "dup")
    assert summary.cases_added == 1
    [issue] = summary.issues
    assert issue.path.endswith("dup_0001.nii.gz")
    assert "identical to dup_0000.nii.gz" in issue.reason and "'dup'" in issue.reason
    assert {r["case_key"] for r in case_records(catalogue, "dup")} == {"ok"}


def test_mismatched_label_shape_is_rejected_with_reason(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    write_nifti(tmp_path / "in" / "a.nii.gz", _vol(1))
    write_nifti(tmp_path / "in" / "labels" / "a.nii.gz", np.zeros((5, 5, 5), np.uint8))
    write_nifti(tmp_path / "in" / "b.nii.gz", _vol(2))
    summary = ingest(catalogue, tmp_path / "in", "x")
    assert summary.cases_added == 1
    [issue] = summary.issues
    assert issue.path.endswith("labels/a.nii.gz") and "does not match image shape" in issue.reason


def test_broken_nifti_header_is_rejected(catalogue: Catalogue, tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "in" / "ok.nii", _vol(1))
    (tmp_path / "in" / "broken.nii").write_bytes(b"\x00" * 100 + p.read_bytes()[100:200])
    summary = ingest(catalogue, tmp_path / "in", "x")
    assert summary.cases_added == 1
    assert [i.path for i in summary.issues] == ["broken.nii"]


def test_same_case_id_with_other_content_changes_nothing(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    write_nifti(tmp_path / "one" / "a.nii.gz", _vol(1))
    write_nifti(tmp_path / "two" / "a.nii.gz", _vol(2))
    ingest(catalogue, tmp_path / "one", "x")
    before = case_records(catalogue, "x")
    summary = ingest(catalogue, tmp_path / "two", "x")
    assert "already exists" in summary.issues[0].reason
    assert case_records(catalogue, "x") == before


def test_png_images_with_labels_csv(catalogue: Catalogue, tmp_path: Path) -> None:
    src = tmp_path / "fundus"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "PLANTED patient name")
        PILImage.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
            src / f"eye{i}.png", pnginfo=info
        )
    labels = tmp_path / "labels.csv"
    labels.write_text("case_id,dr,glaucoma,sex,age\neye0,1,0,F,61\neye1,0,1,M,55\nghost,1,1,F,1\n")
    summary = ingest(catalogue, src, "fundus", IngestOptions(labels_csv=labels, site="clinic-a"))
    assert summary.cases_added == 3 and summary.labels_applied == 2
    assert any("ghost" in i.reason for i in summary.rejected)
    recs = {r["case_key"]: r for r in case_records(catalogue, "fundus")}
    assert recs["eye0"]["labels"] == {"dr": 1, "glaucoma": 0}
    assert recs["eye0"]["sex"] == "F" and recs["eye0"]["age_years"] == 61
    assert recs["eye2"]["site"] == "clinic-a" and recs["eye2"]["shape"] == [30, 20]
    for r in recs.values():
        for o in r["objects"]:
            assert b"PLANTED" not in catalogue.store.get_bytes(o["digest"])


def test_unreadable_path_is_reported(catalogue: Catalogue, tmp_path: Path) -> None:
    summary = ingest(catalogue, tmp_path / "missing", "x")
    assert summary.issues[0].reason == "path does not exist"


@pytest.mark.parametrize("bad", ["../escape.nii.gz"])
def test_symlink_outside_root_is_not_followed(
    catalogue: Catalogue, tmp_path: Path, bad: str
) -> None:
    write_nifti(tmp_path / "outside.nii.gz", _vol(3))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link.nii.gz").symlink_to(tmp_path / "outside.nii.gz")
    summary = ingest(catalogue, tmp_path / "in", "x")
    assert summary.cases_added == 0 and "outside" in summary.issues[0].reason
    del bad

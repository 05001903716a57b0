"""Lung-nodule demo generator: annotations follow the inserted findings, LUNA16 CPM, ingest."""

from __future__ import annotations

import csv
from pathlib import Path

import cc3d
import nibabel as nib
import numpy as np
import pytest
from gen_ingest_checks import assert_metadata_arrived, assert_same_bytes, ingest_track, metadata

from medarena.demo.generators import lung_nodules
from medarena.demo.generators.common import GeneratedTrack
from medarena.evaluation.detection import luna16_cpm
from medarena.evaluation.runner import evaluate

N_TRAIN, N_TEST, SEED = 6, 4, 4


@pytest.fixture(scope="module")
def track(tmp_path_factory: pytest.TempPathFactory) -> GeneratedTrack:
    return lung_nodules.generate(
        tmp_path_factory.mktemp("lung"), n_train=N_TRAIN, n_test=N_TEST, seed=SEED, size="tiny"
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _points(path: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for r in _rows(path):
        pts = out.setdefault(r["case_id"], [])
        if r["x"]:
            pts.append((float(r["x"]), float(r["y"]), float(r["z"]), float(r["diameter_mm"])))
    return out


def _label(track: GeneratedTrack, cid: str) -> np.ndarray:
    sub = "labelsTr" if cid in track.train_ids else "labelsTs"
    return np.asarray(nib.load(track.ingest_dir / sub / f"{cid}.nii.gz").dataobj)


def test_labels_follow_the_annotated_findings(track: GeneratedTrack) -> None:
    spacing = np.asarray(lung_nodules.GRIDS["tiny"][1])
    nodules = _points(track.root / "annotations.csv")
    excluded = _points(track.root / "annotations_excluded.csv")
    meta = metadata(track)
    all_ids = {*track.train_ids, *track.test_ids}
    assert set(nodules) == set(excluded) == all_ids  # every scan declared in both lists
    assert sum(len(v) for v in nodules.values()) > 0
    assert sum(len(v) for v in excluded.values()) > 0
    for cid in all_ids:
        lab = _label(track, cid)
        assert int(meta[cid]["n_nodules"]) == len(nodules[cid])
        for value, found in ((1, nodules[cid]), (2, excluded[cid])):
            for x, y, z, diameter in found:
                centre = tuple(np.rint(np.array([x, y, z]) / spacing).astype(int))
                assert lab[centre] == value
                if value == 1:
                    assert lung_nodules.MIN_DIAMETER_MM <= diameter <= 30.0
            # findings never touch: one connected component per finding
            n = int(cc3d.connected_components(lab == value, connectivity=26).max())
            assert n == len(found), (cid, value)


def test_excluded_findings_are_micronodules_or_calcified(tmp_path: Path) -> None:
    t = lung_nodules.generate(tmp_path, n_train=16, n_test=0, seed=1, size="tiny")
    diams = [d for pts in _points(t.root / "annotations_excluded.csv").values() for *_, d in pts]
    assert diams and any(d < 3.0 for d in diams) and any(d >= 3.0 for d in diams)
    nodule_diams = [d for pts in _points(t.root / "annotations.csv").values() for *_, d in pts]
    assert min(nodule_diams) >= 3.0 and max(nodule_diams) <= 30.0
    # the largest nodule shows as soft tissue in the lung
    cid, (x, y, z, d) = max(
        ((c, p) for c, pts in _points(t.root / "annotations.csv").items() for p in pts),
        key=lambda item: item[1][3],
    )
    ct = np.asarray(nib.load(t.ingest_dir / "imagesTr" / f"{cid}_0000.nii.gz").dataobj)
    idx = tuple(np.rint(np.array([x, y, z]) / lung_nodules.GRIDS["tiny"][1]).astype(int))
    assert d > 8 and ct[idx] > -300


def test_reference_as_candidates_gives_cpm_one(track: GeneratedTrack, tmp_path: Path) -> None:
    ref = _rows(track.reference)
    assert {r["case_id"] for r in ref} == set(track.test_ids)
    pred = tmp_path / "candidates.csv"
    with open(pred, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "x", "y", "z", "probability"])
        for r in ref:
            w.writerow([r["case_id"], r["x"], r["y"], r["z"], "0.9" if r["x"] else ""])
    result = evaluate("detection", track.reference, pred, {"bootstrap": 0})
    assert result.dataset_metrics["cpm"] == 1.0
    assert all(m["n_detected"] == m["n_nodules"] for m in result.cases.values())


def test_candidates_on_excluded_findings_are_ignored(track: GeneratedTrack) -> None:
    refs = [
        {"scan_id": c, "x": x, "y": y, "z": z, "diameter_mm": d}
        for c, pts in _points(track.root / "annotations.csv").items()
        for x, y, z, d in pts
    ]
    excl = [
        {"scan_id": c, "x": x, "y": y, "z": z, "diameter_mm": d}
        for c, pts in _points(track.root / "annotations_excluded.csv").items()
        for x, y, z, d in pts
    ]
    cands = [{**r, "probability": 0.8} for r in refs] + [{**e, "probability": 0.99} for e in excl]
    ids = sorted({*track.train_ids, *track.test_ids})
    with_excl = luna16_cpm(cands, refs, scan_ids=ids, excluded=excl, bootstrap=0)
    assert with_excl.cpm == 1.0 and with_excl.n_false_positives == 0
    assert with_excl.n_ignored_excluded == len(excl)
    without = luna16_cpm(cands, refs, scan_ids=ids, bootstrap=0)
    assert without.n_false_positives == len(excl)  # they would count against the system


def test_same_seed_same_bytes(track: GeneratedTrack, tmp_path: Path) -> None:
    again = lung_nodules.generate(tmp_path, n_train=N_TRAIN, n_test=N_TEST, seed=SEED, size="tiny")
    assert_same_bytes(track, again)


def test_ingest_takes_the_track_as_is(track: GeneratedTrack, tmp_path: Path) -> None:
    records = ingest_track(track, tmp_path / "data", "demo-lung")
    assert_metadata_arrived(track, records, 1, lambda s: lung_nodules.SITES[s][0])
    meta = metadata(track)
    for cid, rec in records.items():
        assert rec["labels"]["n_nodules"] == int(meta[cid]["n_nodules"])

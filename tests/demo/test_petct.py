"""PET/CT demo generator: exact lesion masks, negatives, uptake, autoPET scoring, ingest."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from gen_ingest_checks import assert_metadata_arrived, assert_same_bytes, ingest_track, metadata
from scipy import ndimage

from medarena.demo.generators import petct
from medarena.demo.generators.common import GeneratedTrack, case_rng
from medarena.evaluation.runner import evaluate

N_TRAIN, N_TEST, SEED = 6, 4, 2


@pytest.fixture(scope="module")
def track(tmp_path_factory: pytest.TempPathFactory) -> GeneratedTrack:
    return petct.generate(
        tmp_path_factory.mktemp("petct"), n_train=N_TRAIN, n_test=N_TEST, seed=SEED, size="tiny"
    )


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _label(track: GeneratedTrack, cid: str) -> np.ndarray:
    sub = "labelsTr" if cid in track.train_ids else "labelsTs"
    return _load(track.ingest_dir / sub / f"{cid}.nii.gz")


def test_label_volume_equals_the_inserted_lesions(track: GeneratedTrack) -> None:
    meta = metadata(track)
    spacing = petct.GRIDS["tiny"][1]
    inserted = track.notes["inserted_lesion_voxels"]
    for cid in (*track.train_ids, *track.test_ids):
        lab = _label(track, cid)
        assert set(np.unique(lab)) <= {0, 1}
        assert int(lab.sum()) == sum(inserted[cid])
        assert int(meta[cid]["n_lesions"]) == len(inserted[cid])
        ml = float(lab.sum()) * float(np.prod(spacing)) / 1000.0
        assert float(meta[cid]["lesion_volume_ml"]) == pytest.approx(ml, abs=1e-4)


def test_negative_and_positive_cases_both_occur(track: GeneratedTrack) -> None:
    counts = [len(v) for v in track.notes["inserted_lesion_voxels"].values()]
    assert 0 in counts and any(c > 0 for c in counts)
    for cid, lesions in track.notes["inserted_lesion_voxels"].items():
        if not lesions:
            assert not _label(track, cid).any()


def test_physiological_uptake_and_lesion_contrast() -> None:
    shape, spacing = petct.GRIDS["demo"]
    rng = case_rng(0, petct.TRACK, 0)
    ct, suv, organs = petct._body(rng, shape, spacing)
    mean = {k: float(suv[organs[k]].mean()) for k in ("brain", "liver", "bladder", "lungs")}
    assert mean["brain"] > mean["liver"] > mean["lungs"]
    assert mean["bladder"] > mean["liver"]
    assert ct[organs["lungs"]].mean() < -700 and abs(ct[organs["liver"]].mean() - 60) < 1
    balls = petct._lesions(rng, organs, spacing, 3)
    assert len(balls) == 3
    for a in range(3):
        for b in range(a + 1, 3):
            assert not (balls[a] & balls[b]).any()
    # blur and Poisson noise: the scan is noisy around the truth, and finer at site A
    scans = {
        site: petct._pet_scan(case_rng(0, "pet-test", 1), suv, spacing, fwhm, counts)
        for site, (_v, fwhm, counts, _n) in petct.SITES.items()
    }
    liver = organs["liver"]
    assert np.std(scans["site-C"][liver]) > np.std(scans["site-A"][liver])
    assert abs(scans["site-A"][liver].mean() - suv[liver].mean()) < 0.2 * suv[liver].mean()
    # hot lesions stand out from the tissue around them after blur and noise
    hot = suv.copy()
    for b in balls:
        hot[b] = hot[b] * 4.0 + 1.0
    _v, fwhm, counts, _n = petct.SITES["site-A"]
    scan = petct._pet_scan(case_rng(0, "pet-test", 2), hot, spacing, fwhm, counts)
    for b in balls:
        shell = ndimage.binary_dilation(b, iterations=2) & ~b
        assert scan[b].mean() > 1.5 * scan[shell].mean()


def test_autopet_scores_the_reference_as_perfect(track: GeneratedTrack, tmp_path: Path) -> None:
    result = evaluate("autopet", track.reference, track.reference, track.task_config)
    assert not result.missing and not result.failed
    assert set(result.cases) == set(track.test_ids)
    inserted = track.notes["inserted_lesion_voxels"]
    for cid, m in result.cases.items():
        assert m["fpv_ml"] == 0.0
        if inserted[cid]:
            assert m["dice"] == 1.0 and m["fnv_ml"] == 0.0 and m["negative"] == 0.0
        else:  # negative case: only the false-positive volume counts
            assert m["negative"] == 1.0 and "dice" not in m
    # an empty prediction misses every lesion's whole volume
    empty = tmp_path / "empty"
    empty.mkdir()
    for cid in track.test_ids:
        img = nib.load(track.reference / f"{cid}.nii.gz")
        nib.save(
            nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), empty / f"{cid}.nii.gz"
        )
    missed = evaluate("autopet", track.reference, empty, track.task_config)
    voxel_ml = float(np.prod(petct.GRIDS["tiny"][1])) / 1000.0
    for cid, m in missed.cases.items():
        if inserted[cid]:
            assert m["fnv_ml"] == pytest.approx(sum(inserted[cid]) * voxel_ml)


def test_same_seed_same_bytes(track: GeneratedTrack, tmp_path: Path) -> None:
    again = petct.generate(tmp_path, n_train=N_TRAIN, n_test=N_TEST, seed=SEED, size="tiny")
    assert_same_bytes(track, again)


def test_ingest_takes_the_track_as_is(track: GeneratedTrack, tmp_path: Path) -> None:
    records = ingest_track(track, tmp_path / "data", "demo-petct")
    assert_metadata_arrived(track, records, 2, lambda s: petct.SITES[s][0])
    meta = metadata(track)
    for cid, rec in records.items():
        assert rec["labels"]["n_lesions"] == int(meta[cid]["n_lesions"])

"""Dose demo generator: prescription normalisation, the beam model, OpenKBP scoring, ingest."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from gen_ingest_checks import assert_metadata_arrived, assert_same_bytes, ingest_track
from scipy import ndimage

from medarena.demo.generators import dose
from medarena.demo.generators.common import GeneratedTrack
from medarena.errors import InputError
from medarena.evaluation.runner import evaluate


@pytest.fixture(scope="module")
def track(tmp_path_factory: pytest.TempPathFactory) -> GeneratedTrack:
    return dose.generate(tmp_path_factory.mktemp("dose"), n_train=4, n_test=2, seed=7, size="tiny")


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _case(track: GeneratedTrack, cid: str) -> tuple[np.ndarray, list[np.ndarray]]:
    sub = "Tr" if cid in track.train_ids else "Ts"
    label = _load(track.ingest_dir / f"labels{sub}" / f"{cid}.nii.gz")
    chans = [
        _load(track.ingest_dir / f"images{sub}" / f"{cid}_{k:04d}.nii.gz")
        for k in range(len(track.channels))
    ]
    return label, chans


def test_dose_is_normalised_to_the_prescription(track: GeneratedTrack) -> None:
    for cid in (*track.train_ids, *track.test_ids):
        cgy, chans = _case(track, cid)
        assert cgy.dtype == np.uint16
        ptv, body = (chans[2] & 1).astype(bool), chans[1].astype(bool)
        gy = cgy / 100.0
        # OpenKBP's D95 of the target: the 5th percentile of its voxel doses
        assert np.percentile(gy[ptv], 5.0) == pytest.approx(dose.PRESCRIPTION_GY, abs=0.005)
        assert track.notes["d95_gy"][cid] == pytest.approx(dose.PRESCRIPTION_GY, abs=0.005)
        assert not gy[~body].any()  # no dose outside the possible-dose mask
        assert gy[ptv].mean() > gy[body & ~ptv].mean() * 2


def test_reference_folder_holds_the_label_dose_in_gy(track: GeneratedTrack) -> None:
    for cid in track.test_ids:
        cgy, chans = _case(track, cid)
        ref = _load(track.reference / cid / "dose.nii.gz")
        np.testing.assert_array_equal(ref, (cgy / 100.0).astype(np.float32))
        for k, roi in enumerate(dose.ROIS):
            mask = _load(track.reference / cid / f"{roi}.nii.gz")
            np.testing.assert_array_equal(mask, (chans[2] >> k) & 1)
            assert mask.any(), (cid, roi)  # every ROI survives the coarse grid


def test_one_beam_attenuates_with_depth_and_has_a_penumbra() -> None:
    shape, spacing = (40, 40, 8), (5.0, 5.0, 5.0)
    body = np.ones(shape, bool)
    target = np.zeros(shape, bool)
    target[17:23, 17:23, 2:6] = True
    d = dose.beam_dose(np.zeros(shape), body, target, spacing, [0.0], penumbra_mm=2.0)
    # beam along +y: in water the dose falls as exp(-mu * depth) on the central axis
    axis = d[20, :, 4]
    expected = math.exp(-dose.MU_PER_MM * 10 * spacing[1])
    assert axis[15] / axis[5] == pytest.approx(expected, rel=1e-6)
    # outside the aperture (target + 5 mm margin + a few penumbra sigmas) nothing arrives
    assert d[5, 10, 4] < 1e-6 * axis[10]
    assert 0.05 * axis[10] < d[16, 10, 4] < axis[10]  # the penumbra edge
    with pytest.raises(InputError, match="n_train"):
        dose.generate(Path("unused"), n_train=-1, n_test=1, seed=0, size="tiny")


def test_refuses_to_mix_cases_with_an_existing_folder(track: GeneratedTrack) -> None:
    before = sorted(p for p in track.root.rglob("*"))
    with pytest.raises(InputError, match="empty folder"):
        dose.generate(track.root, n_train=1, n_test=1, seed=8, size="tiny")
    assert sorted(p for p in track.root.rglob("*")) == before


def test_reference_scores_perfectly_against_itself(track: GeneratedTrack, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    worse = tmp_path / "worse"
    worse.mkdir()
    for cid in track.test_ids:
        img = nib.load(track.reference / cid / "dose.nii.gz")
        nib.save(img, pred / f"{cid}.nii.gz")
        arr = np.asarray(img.dataobj) * 1.05
        nib.save(nib.Nifti1Image(arr.astype(np.float32), img.affine), worse / f"{cid}.nii.gz")
    cfg = dict(track.task_config)
    perfect = evaluate(track.task, track.reference, pred, cfg)
    assert not perfect.missing and not perfect.failed
    assert set(perfect.cases) == set(track.test_ids)
    for metrics in perfect.cases.values():
        assert metrics["dose_score"] == 0.0
        assert metrics["dvh_score"] == 0.0
        assert metrics["dvh_ref/D_95/PTV70"] == pytest.approx(70.0, abs=0.005)
        for oar in dose.OARS:
            assert metrics[f"dvh_error/mean/{oar}"] == 0.0
    scaled = evaluate(track.task, track.reference, worse, cfg)
    for metrics in scaled.cases.values():
        assert metrics["dose_score"] > 0.0
        assert metrics["dvh_error/D_95/PTV70"] == pytest.approx(3.5, abs=0.01)


def test_sites_differ_in_beams_and_ct_noise(track: GeneratedTrack) -> None:
    assert len({v[1] for v in dose.SITES.values()}) == 3
    noise = {}
    for cid in (*track.train_ids, *track.test_ids):
        _, chans = _case(track, cid)
        ct = chans[0].astype(float)
        core = ndimage.binary_erosion(chans[1].astype(bool), iterations=2) & (np.abs(ct - 40) < 150)
        noise[cid] = float(np.median(np.abs(ct[core] - 40)))
    # cases cycle over sites A, B, C: C's CT is the noisiest, A's the quietest
    ids = sorted(noise)
    assert noise[ids[2]] > noise[ids[0]]


def test_same_seed_same_bytes(track: GeneratedTrack, tmp_path: Path) -> None:
    assert_same_bytes(track, dose.generate(tmp_path, n_train=4, n_test=2, seed=7, size="tiny"))


def test_ingest_takes_the_track_as_is(track: GeneratedTrack, tmp_path: Path) -> None:
    records = ingest_track(track, tmp_path / "data", "demo-dose")
    assert_metadata_arrived(track, records, len(track.channels), lambda s: dose.SITES[s][0])
    assert records[track.test_ids[0]]["shape"] == list(dose.GRIDS["tiny"][0])

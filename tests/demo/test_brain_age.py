"""Brain-age demo generator: the documented atrophy model, exact targets, ingest, determinism."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from gen_ingest_checks import assert_same_bytes, ingest_track, metadata

from medarena.demo.generators import brain_age
from medarena.demo.generators.common import GeneratedTrack
from medarena.demo.generators.mni import mni_path, tissue_maps
from medarena.evaluation.tasks import RegressionConfig, evaluate_regression


@pytest.fixture(scope="module")
def track(tmp_path_factory: pytest.TempPathFactory) -> GeneratedTrack:
    return brain_age.generate(
        tmp_path_factory.mktemp("brain_age"), n_train=4, n_test=2, seed=5, size="tiny"
    )


def test_templates_come_from_the_installed_package() -> None:
    import nilearn

    assert Path(mni_path("gm")).is_relative_to(Path(nilearn.__file__).parent)


def test_atrophy_model_thins_cortex_and_enlarges_ventricles() -> None:
    template = tissue_maps(6.0)
    young, old = brain_age.subject_maps(template, 25), brain_age.subject_maps(template, 80)
    icv = lambda m: float((m.gm + m.wm + m.csf).sum())  # noqa: E731
    assert icv(old) == pytest.approx(icv(young), rel=1e-4)  # atrophy moves tissue to CSF
    assert old.gm.sum() < 0.9 * young.gm.sum()
    assert brain_age.ventricle_volume_ml(old) > 1.4 * brain_age.ventricle_volume_ml(young)
    faster = brain_age.subject_maps(template, 80, rate=1.5)
    assert faster.gm.sum() < old.gm.sum()
    # below 20 years the model does nothing
    assert np.array_equal(brain_age.subject_maps(template, 20).gm, template.gm)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {r["case_id"]: r for r in csv.DictReader(fh)}


def test_target_is_the_age(track: GeneratedTrack) -> None:
    meta = metadata(track)
    targets = _rows(track.ingest_dir / "targets.csv")
    reference = _rows(track.reference)
    assert sorted(targets) == sorted(meta) == sorted((*track.train_ids, *track.test_ids))
    assert sorted(reference) == sorted(track.test_ids)  # the hidden reference: test cases only
    for cid, row in targets.items():
        if cid in reference:
            assert reference[cid]["value"] == row["chronological_age"]
            # attributes are shown to participants: a test case's age would be its label
            assert meta[cid]["age"] == ""
        else:
            assert row["chronological_age"] == meta[cid]["age"]
    # the reference scores perfectly against itself with the regression task
    out = evaluate_regression(track.reference, track.reference, RegressionConfig())
    assert out.dataset_metrics["mae"] == 0.0


def test_same_seed_same_bytes(track: GeneratedTrack, tmp_path: Path) -> None:
    assert_same_bytes(track, brain_age.generate(tmp_path, n_train=4, n_test=2, seed=5, size="tiny"))


def test_ingest_takes_the_track_as_is(track: GeneratedTrack, tmp_path: Path) -> None:
    records = ingest_track(track, tmp_path / "data", "brain-age")
    meta = metadata(track)
    targets = _rows(track.ingest_dir / "targets.csv")
    assert set(records) == set(meta)
    for cid, row in records.items():
        assert [o["role"] for o in row["objects"]] == ["image"]
        age = int(targets[cid]["chronological_age"])
        assert row["labels"] == {"chronological_age": age}
        assert row["age_years"] == (None if cid in track.test_ids else age)
        assert row["sex"] == meta[cid]["sex"]
        assert row["manufacturer"] == brain_age.SITES[row["site"]]


def test_sites_differ_in_noise(track: GeneratedTrack) -> None:
    """Outside the head the image is pure Rician noise, whose level is the site's."""
    import nibabel as nib

    meta = metadata(track)
    level: dict[str, list[float]] = {}
    for cid, row in meta.items():
        sub = "imagesTr" if cid in track.train_ids else "imagesTs"
        t1 = np.asarray(nib.load(track.ingest_dir / sub / f"{cid}_0000.nii.gz").dataobj)
        faces = np.concatenate([t1[0].ravel(), t1[-1].ravel(), t1[:, 0].ravel(), t1[:, -1].ravel()])
        level.setdefault(row["site"], []).append(float(np.median(faces)))
    mean = {site: float(np.mean(v)) for site, v in level.items()}
    assert mean["site-B"] > mean["site-C"] > mean["site-A"]  # sigma 0.05 > 0.04 > 0.02

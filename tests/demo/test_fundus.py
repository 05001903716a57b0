"""Fundus demo generator: labels follow the inserted findings, exact insertion, ingest, bytes."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gen_ingest_checks import assert_same_bytes, ingest_track, metadata
from PIL import Image as PILImage

from medarena.demo.generators import fundus
from medarena.demo.generators.common import GeneratedTrack
from medarena.evaluation.tasks import MultilabelConfig, evaluate_multilabel

N = 64


@pytest.fixture(scope="module")
def track(tmp_path_factory: pytest.TempPathFactory) -> GeneratedTrack:
    return fundus.generate(
        tmp_path_factory.mktemp("fundus"), n_train=6, n_test=3, seed=11, size="tiny"
    )


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {r["case_id"]: r for r in csv.DictReader(fh)}


def test_labels_follow_the_recorded_findings(track: GeneratedTrack) -> None:
    labels = _rows(track.ingest_dir / "labels.csv")
    assert sorted(labels) == sorted((*track.train_ids, *track.test_ids))
    for cid, rec in track.notes["cases"].items():
        kinds = set(rec["findings"])
        row = {k: int(v) for k, v in labels[cid].items() if k != "case_id"}
        assert row["diabetic_retinopathy"] == int(
            bool(kinds & {"microaneurysm", "haemorrhage", "hard_exudate"})
        )
        assert row["amd"] == int("drusen" in kinds)
        assert row["hypertensive_retinopathy"] == int("cotton_wool" in kinds)
        assert row["glaucoma"] == int((rec["cup_to_disc"] or 0) >= fundus.GLAUCOMA_CDR)
        assert row["cataract"] == int(rec["haze"] > 0)
        others = [v for k, v in row.items() if k != "normal"]
        assert row["normal"] == int(not any(others))
    backgrounds = {rec["background"] for rec in track.notes["cases"].values()}
    assert backgrounds == {"real photograph", "procedural"}
    assert _rows(track.reference).keys() == set(track.test_ids)


def _case_with_everything(real: bool) -> fundus.FundusCase:
    for i in range(200):
        c = fundus.draw_case(np.random.default_rng(i), 70, real, N)
        labels = fundus.labels_from_findings(c)
        if labels["diabetic_retinopathy"] and labels["amd"] and not labels["cataract"]:
            return c
    raise AssertionError("no case with DR and AMD in 200 draws")


@pytest.mark.parametrize("real", [False, True])
def test_findings_change_exactly_their_own_pixels(real: bool) -> None:
    case = _case_with_everything(real)
    with_findings, lesions = fundus.render(case, N)
    without, none = fundus.render(replace(case, spots=()), N)
    assert not none.any()
    changed = np.abs(with_findings - without).max(axis=-1) > 0
    assert changed.any()
    assert not (changed & (lesions == 0)).any()  # nothing outside the inserted lesions moved
    for spot in case.spots:  # and every inserted lesion is visible
        assert changed[fundus.spot_mask(spot, N) > 0.5].any(), spot


def test_glaucoma_enlarges_the_cup_and_haze_lowers_contrast() -> None:
    case = replace(_case_with_everything(False), spots=())
    normal, _ = fundus.render(replace(case, cdr=0.3), N)
    glaucoma, _ = fundus.render(replace(case, cdr=0.8), N)
    bright = lambda im: int((im.mean(axis=-1) > 0.85).sum())  # noqa: E731 - the pale cup
    assert bright(glaucoma) > bright(normal)
    assert fundus.labels_from_findings(replace(case, cdr=0.8))["glaucoma"] == 1
    hazy, _ = fundus.render(replace(case, haze=0.4), N)
    inside = np.hypot(*np.meshgrid(np.linspace(-1, 1, N), np.linspace(-1, 1, N))) < 0.8
    assert hazy[inside].std() < 0.8 * normal[inside].std()
    assert fundus.labels_from_findings(replace(case, haze=0.4)) == {
        **fundus.labels_from_findings(case),
        "cataract": 1,
        "normal": 0,
    }


def test_same_seed_same_bytes_and_no_png_time_chunk(track: GeneratedTrack, tmp_path: Path) -> None:
    assert_same_bytes(track, fundus.generate(tmp_path, n_train=6, n_test=3, seed=11, size="tiny"))
    png = (track.ingest_dir / "imagesTr" / f"{track.train_ids[0]}.png").read_bytes()
    assert b"tIME" not in png and b"tEXt" not in png


def test_reference_scores_perfectly(track: GeneratedTrack) -> None:
    out = evaluate_multilabel(track.reference, track.reference, MultilabelConfig())
    assert {v["hamming_accuracy"] for v in out.cases.values()} == {1.0}


def test_ingest_takes_the_track_as_is(track: GeneratedTrack, tmp_path: Path) -> None:
    records = ingest_track(track, tmp_path / "data", "fundus")
    labels = _rows(track.ingest_dir / "labels.csv")
    meta = metadata(track)
    assert set(records) == set(meta)
    for cid, row in records.items():
        assert row["labels"] == {k: int(v) for k, v in labels[cid].items() if k != "case_id"}
        assert row["shape"] == [N, N]
        assert row["age_years"] == int(meta[cid]["age"]) and row["sex"] == meta[cid]["sex"]
        assert row["manufacturer"] == fundus.SITES[row["site"]]


def test_sites_differ_in_camera_noise(track: GeneratedTrack) -> None:
    """Outside the field of view the image is black plus the camera's noise."""
    meta = metadata(track)
    c = (np.arange(N) + 0.5) / N * 2 - 1
    corners = np.hypot(*np.meshgrid(c, c)) > 1.0
    level: dict[str, list[float]] = {}
    for cid, row in meta.items():
        sub = "imagesTr" if cid in track.train_ids else "imagesTs"
        rgb = np.asarray(PILImage.open(track.ingest_dir / sub / f"{cid}.png"), float)
        level.setdefault(row["site"], []).append(float(rgb[corners].mean()))
    mean = {site: float(np.mean(v)) for site, v in level.items()}
    assert mean["site-B"] > mean["site-C"] > mean["site-A"]  # noise 0.04 > 0.02 > 0.01

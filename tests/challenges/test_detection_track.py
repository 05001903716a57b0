"""Detection tracks end to end: findings stored per case, candidate archives checked, LUNA16 CPM.

A tiny generated dataset: four CTs ingested as usual, then LUNA16-style ``annotations.csv``
(three nodules on every scan but one, which is declared without nodules) and
``annotations_excluded.csv`` (one excluded finding per scan) attached with
:func:`medarena.datasets.findings.attach_findings`. Submissions go through :func:`submit`
and a real worker, on SQLite and PostgreSQL (``db_url``).

With one scored scan and no false positives the FROC curve sits at fps = 0, so the
sensitivity at every operating point is (detected / nodules) and CPM equals it: 1.0 for
all three nodules, 2/3 for two.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import select
from track_helpers import (
    PHASES,
    add_team_member,
    create_challenge,
    point_cli_at,
    score_all,
    scored_result,
    split_dataset,
    submit_bytes,
)

from medarena.challenges.data import plan_download
from medarena.challenges.leaderboard import build_leaderboard
from medarena.challenges.service import PermissionDenied
from medarena.challenges.spec import ChallengeSpec
from medarena.challenges.submissions import SubmissionRefused, submission_detail
from medarena.challenges.viewer import viewer_case
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, open_catalogue
from medarena.datasets.findings import FINDINGS_ROLE, attach_findings
from medarena.datasets.ingest import ingest
from medarena.db.models import Case
from medarena.db.platform_models import Challenge, Submission, User
from medarena.errors import InputError, NotFoundError

N = 4
COLUMNS = ("case_id", "x", "y", "z", "diameter_mm")
NODULES = [(10.0, 10.0, 10.0, 6.0), (30.0, 30.0, 10.0, 8.0), (50.0, 20.0, 10.0, 5.0)]
EXCLUDED = (20.0, 50.0, 10.0, 4.0)  # a calcified granuloma: neither a hit nor a false positive
EMPTY_SCAN = "lung3"  # declared in annotations.csv with empty coordinates

SPEC = {
    "slug": "luna",
    "title": "Lung nodules",
    "rules": "Find the nodules.",
    "tracks": [
        {
            "slug": "nodules",
            "title": "Nodules",
            "task": "detection",
            "task_config": {"bootstrap": 20},
            "metrics": ["cpm", "sens@1"],
            "primary_metric": "cpm",
            "dataset": "lung",
            "split": "s",
        }
    ],
    "phases": PHASES,
}


def _write_csv(
    path: Path, rows: Sequence[Sequence[object]], header: Sequence[str] = COLUMNS
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def _annotations(folder: Path) -> tuple[Path, Path]:
    nodules: list[Sequence[object]] = []
    excluded: list[Sequence[object]] = []
    for i in range(N):
        key = f"lung{i}"
        if key == EMPTY_SCAN:
            nodules.append((key, "", "", "", ""))
        else:
            nodules.extend((key, *n) for n in NODULES)
        excluded.append((key, *EXCLUDED))
    return (
        _write_csv(folder / "annotations.csv", nodules),
        _write_csv(folder / "annotations_excluded.csv", excluded),
    )


@dataclass
class World:
    cat: Catalogue
    uid: int
    annotations: Path
    excluded: Path
    keys: dict[str, list[str]]  # subset -> case keys


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    settings = get_settings(data_dir=tmp_path / "data", database_url=db_url, secret_key="k" * 48)
    cat = open_catalogue(settings)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(N):
        ct = np.random.default_rng(i).normal(-800, 20, (8, 8, 4)).astype(np.float32)
        nib.save(nib.Nifti1Image(ct, np.eye(4)), str(src / f"lung{i}.nii.gz"))
    assert ingest(cat, src, "lung").cases_added == N
    split_dataset(cat, "lung")
    annotations, excluded = _annotations(tmp_path)
    summary = attach_findings(cat, "lung", annotations, excluded)
    assert (summary.cases, summary.nodules, summary.excluded) == (N, 3 * (N - 1), N)
    uid, keys = create_challenge(cat, SPEC, "lung")
    assert [len(v) for v in keys.values()] == [2, 1, 1]
    yield World(cat, uid, annotations, excluded, keys)
    cat.close()


def _candidates(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header or ("case_id", "x", "y", "z", "probability"))
    w.writerows(rows)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("candidates.csv", buf.getvalue())
    return out.getvalue()


def _submit(w: World, data: bytes, uid: int | None = None, phase: str = "val") -> int:
    return submit_bytes(w.cat, uid or w.uid, "luna", "nodules", phase, data, "candidates.zip")


def _scored_key(w: World) -> str:
    (key,) = w.keys["validation"]
    if key == EMPTY_SCAN:  # the split is seeded; the scan scored must carry the three nodules
        pytest.fail(f"the validation case {key} is the scan without nodules; change EMPTY_SCAN")
    return key


def test_detection_track_scores_luna16_cpm_with_excluded_findings(world: World) -> None:
    key = _scored_key(world)
    hits = [(key, x, y, z, p) for (x, y, z, _), p in zip(NODULES, (0.9, 0.8, 0.7), strict=True)]
    on_excluded = (key, *EXCLUDED[:3], 0.99)
    elsewhere = (key, 80.0, 80.0, 10.0, 0.99)  # the same mark, off every finding
    perfect = _submit(world, _candidates(hits))
    with_excluded = _submit(world, _candidates([*hits, on_excluded]))
    with_fp = _submit(world, _candidates([*hits, elsewhere]))
    score_all(world.cat)
    sub, res = scored_result(world.cat, perfect)
    assert sub.primary_score == pytest.approx(1.0)
    assert res.cases[key]["n_nodules"] == 3.0 and res.cases[key]["n_detected"] == 3.0
    sub, res = scored_result(world.cat, with_excluded)
    assert sub.primary_score == pytest.approx(1.0)  # the excluded finding's mark is ignored
    assert res.cases[key]["n_false_positives"] == 0.0
    sub, res = scored_result(world.cat, with_fp)
    assert sub.primary_score is not None and sub.primary_score < 0.6  # it ranks above the hits
    assert res.cases[key]["n_false_positives"] == 1.0
    # a second team misses one nodule of three: CPM 2/3, one third lower; ranked second
    with world.cat.sessions() as s, s.begin():
        bob = add_team_member(s, s.scalars(select(Challenge)).one(), "bob@example.org", "bob-team")
    missed = _submit(world, _candidates(hits[:2]), uid=bob)
    score_all(world.cat)
    sub, res = scored_result(world.cat, missed)
    assert sub.primary_score == pytest.approx(2 / 3)
    assert sub.scores["sens@1"] == pytest.approx(2 / 3)
    assert res.cases[key]["n_detected"] == 2.0
    with world.cat.sessions() as s:
        ch = s.scalars(select(Challenge)).one()
        board = build_leaderboard(
            s, world.cat.store, ChallengeSpec.model_validate(SPEC), ch.id, "val", "nodules"
        )
    assert board.higher_is_better is True
    assert [(r.team, r.rank) for r in board.rows] == [("ada-team", 1), ("bob-team", 2)]
    assert [r.primary for r in board.rows] == pytest.approx([1.0, 2 / 3])


def test_bad_candidate_archives_are_refused_with_reasons(world: World) -> None:
    key = _scored_key(world)
    good = (key, 10.0, 10.0, 10.0, 0.9)
    for data, words in (
        (_candidates([good[:4]], ("case_id", "x", "y", "z")), ["needs the columns probability"]),
        (_candidates([good, (key, "nan", 1, 1, 0.5)]), ["line 3 x='nan'"]),
        (_candidates([(key, 1, 2, 3, "inf"), (key, 1, "", 3, 0.5)]), ["probability='inf'", "y=''"]),
        (_candidates([good, ("lung99", 1, 2, 3, 0.5)]), ["unknown case ids", "lung99"]),
        (_candidates([("lung99", 1, 2, 3, 0.5)]), [f"no prediction for 1 case(s): {key}"]),
    ):
        with pytest.raises(SubmissionRefused) as info:
            _submit(world, data)
        text = " ".join(info.value.problems)
        for w in words:
            assert w in text, (w, text)
    with world.cat.sessions() as s:
        assert s.scalars(select(Submission)).all() == []  # nothing stored
    # a scan declared without candidates (empty coordinates) is a valid submission
    _submit(world, _candidates([(key, "", "", "", "")]))
    score_all(world.cat)
    with world.cat.sessions() as s:
        (sub,) = s.scalars(select(Submission)).all()
        assert sub.status == "scored" and sub.primary_score == pytest.approx(0.0)


def _findings(w: World) -> dict[str, str]:
    with w.cat.sessions() as s:
        return {
            c.case_key: o.digest
            for c in s.scalars(select(Case))
            for o in c.objects
            if o.role == FINDINGS_ROLE
        }


def test_findings_files_are_checked_before_anything_is_stored(world: World, tmp_path: Path) -> None:
    before = _findings(world)
    assert set(before) == {f"lung{i}" for i in range(N)}
    stored = json.loads(world.cat.store.get_bytes(before["lung0"]))
    assert len(stored["nodules"]) == 3 and stored["excluded"] == [
        dict(zip(COLUMNS[1:], EXCLUDED, strict=True))
    ]
    lines = world.annotations.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    for row, words in (
        ("lung0,nan,1,1,5", ["bad.csv", "line 3", "x must be a finite number", "'nan'"]),
        ("lung0,1,1,1,-2", ["line 3", "diameter_mm must be >= 0", "'-2'"]),
        ("lung0,1,1,,5", ["line 3", "z must be a finite number"]),
        ("lung9,1,1,1,5", ["bad.csv", "not cases of dataset 'lung'", "lung9"]),
    ):
        bad.write_text("\n".join([lines[0], lines[1], row, *lines[2:]]) + "\n")
        with pytest.raises(InputError) as info:
            attach_findings(world.cat, "lung", bad, world.excluded)
        for w in words:
            assert w in str(info.value), (w, str(info.value))
        # the same rules for the excluded list, with good annotations
        with pytest.raises(InputError, match=r"bad\.csv"):
            attach_findings(world.cat, "lung", world.annotations, bad)
    bad.write_text("case,x,y,z,diameter_mm\nlung0,1,1,1,5\n")
    with pytest.raises(InputError, match="'case_id' or 'seriesuid'"):
        attach_findings(world.cat, "lung", bad)
    assert _findings(world) == before


def test_findings_of_hidden_cases_are_never_offered(world: World) -> None:
    key = _scored_key(world)
    (hidden,) = world.keys["test"]
    sid = _submit(world, _candidates([(hidden, 10.0, 10.0, 10.0, 0.9)]), phase="test")
    score_all(world.cat)
    with world.cat.sessions() as s:
        ch = s.scalars(select(Challenge)).one()
        user = s.get(User, world.uid)
        names = {e.name for e in plan_download(s, ch, user, "training", "nodules").entries}
        assert {f"findings/{k}.json" for k in world.keys["train"]} <= names
        assert not any(k in n for n in names for k in (key, hidden))
        for phase, subset in (("val", key), ("test", hidden)):
            inputs = plan_download(s, ch, user, "inputs", "nodules", phase)
            assert [e.name for e in inputs.entries] == [f"images/{subset}.nii.gz"]
        with pytest.raises(PermissionDenied):
            plan_download(s, ch, user, "reference", "nodules", "test")
        sub = s.get(Submission, sid)
        assert sub is not None and sub.status == "scored"
        with pytest.raises(NotFoundError):
            viewer_case(s, sub, user, hidden)  # a table task: no case viewer, hidden or not
        detail = submission_detail(s, world.cat.store, sub, user)
        assert detail["cases"] is None and detail["subset_hidden"] is True
        # the team's own scores, but not the hidden scans' nodule count
        assert detail["scores"]["cpm"] == pytest.approx(1 / 3)
        assert "n_nodules" not in detail["scores"] and "n_detected" in detail["scores"]


def test_attach_findings_command(
    world: World, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`medarena datasets attach-findings` replaces a case's findings; a bad file exits 2."""
    from typer.testing import CliRunner

    from medarena.cli.main import app

    point_cli_at(monkeypatch, world.cat, db_url)
    before = _findings(world)
    # LUNA16's own column names are read too
    ann = _write_csv(
        tmp_path / "luna.csv",
        [("lung0", 1.0, 2.0, 3.0, 7.5)],
        ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"),
    )
    res = CliRunner().invoke(app, ["datasets", "attach-findings", "lung", str(ann)])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "findings of 1 case(s)" in out and "1 nodules, 0 excluded findings" in out, out
    after = _findings(world)
    assert after["lung0"] != before["lung0"]
    assert {k: v for k, v in after.items() if k != "lung0"} == {
        k: v for k, v in before.items() if k != "lung0"
    }  # cases the files do not name keep their findings
    assert json.loads(world.cat.store.get_bytes(after["lung0"])) == {
        "nodules": [{"x": 1.0, "y": 2.0, "z": 3.0, "diameter_mm": 7.5}],
        "excluded": [],
    }
    ann.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\nlung0,1,2,3,inf\n")
    res = CliRunner().invoke(app, ["datasets", "attach-findings", "lung", str(ann)])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "luna.csv" in out and "line 2" in out, res.output
    assert _findings(world) == after


def test_lung_nodule_demo_files_round_trip_through_the_catalogue(
    db_url: str, tmp_path: Path
) -> None:
    """The demo generator's annotations.csv / annotations_excluded.csv, stored and written
    back as the scoring reference: the nodule centres score CPM 1.0, excluded marks ignored."""
    from medarena.challenges.scoring import materialise_reference
    from medarena.demo.generators import lung_nodules
    from medarena.evaluation.runner import evaluate

    gen = lung_nodules.generate(tmp_path / "gen", n_train=2, n_test=1, seed=1, size="tiny")
    settings = get_settings(data_dir=tmp_path / "data", database_url=db_url, secret_key="k" * 48)
    cat = open_catalogue(settings)
    try:
        assert ingest(cat, gen.ingest_dir, "chest").cases_added == 3
        summary = attach_findings(
            cat, "chest", gen.root / "annotations.csv", gen.root / "annotations_excluded.csv"
        )
        with (gen.root / "annotations.csv").open() as fh:
            nodules = [r for r in csv.DictReader(fh) if r["x"]]
        with (gen.root / "annotations_excluded.csv").open() as fh:
            excluded = [r for r in csv.DictReader(fh) if r["x"]]
        assert (summary.cases, summary.nodules, summary.excluded) == (
            3,
            len(nodules),
            len(excluded),
        )
        with cat.sessions() as s:
            cases = list(s.scalars(select(Case).order_by(Case.case_key)))
            for c in cases:
                list(c.objects)  # loaded before the session closes
        ref = materialise_reference(cat.store, cases, "detection", tmp_path / "ref")
    finally:
        cat.close()
    with ref.open() as fh:
        rows = list(csv.DictReader(fh))
    assert sum(r["excluded"] == "0" for r in rows) == len(nodules)
    assert sum(r["excluded"] == "1" for r in rows) == len(excluded)
    cands = [(r["case_id"], r["x"], r["y"], r["z"], 0.9) for r in nodules]
    cands += [(r["case_id"], r["x"], r["y"], r["z"], 0.99) for r in excluded]
    pred = _write_csv(tmp_path / "pred.csv", cands, ("case_id", "x", "y", "z", "probability"))
    result = evaluate("detection", ref, pred, {"bootstrap": 0})
    assert result.dataset_metrics["cpm"] == pytest.approx(1.0)
    assert sum(v["n_false_positives"] for v in result.cases.values()) == 0

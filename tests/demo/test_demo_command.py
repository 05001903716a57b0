"""`medarena demo` end to end: tiny data, three tracks, a real catalogue, real workers."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from medarena.accounts.errors import PermissionDenied
from medarena.accounts.passwords import verify_password
from medarena.challenges.data import plan_download, subset_cases
from medarena.challenges.explanations import explanation_index
from medarena.challenges.leaderboard import build_leaderboard
from medarena.challenges.service import get_challenge, load_spec
from medarena.cli.main import app
from medarena.config import get_settings
from medarena.datasets.catalogue import open_catalogue
from medarena.db import models, platform_models
from medarena.db.lab_models import LabRun
from medarena.demo.lab_models import LAB_TEAM, recipe_name
from medarena.demo.runner import CHALLENGE_SLUG, ORGANIZER, TEAMS, cache_dir, parse_tracks
from medarena.errors import InputError
from medarena.lab.registry import get_model, list_models
from medarena.lab.submit import visible_models
from medarena.web.app import create_app

TRACKS = "brain_age,dose,lung_nodules"
SLUGS = ("brain-age", "dose", "lung-nodules")
TABLES = (
    models.Dataset,
    models.Case,
    models.CaseObject,
    models.Split,
    models.SplitAssignment,
    platform_models.User,
    platform_models.Challenge,
    platform_models.Team,
    platform_models.Submission,
    platform_models.Job,
)


def _counts(data_dir: Path) -> dict[str, int]:
    cat = open_catalogue(get_settings(data_dir=data_dir), migrate=False)
    try:
        with cat.sessions() as s:
            return {
                t.__tablename__: int(s.scalar(select(func.count()).select_from(t)) or 0)
                for t in TABLES
            }
    finally:
        cat.close()


def test_demo_tiny_end_to_end_and_idempotent(tmp_path: Path) -> None:
    data_dir = Path(get_settings().data_dir)
    runner = CliRunner()
    args = ["demo", "--size", "tiny", "--no-serve", "--tracks", TRACKS, "--seed", "3"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    out = " ".join(first.output.split())
    passwords = dict(re.findall(r"(\S+@demo\.medarena\.example) password (\S+)", out))
    assert set(passwords) == {ORGANIZER[0], LAB_TEAM[1], *(e for _t, e, _d in TEAMS)}
    # 3 tracks x 2 teams x 2 phases, and Team Lab's model on brain age in both phases
    assert "14 submission(s) added" in out
    # the demo's worker explains Team Lab's model on the public (preliminary) cases too
    assert "1 model submission(s) explained" in out
    assert f"lab model {recipe_name('brain_age')}:1 trained" in out
    assert "MNI152" in out  # the real part of brain age is said
    # where to look: the leaderboard pages a new user opens
    assert "/challenges/demo/leaderboard/preliminary/brain-age" in first.output

    # data cached by seed and version
    for track in TRACKS.split(","):
        assert (cache_dir(data_dir, track, 3, "tiny") / ".complete").is_file()

    cat = open_catalogue(get_settings(), migrate=False)
    try:
        with cat.sessions() as s:
            for email, pw in passwords.items():
                user = s.scalars(
                    select(platform_models.User).where(platform_models.User.email == email)
                ).one()
                assert user.password_hash.startswith("$argon2")
                assert verify_password(user.password_hash, pw)
            ch = get_challenge(s, CHALLENGE_SLUG)
            spec = load_spec(ch)
            assert [t.slug for t in spec.tracks] == list(SLUGS)
            assert "synthetic" in spec.rules and "MNI152" in spec.rules
            subs = s.scalars(select(platform_models.Submission)).all()
            assert {x.status for x in subs} == {"scored"}, [(x.track_slug, x.error) for x in subs]
            assert all(p.submission_kinds == ["predictions", "model"] for p in spec.phases)
            for phase in ("preliminary", "final"):
                for slug in SLUGS:
                    board = build_leaderboard(s, cat.store, spec, ch.id, phase, slug)
                    teams = [t for t, _e, _d in TEAMS] + [LAB_TEAM[0]] * (slug == "brain-age")
                    assert sorted(r.team for r in board.rows) == sorted(teams)
                    assert sorted(r.rank for r in board.rows)[0] == 1
                    assert all(r.primary is not None for r in board.rows)
            # Team Lab's submissions are model archives, scored by the worker from the ONNX
            lab = s.scalars(
                select(platform_models.Submission)
                .join(platform_models.Team)
                .where(platform_models.Team.name == LAB_TEAM[0])
            ).all()
            assert sorted((x.track_slug, x.phase_slug) for x in lab) == [
                ("brain-age", "final"),
                ("brain-age", "preliminary"),
            ]
            # the lab model was trained as a lab run of Team Lab's captain, who sees it
            captain = s.scalars(
                select(platform_models.User).where(platform_models.User.email == LAB_TEAM[1])
            ).one()
            runs = s.scalars(select(LabRun)).all()
            assert [(r.owner_id, r.status) for r in runs] == [(captain.id, "succeeded")]
            assert [m.ref for m in visible_models(cat, s, captain)] == [runs[0].model_ref]
            for x in lab:
                assert x.status == "scored" and x.primary_score is not None
                with zipfile.ZipFile(cat.store.path_of(x.archive_digest)) as zf:
                    assert sorted(zf.namelist()) == ["manifest.yaml", "model.onnx"]
                index = explanation_index(s, cat.store, x)
                if x.phase_slug == "final":  # hidden test cases: nothing explained
                    assert index is None
                    continue
                assert index is not None and index["method"] == "gradcam", index
                val_cases = subset_cases(s, "demo-brain-age", "demo", "validation")
                public = {c.case_key for c in val_cases}
                assert set(index["cases"]) == public and public
            assert not s.scalar(
                select(func.count(platform_models.Job.id)).where(
                    platform_models.Job.state != "done"
                )
            )
            # the hidden test subset is the generator's test cases, and hidden
            split = s.scalars(
                select(models.Split)
                .join(models.Dataset)
                .where(models.Dataset.name == "demo-dose", models.Split.name == "demo")
            ).one()
            assert split.hidden_subsets == ["test"]
            hidden = s.scalars(
                select(models.Case.case_key)
                .join(models.SplitAssignment, models.SplitAssignment.case_id == models.Case.id)
                .where(
                    models.SplitAssignment.split_id == split.id,
                    models.SplitAssignment.subset == "test",
                    models.SplitAssignment.hidden.is_(True),
                )
            ).all()
            assert len(hidden) == 4
            # hidden labels are not downloadable by a participant; the organizer may
            alpha = s.scalars(
                select(platform_models.User).where(platform_models.User.email == TEAMS[0][1])
            ).one()
            organizer = s.scalars(
                select(platform_models.User).where(platform_models.User.email == ORGANIZER[0])
            ).one()
            for slug in SLUGS:
                with pytest.raises(PermissionDenied):
                    plan_download(s, ch, alpha, "reference", slug, "final")
                inputs = plan_download(s, ch, alpha, "inputs", slug, "final")
                assert inputs.entries
                assert not any(e.name.startswith(("labels", "findings")) for e in inputs.entries)
                assert all(e.name != "labels.csv" for e in inputs.entries)
                training = plan_download(s, ch, alpha, "training", slug)
                assert not any(k in e.name for e in training.entries for k in hidden)
            ref = plan_download(s, ch, organizer, "reference", "dose", "final")
            assert {e.name for e in ref.entries} == {f"labels/{k}.nii.gz" for k in hidden}
            s.rollback()  # the organizer's hidden read is audited; not kept by this test
        # wherever the data is shown, it says what is real and what is synthetic
        page = TestClient(create_app(cat.settings, cat)).get("/datasets/demo-brain-age").text
        assert "Real: MNI152" in page and "Synthetic:" in page
        # ... and a hidden case's age (its label in this track) is not among its attributes
        cases = TestClient(create_app(cat.settings, cat)).get(
            "/api/v1/datasets/demo-brain-age/cases"
        )
        hidden_cases = [c for c in cases.json() if c["hidden"]]
        assert len(hidden_cases) == 4
        assert all(c["age_years"] is None and not c["labels"] for c in hidden_cases)
        # the lab trained it on the demo's split and registered it, with its ONNX export
        model = get_model(cat, f"{recipe_name('brain_age')}:1")
        assert (model.dataset, model.split, model.task) == ("demo-brain-age", "demo", "regression")
        assert model.onnx_digest is not None and "mae" in model.metrics
    finally:
        cat.close()

    before = _counts(data_dir)
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    out2 = " ".join(second.output.split())
    assert "0 track(s) generated, 0 ingested, 0 submission(s) added, 0 scoring job(s) run" in out2
    assert "password" in out2 and not re.search(r"password \S{16}", out2)
    assert _counts(data_dir) == before
    assert "lab model" not in out2  # nothing trained again
    cat = open_catalogue(get_settings(), migrate=False)
    try:
        assert [m.ref for m in list_models(cat)] == [f"{recipe_name('brain_age')}:1"]
    finally:
        cat.close()

    # another seed or size in the same data dir is refused before anything is generated
    other = runner.invoke(app, [*args[:-1], "4"])
    assert other.exit_code == 2
    assert "holds the demo data of" in " ".join(other.output.split())
    assert not cache_dir(data_dir, "dose", 4, "tiny").exists()
    assert _counts(data_dir) == before


def test_demo_refuses_unknown_tracks_and_sizes() -> None:
    with pytest.raises(InputError, match="unknown track"):
        parse_tracks("brain_age,spleen")
    assert parse_tracks("lung-nodules,dose,dose") == ["lung_nodules", "dose"]
    res = CliRunner().invoke(app, ["demo", "--size", "tiny", "--no-serve", "--tracks", "nope"])
    assert res.exit_code == 2
    assert "unknown track" in res.output
    res = CliRunner().invoke(app, ["demo", "--size", "huge", "--no-serve", "--tracks", "dose"])
    assert res.exit_code == 2
    assert "--size" in res.output
    assert not (Path(get_settings().data_dir) / "demo-cache").exists()


def test_demo_adds_a_track_to_an_existing_demo() -> None:
    runner = CliRunner()
    base = ["demo", "--size", "tiny", "--no-serve", "--seed", "5"]
    assert runner.invoke(app, [*base, "--tracks", "dose"]).exit_code == 0
    res = runner.invoke(app, [*base, "--tracks", "fundus"])
    assert res.exit_code == 0, res.output
    assert "challenge updated" in " ".join(res.output.split())
    cat = open_catalogue(get_settings(), migrate=False)
    try:
        with cat.sessions() as s:
            ch = get_challenge(s, CHALLENGE_SLUG)
            spec = load_spec(ch)
            # the earlier track stays first; the rules describe both tracks
            assert [t.slug for t in spec.tracks] == ["dose", "fundus"]
            assert "Radiotherapy dose" in spec.rules and "Fundus" in spec.rules
            subs = s.scalars(select(platform_models.Submission)).all()
            # 2 teams x 2 tracks x 2 phases, and Team Lab's fundus model (multilabel) in both phases
            assert len(subs) == 10 and {x.status for x in subs} == {"scored"}
            for slug, teams in (("dose", 2), ("fundus", 3)):
                board = build_leaderboard(s, cat.store, spec, ch.id, "preliminary", slug)
                assert len(board.rows) == teams
                assert all(r.primary is not None for r in board.rows)
        model = get_model(cat, f"{recipe_name('fundus')}:1")
        assert (model.dataset, model.task) == ("demo-fundus", "multilabel")
    finally:
        cat.close()

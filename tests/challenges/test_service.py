"""Challenges in the database: create/update from a spec, data checks, roles, joining."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from medarena.accounts.roles import can_organize, can_review, roles_of
from medarena.challenges import service
from medarena.challenges.spec import ChallengeSpec, parse_spec
from medarena.datasets.catalogue import Catalogue, case_records, list_datasets, make_split
from medarena.datasets.splits import SplitSpec
from medarena.db.platform_models import AuditEvent, RulesAcceptance, Submission, User
from medarena.errors import InputError, NotFoundError


def _actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_create_stores_spec_makes_organizer_and_audits(
    session: Session, spec: ChallengeSpec, make_user
) -> None:
    org = make_user("org@example.org")
    ch = service.create_challenge(session, spec, actor_id=org.id)
    session.commit()
    stored = service.get_challenge(session, "brain-2025")
    assert stored.id == ch.id and stored.spec_revision == 1 and stored.title == spec.title
    assert service.load_spec(stored) == spec
    assert roles_of(session, org.id, ch.id) == {"organizer"}
    assert can_organize(session, org, ch.id)
    assert _actions(session) == ["challenge.create"]
    with pytest.raises(InputError, match="exists"):
        service.create_challenge(session, spec, actor_id=org.id)


def test_get_unknown_challenge(session: Session) -> None:
    with pytest.raises(NotFoundError, match="no challenge named 'x'"):
        service.get_challenge(session, "x")


def test_spec_must_match_the_catalogue(session: Session, spec_yaml: str) -> None:
    bad = parse_spec(spec_yaml.replace("split: challenge", "split: other", 1))
    assert service.check_data(session, bad)[0].startswith("track seg:")
    with pytest.raises(InputError, match="has no such split; splits: challenge"):
        service.create_challenge(session, bad, actor_id=None)
    # The hidden test subset cannot be the downloadable training subset.
    hidden_train = parse_spec(
        spec_yaml.replace(
            "    split: challenge\n",
            "    split: challenge\n    train_subset: test\n    reference_subset: validation\n",
            1,
        )
    )
    problems = service.check_data(session, hidden_train)
    assert any("hidden labels are never downloadable" in p for p in problems)
    missing = parse_spec(spec_yaml.replace("scored_subset: validation", "scored_subset: extra"))
    assert any("'extra'" in p for p in service.check_data(session, missing))
    assert service.check_data(session, parse_spec(spec_yaml)) == []


def test_update_bumps_revision_and_voids_changed_rules(
    session: Session, spec: ChallengeSpec, spec_yaml: str, make_user
) -> None:
    org, alice = make_user("org@example.org"), make_user("alice@example.org")
    ch = service.create_challenge(session, spec, actor_id=org.id)
    service.join_challenge(session, ch, alice)
    assert service.has_accepted_rules(session, ch, alice.id)
    # Same rules: acceptance kept.
    service.update_challenge(
        session,
        ch.slug,
        parse_spec(spec_yaml.replace("team_size_max: 2", "team_size_max: 3")),
        actor_id=org.id,
    )
    assert ch.spec_revision == 2 and service.has_accepted_rules(session, ch, alice.id)
    # Changed rules: accepted again before data or submissions.
    service.update_challenge(
        session,
        ch.slug,
        parse_spec(spec_yaml.replace("Be **fair**.", "Be fair and kind.")),
        actor_id=org.id,
    )
    session.commit()
    assert ch.spec_revision == 3 and not service.has_accepted_rules(session, ch, alice.id)
    assert session.scalars(select(RulesAcceptance)).all() == []
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "challenge.update").order_by(AuditEvent.id)
    ).all()
    assert [e.detail["changed"] for e in events] == [["team_size_max"], ["rules", "team_size_max"]]
    assert events[1].detail["rules_changed"] is True


def test_update_refuses_other_slug_and_orphaning_submissions(
    session: Session, spec: ChallengeSpec, spec_yaml: str, make_user
) -> None:
    org = make_user("org@example.org")
    ch = service.create_challenge(session, spec, actor_id=org.id)
    with pytest.raises(InputError, match="slug differs"):
        service.update_challenge(
            session,
            ch.slug,
            parse_spec(spec_yaml.replace("slug: brain-2025", "slug: other")),
            actor_id=org.id,
        )
    from medarena.challenges import teams

    service.join_challenge(session, ch, org)
    team = teams.create_team(session, ch, org, "Org team")
    session.add(
        Submission(
            challenge_id=ch.id,
            track_slug="grade",
            phase_slug="final",
            team_id=team.id,
            filename="p.zip",
            archive_digest="0" * 64,
            archive_size=1,
        )
    )
    session.flush()
    no_grade = spec_yaml.split("  - slug: grade")[0] + "phases:" + spec_yaml.split("phases:")[1]
    with pytest.raises(InputError, match="removes track grade, which already hold submissions"):
        service.update_challenge(session, ch.slug, parse_spec(no_grade), actor_id=org.id)
    assert ch.spec_revision == 1 and len(service.load_spec(ch).tracks) == 2


def test_roles_grant_revoke_and_last_organizer(
    session: Session, spec: ChallengeSpec, make_user
) -> None:
    org, rev, admin = (
        make_user("org@example.org"),
        make_user("rev@example.org"),
        make_user("root@example.org", admin=True),
    )
    ch = service.create_challenge(session, spec, actor_id=org.id)
    service.grant_role(session, ch, rev.id, "reviewer", actor_id=org.id)
    assert can_review(session, rev, ch.id) and not can_organize(session, rev, ch.id)
    assert can_organize(session, admin, ch.id)  # platform admin
    with pytest.raises(service.PermissionDenied):
        service.require_organizer(session, ch, rev)
    with pytest.raises(InputError, match="role must be one of"):
        service.grant_role(session, ch, rev.id, "judge", actor_id=org.id)
    with pytest.raises(InputError, match="at least one organizer"):
        service.revoke_role(session, ch, org.id, "organizer", actor_id=admin.id)
    service.revoke_role(session, ch, rev.id, "reviewer", actor_id=org.id)
    assert not can_review(session, rev, ch.id)
    org.is_active = False
    assert not can_organize(session, org, ch.id)
    assert _actions(session) == [
        "challenge.create",
        "challenge.role_grant",
        "challenge.role_revoke",
    ]


def test_join_is_idempotent_and_required(session: Session, spec: ChallengeSpec, make_user) -> None:
    org, bob = make_user("org@example.org"), make_user("bob@example.org")
    ch = service.create_challenge(session, spec, actor_id=org.id)
    with pytest.raises(service.PermissionDenied, match="accept the rules"):
        service.require_participant(session, ch, bob)
    with pytest.raises(service.PermissionDenied, match="log in"):
        service.require_participant(session, ch, None)
    service.join_challenge(session, ch, bob)
    service.join_challenge(session, ch, bob)
    session.commit()
    service.require_participant(session, ch, bob)
    assert roles_of(session, bob.id, ch.id) == {"participant"}
    assert len(session.scalars(select(RulesAcceptance)).all()) == 1


def test_find_track_phase(spec: ChallengeSpec, spec_yaml: str) -> None:
    track, phase = service.find_track_phase(spec, "seg", "final")
    assert (track.slug, phase.slug) == ("seg", "final")
    only_seg = parse_spec(
        spec_yaml.replace(
            "    requires_phase: preliminary\n",
            "    requires_phase: preliminary\n    tracks: [seg]\n",
        )
    )
    with pytest.raises(InputError, match="not part of phase 'final'"):
        service.find_track_phase(only_seg, "grade", "final")


def test_cli_validate_create_update_show(
    catalogue: Catalogue, spec_yaml: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from medarena.cli.main import app

    monkeypatch.setenv("MEDARENA_DATA_DIR", str(catalogue.settings.data_dir))
    if catalogue.settings.database_url:  # the PostgreSQL world
        monkeypatch.setenv("MEDARENA_DATABASE_URL", catalogue.settings.database_url)
        assert catalogue.settings.secret_key is not None
        monkeypatch.setenv("MEDARENA_SECRET_KEY", catalogue.settings.secret_key.get_secret_value())
    runner = CliRunner()
    good = tmp_path / "spec.yaml"
    good.write_text(spec_yaml)
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec_yaml.replace("leaderboard: private_until_close", "leaderboard: secret"))
    res = runner.invoke(app, ["challenge", "validate", str(bad)])
    assert res.exit_code == 2
    line = spec_yaml.splitlines().index("    leaderboard: private_until_close") + 1
    assert f"line {line}, field phases[1].leaderboard" in " ".join(res.output.split())
    res = runner.invoke(app, ["challenge", "create", str(good)])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["challenge", "create", str(good)]).exit_code == 2
    good.write_text(spec_yaml.replace("title: Brain challenge 2025", "title: Brain 2025 (v2)"))
    res = runner.invoke(app, ["challenge", "update", str(good)])
    assert res.exit_code == 0 and "revision 2" in res.output
    res = runner.invoke(app, ["challenge", "show", "brain-2025", "--yaml"])
    assert res.exit_code == 0 and parse_spec(res.output).title == "Brain 2025 (v2)"
    res = runner.invoke(app, ["challenge", "list"])
    assert "brain-2025" in res.output and "preliminary: open" in " ".join(res.output.split())


def test_split_names_are_listed_in_order(catalogue: Catalogue) -> None:
    """Splits made out of alphabetical order are listed by name, whatever plan the database
    picks: on PostgreSQL index scans are switched off, so rows come in heap order."""
    if catalogue.engine.dialect.name == "postgresql":

        @event.listens_for(catalogue.engine, "connect")
        def _heap_order(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                for scan in ("indexscan", "indexonlyscan", "bitmapscan"):
                    cur.execute(f"SET enable_{scan} = off")

        catalogue.engine.dispose()  # new connections get the settings
    for name in ("zeta", "alpha"):
        make_split(
            catalogue,
            "brain",
            SplitSpec(name=name, ratios=(0.5, 0.5, 0.0), group_by=None, hidden=("test",)),
        )
    names = ["alpha", "challenge", "zeta"]
    assert next(d for d in list_datasets(catalogue) if d.name == "brain").splits == names
    assert all(list(r["splits"]) == names for r in case_records(catalogue, "brain"))
    with catalogue.session() as s, pytest.raises(InputError) as info:
        service.subset_info(s, "brain", "other", "test")
    assert "splits: alpha, challenge, zeta" in str(info.value)


def test_joining_twice_at_once_is_idempotent(
    catalogue: Catalogue, spec: ChallengeSpec, make_user, session: Session
) -> None:
    """A double-clicked join: both requests succeed, one acceptance and one role are stored."""
    org, bob = make_user("org@example.org"), make_user("bob@example.org")
    service.create_challenge(session, spec, actor_id=org.id)
    session.commit()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def join() -> None:
        with catalogue.sessions() as s:
            ch, user = service.get_challenge(s, "brain-2025"), s.get(User, bob.id)
            assert user is not None
            barrier.wait()
            try:
                service.join_challenge(s, ch, user)
                s.commit()
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=join) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with catalogue.sessions() as s:
        ch = service.get_challenge(s, "brain-2025")
        assert len(s.scalars(select(RulesAcceptance)).all()) == 1
        assert roles_of(s, bob.id, ch.id) == {"participant"}


def test_missing_dataset_or_split_is_reported_once(session: Session, spec_yaml: str) -> None:
    """A track's missing dataset (or split) is one problem, not one per subset it names."""
    no_dataset = parse_spec(spec_yaml.replace("dataset: brain", "dataset: nowhere", 1))
    problems = service.check_data(session, no_dataset)
    assert len([p for p in problems if "no such dataset" in p]) == 1, problems
    assert len(problems) == len(set(problems))
    no_split = parse_spec(spec_yaml.replace("split: challenge", "split: other", 1))
    problems = service.check_data(session, no_split)
    assert len([p for p in problems if "no such split" in p]) == 1, problems
    # A subset missing from an existing split still names that subset.
    missing = parse_spec(spec_yaml.replace("scored_subset: validation", "scored_subset: extra"))
    assert [p for p in service.check_data(session, missing) if "'extra'" in p]

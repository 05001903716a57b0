"""Shared pieces of the per-task track tests (dose, detection): phases, teams, submissions.

A track test builds its own dataset and reference, then a challenge with a public
``val`` phase (subset ``validation``) and a ``test`` phase (subset ``test``, hidden in the
split), a team per user, and submissions scored by a real worker.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from medarena.challenges.data import subset_cases
from medarena.challenges.scoring import HANDLERS
from medarena.challenges.spec import ChallengeSpec
from medarena.challenges.submissions import submit
from medarena.datasets.catalogue import Catalogue, make_split
from medarena.datasets.splits import SplitSpec
from medarena.db.platform_models import (
    Challenge,
    RulesAcceptance,
    Submission,
    Team,
    TeamMember,
    User,
)
from medarena.evaluation.results import EvaluationResult
from medarena.jobs import Worker

OPEN = ("2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z")
PHASES: list[dict[str, Any]] = [
    {
        "slug": slug,
        "title": title,
        "opens": OPEN[0],
        "closes": OPEN[1],
        "scored_subset": subset,
    }
    for slug, title, subset in (("val", "Validation", "validation"), ("test", "Test", "test"))
]


def add_team_member(s: Session, ch: Challenge, email: str, team: str) -> int:
    """A user who accepted the rules and captains a new team of ``ch``; their id."""
    u = User(email=email, display_name=email.split("@")[0], password_hash="x")
    s.add(u)
    s.flush()
    t = Team(challenge_id=ch.id, name=team)
    s.add(t)
    s.flush()
    s.add(TeamMember(team_id=t.id, challenge_id=ch.id, user_id=u.id, is_captain=True))
    s.add(RulesAcceptance(challenge_id=ch.id, user_id=u.id, spec_revision=1))
    return u.id


def split_dataset(cat: Catalogue, dataset: str) -> None:
    """Split ``s`` of ``dataset``: half train, a quarter validation, a quarter hidden test."""
    make_split(
        cat, dataset, SplitSpec(name="s", ratios=(0.5, 0.25, 0.25), group_by=None, hidden=("test",))
    )


def create_challenge(
    cat: Catalogue, spec_data: dict[str, Any], dataset: str
) -> tuple[int, dict[str, list[str]]]:
    """The challenge of ``spec_data`` with one team (ada's); ada's user id and the case keys
    of each subset of split ``s`` of ``dataset``."""
    spec = ChallengeSpec.model_validate(spec_data)
    with cat.sessions() as s, s.begin():
        ch = Challenge(slug=spec.slug, title=spec.title, spec=spec.model_dump(mode="json"))
        s.add(ch)
        s.flush()
        uid = add_team_member(s, ch, "ada@example.org", "ada-team")
        keys = {
            sub: [c.case_key for c in subset_cases(s, dataset, "s", sub)]
            for sub in ("train", "validation", "test")
        }
    return uid, keys


def point_cli_at(monkeypatch: pytest.MonkeyPatch, cat: Catalogue, db_url: str) -> None:
    """Make a ``medarena`` command run in this test use ``cat``'s data folder and database."""
    monkeypatch.setenv("MEDARENA_DATA_DIR", str(cat.settings.data_dir))
    monkeypatch.setenv("MEDARENA_DATABASE_URL", db_url)
    monkeypatch.setenv("MEDARENA_SECRET_KEY", "k" * 48)


def submit_bytes(
    cat: Catalogue, uid: int, slug: str, track: str, phase: str, data: bytes, filename: str
) -> int:
    """Upload ``data`` as ``filename`` through :func:`submit`; the new submission's id."""
    sub = submit(
        cat.sessions,
        cat.store,
        challenge_slug=slug,
        track_slug=track,
        phase_slug=phase,
        user_id=uid,
        stream=io.BytesIO(data),
        filename=filename,
        work_dir=Path(cat.settings.data_dir) / "work",
    )
    return sub.id


def score_all(cat: Catalogue) -> int:
    """Run a real worker until the queue is empty; the number of jobs it ran."""
    return Worker(cat.sessions, HANDLERS, settings=cat.settings).run_until_idle()


def scored_result(cat: Catalogue, sid: int) -> tuple[Submission, EvaluationResult]:
    """A scored submission (asserted, with its error otherwise) and its result.json."""
    with cat.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None and sub.status == "scored", (sub and sub.status, sub and sub.error)
        s.expunge(sub)
    return sub, EvaluationResult.model_validate_json(cat.store.get_bytes(sub.result_digest or ""))

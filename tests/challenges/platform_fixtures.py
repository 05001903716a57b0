"""Helpers of the submission/leaderboard tests: a migrated database, a challenge, teams."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from medarena.challenges.spec import ChallengeSpec
from medarena.db.engine import create_engine_for, session_factory, upgrade
from medarena.db.models import Case, Dataset, Split, SplitAssignment
from medarena.db.platform_models import (
    Challenge,
    RulesAcceptance,
    Submission,
    Team,
    TeamMember,
    User,
)
from medarena.evaluation.results import EvaluationResult, aggregate_cases
from medarena.storage import LocalObjectStore

UTC = dt.UTC


def spec_dict(**phase_overrides: Any) -> dict[str, Any]:
    """A two-track, two-phase challenge spec (the first phase open now)."""
    now = dt.datetime.now(UTC)
    prelim: dict[str, Any] = {
        "slug": "prelim",
        "title": "Preliminary",
        "opens": (now - dt.timedelta(days=1)).isoformat(),
        "closes": (now + dt.timedelta(days=1)).isoformat(),
        "scored_subset": "val",
    }
    prelim.update(phase_overrides)
    return {
        "slug": "demo",
        "title": "Demo challenge",
        "rules": "Be fair.",
        "tracks": [
            {
                "slug": "seg",
                "title": "Segmentation",
                "task": "segmentation",
                "task_config": {"metrics": ["dice"]},
                "metrics": ["dice"],
                "primary_metric": "dice",
                "ranking": {"bootstrap": 200, "seed": 1},
                "dataset": "ds",
                "split": "s1",
            },
            {
                "slug": "age",
                "title": "Brain age",
                "task": "regression",
                "task_config": {"value_column": "age"},
                "metrics": ["abs_error"],
                "primary_metric": "abs_error",
                "dataset": "ds",
                "split": "s1",
            },
        ],
        "phases": [
            prelim,
            {
                "slug": "final",
                "title": "Final",
                "opens": (now + dt.timedelta(days=2)).isoformat(),
                "closes": (now + dt.timedelta(days=3)).isoformat(),
                "requires_phase": "prelim",
            },
        ],
    }


@dataclass
class Platform:
    url: str
    sessions: sessionmaker[Session]
    store: LocalObjectStore
    spec: ChallengeSpec
    challenge_id: int
    teams: dict[str, int]  # team name -> id
    users: dict[str, int]  # team name -> id of its one member


def make_platform(url: str, root: Path, spec: dict[str, Any], team_names: list[str]) -> Platform:
    """Migrate ``url``, store the challenge and one single-member team per name."""
    upgrade(url)
    sessions = session_factory(create_engine_for(url))
    parsed = ChallengeSpec.model_validate(spec)
    with sessions() as s, s.begin():
        ch = Challenge(slug=parsed.slug, title=parsed.title, spec=parsed.model_dump(mode="json"))
        s.add(ch)
        s.flush()
        teams: dict[str, int] = {}
        users: dict[str, int] = {}
        for name in team_names:
            u = User(email=f"{name}@example.org", display_name=name, password_hash="x")
            t = Team(challenge_id=ch.id, name=name)
            s.add_all([u, t])
            s.flush()
            s.add(TeamMember(team_id=t.id, challenge_id=ch.id, user_id=u.id, is_captain=True))
            s.add(RulesAcceptance(challenge_id=ch.id, user_id=u.id, spec_revision=1))
            teams[name], users[name] = t.id, u.id
        cid = ch.id
    return Platform(url, sessions, LocalObjectStore(root / "store"), parsed, cid, teams, users)


def add_scored(
    p: Platform,
    team: str,
    cases: dict[str, dict[str, float]],
    *,
    track: str = "seg",
    phase: str = "prelim",
    primary: str = "dice",
    task: str = "segmentation",
    at: dt.datetime | None = None,
) -> int:
    """Store a result.json and a scored Submission row for ``team``; returns its id."""
    res = EvaluationResult(task=task, cases=cases, aggregate=aggregate_cases(cases))
    digest = p.store.put_bytes(res.model_dump_json().encode())
    with p.sessions() as s, s.begin():
        sub = Submission(
            challenge_id=p.challenge_id,
            track_slug=track,
            phase_slug=phase,
            team_id=p.teams[team],
            user_id=p.users[team],
            filename="preds.zip",
            archive_digest="0" * 64,
            archive_size=1,
            status="scored",
            result_digest=digest,
            primary_score=res.aggregate[primary].mean,
            scores={k: a.mean for k, a in res.aggregate.items()},
            created_at=at or dt.datetime.now(UTC),
        )
        s.add(sub)
        s.flush()
        return sub.id


def add_table_dataset(p: Platform, ages: dict[str, float], train: int = 2) -> None:
    """Dataset 'ds' with split 's1': the first ``train`` cases in 'train', the rest in 'val'
    and 'test' alternately; each case has the label ``age``."""
    with p.sessions() as s, s.begin():
        ds = Dataset(name="ds")
        s.add(ds)
        s.flush()
        split = Split(dataset_id=ds.id, name="s1", spec={}, hidden_subsets=["test"])
        s.add(split)
        s.flush()
        for i, (key, age) in enumerate(ages.items()):
            c = Case(dataset_id=ds.id, case_key=key, source_format="nifti", labels={"age": age})
            s.add(c)
            s.flush()
            subset = "train" if i < train else ("val" if (i - train) % 2 == 0 else "test")
            s.add(
                SplitAssignment(
                    split_id=split.id, case_id=c.id, subset=subset, hidden=subset == "test"
                )
            )

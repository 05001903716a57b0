"""Builds the data of the platform load benchmark: a challenge with 1,000 scored submissions.

Everything is generated, nothing downloaded: a dataset of catalogue rows (cases with site,
sex, age and shape; no image files, the leaderboard and the upload checks need only the
rows), a two-track, two-phase challenge, ``n_teams`` single-member teams with API tokens,
and ``n_submissions`` scored Submission rows spread over the four (phase, track) boards,
each with a real result.json made by :mod:`medarena.evaluation.results` and stored in the
object store, as scoring stores it.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medarena.accounts.tokens import create_token
from medarena.challenges.spec import ChallengeSpec
from medarena.config import Settings
from medarena.datasets.catalogue import open_catalogue
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

UTC = dt.UTC
SLUG = "bench"
PHASES = ("prelim", "final")
TRACKS = ("seg", "age")
# The shape of every case: 25 scored cases x 160^3 uint8 = 102 MB of predictions.
SHAPE = (160, 160, 160)


def bench_spec(bootstrap: int = 1000) -> dict[str, Any]:
    """A challenge of two tracks (segmentation, regression) and two open, public phases."""
    now = dt.datetime.now(UTC)
    phase = {
        "opens": (now - dt.timedelta(days=10)).isoformat(),
        "closes": (now + dt.timedelta(days=10)).isoformat(),
        "scored_subset": "val",
        "leaderboard": "public",
        "max_upload_mb": 200,
    }
    return {
        "slug": SLUG,
        "title": "Load benchmark challenge",
        "rules": "Generated for the load benchmark.",
        "tracks": [
            {
                "slug": "seg",
                "title": "Segmentation",
                "task": "segmentation",
                "task_config": {"labels": {"tumour": 1}, "metrics": ["dice"]},
                "metrics": ["tumour/dice"],
                "primary_metric": "tumour/dice",
                "ranking": {"bootstrap": bootstrap, "seed": 1},
                "dataset": "bench",
                "split": "s1",
            },
            {
                "slug": "age",
                "title": "Brain age",
                "task": "regression",
                "task_config": {"value_column": "age"},
                "metrics": ["abs_error"],
                "primary_metric": "abs_error",
                "ranking": {"bootstrap": bootstrap, "seed": 1},
                "dataset": "bench",
                "split": "s1",
            },
        ],
        "phases": [
            {"slug": "prelim", "title": "Preliminary", **phase},
            {"slug": "final", "title": "Final", **phase},
        ],
    }


@dataclass
class BenchData:
    """What the load generator needs to know about the generated data."""

    val_cases: list[str]
    tokens: list[str] = field(default_factory=list)  # one API token per team
    n_submissions: int = 0


def build(
    settings: Settings,
    *,
    n_teams: int = 50,
    n_submissions: int = 1000,
    n_cases: int = 60,
    bootstrap: int = 1000,
    seed: int = 0,
) -> BenchData:
    """Fill a fresh data directory: dataset rows, the challenge, teams, scored submissions."""
    rng = np.random.default_rng(seed)
    cat = open_catalogue(settings)  # runs the migrations
    store = cat.store
    spec = ChallengeSpec.model_validate(bench_spec(bootstrap))
    sites, sexes, vendors = ("A", "B", "C"), ("F", "M"), ("GE", "Siemens")
    data = BenchData(val_cases=[])
    try:
        with cat.session() as s, s.begin():
            ds = Dataset(name="bench")
            s.add(ds)
            s.flush()
            split = Split(dataset_id=ds.id, name="s1", spec={}, hidden_subsets=["test"])
            s.add(split)
            s.flush()
            for i in range(n_cases):
                key = f"case{i:03d}"
                subset = "train" if i < 10 else ("val" if i % 2 == 0 else "test")
                c = Case(
                    dataset_id=ds.id,
                    case_key=key,
                    source_format="nifti",
                    site=sites[i % 3],
                    sex=sexes[i % 2],
                    manufacturer=vendors[(i // 3) % 2],
                    age_years=float(30 + i % 50),
                    shape=list(SHAPE),
                    spacing=[1.0, 1.0, 1.0],
                    labels={"age": float(30 + i % 50)},
                )
                s.add(c)
                s.flush()
                s.add(
                    SplitAssignment(
                        split_id=split.id, case_id=c.id, subset=subset, hidden=subset == "test"
                    )
                )
                if subset == "val":
                    data.val_cases.append(key)
            ch = Challenge(slug=spec.slug, title=spec.title, spec=spec.model_dump(mode="json"))
            s.add(ch)
            s.flush()
            team_ids: list[int] = []
            user_ids: list[int] = []
            for t in range(n_teams):
                u = User(email=f"team{t}@example.org", display_name=f"user {t}", password_hash="x")
                team = Team(challenge_id=ch.id, name=f"Team {t:02d}")
                s.add_all([u, team])
                s.flush()
                s.add(TeamMember(team_id=team.id, challenge_id=ch.id, user_id=u.id))
                s.add(RulesAcceptance(challenge_id=ch.id, user_id=u.id, spec_revision=1))
                _, plain = create_token(s, u, "load benchmark")
                data.tokens.append(plain)
                team_ids.append(team.id)
                user_ids.append(u.id)
            skill = rng.uniform(0.5, 0.9, n_teams)
            start = dt.datetime.now(UTC) - dt.timedelta(days=5)
            boards = [(p, t) for p in PHASES for t in TRACKS]
            for k in range(n_submissions):
                phase, track = boards[k % len(boards)]
                t = (k // len(boards)) % n_teams
                at = start + dt.timedelta(minutes=k)
                cases = _cases(rng, data.val_cases, track, float(skill[t]))
                task = "segmentation" if track == "seg" else "regression"
                res = EvaluationResult(task=task, cases=cases, aggregate=aggregate_cases(cases))
                primary = "tumour/dice" if track == "seg" else "abs_error"
                s.add(
                    Submission(
                        challenge_id=ch.id,
                        track_slug=track,
                        phase_slug=phase,
                        team_id=team_ids[t],
                        user_id=user_ids[t],
                        filename="predictions.zip",
                        archive_digest="0" * 64,
                        archive_size=1,
                        status="scored",
                        progress=1.0,
                        result_digest=store.put_bytes(res.model_dump_json().encode()),
                        primary_score=res.aggregate[primary].mean,
                        scores={m: a.mean for m, a in res.aggregate.items()},
                        score_revision=1,
                        created_at=at,
                        scored_at=at + dt.timedelta(seconds=30),
                    )
                )
            data.n_submissions = n_submissions
    finally:
        cat.close()
    return data


def _cases(
    rng: np.random.Generator, keys: list[str], track: str, skill: float
) -> dict[str, dict[str, float]]:
    if track == "seg":
        dice = np.clip(rng.normal(skill, 0.08, len(keys)), 0.0, 1.0)
        return {k: {"tumour/dice": float(d)} for k, d in zip(keys, dice, strict=True)}
    err = np.abs(rng.normal(0.0, 12.0 * (1.0 - skill), len(keys)))
    return {k: {"abs_error": float(e)} for k, e in zip(keys, err, strict=True)}


def make_upload_archive(path: Path, case_keys: list[str], seed: int = 0) -> int:
    """A predictions zip for the segmentation track (uncompressed .nii label maps, stored).

    Random 0/1 labels written without compression: the archive is as large as its
    contents (25 cases x 4.1 MB = 102 MB), as a participant's upload of plain .nii is.
    """
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / "nii"
    tmp.mkdir(exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in case_keys:
            labels = (rng.random(SHAPE) < 0.1).astype(np.uint8)
            f = tmp / f"{key}.nii"
            nib.save(nib.Nifti1Image(labels, np.eye(4)), str(f))
            zf.write(f, arcname=f"{key}.nii")
            f.unlink()
    tmp.rmdir()
    return path.stat().st_size

"""Submissions: checks before queueing, refusals that store nothing, limits under concurrency."""

from __future__ import annotations

import datetime as dt
import io
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from platform_fixtures import Platform, add_scored, add_table_dataset, make_platform, spec_dict
from sqlalchemy import func, select

from medarena.challenges.archives import ArchiveError
from medarena.challenges.service import PermissionDenied
from medarena.challenges.submissions import (
    SCORE_JOB_KIND,
    LimitReached,
    Submission,
    SubmissionRefused,
    check_can_submit,
    insert_submission,
    rescore_phase,
    submission_status,
    submit,
    usage,
)
from medarena.db.platform_models import Challenge, Job, User
from medarena.errors import InputError

AGES = {f"c{i}": 40.0 + i for i in range(1, 9)}  # val: c3 c5 c7, test (hidden): c4 c6 c8
VAL = ("c3", "c5", "c7")


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _csv(rows: list[tuple[str, str]]) -> str:
    return "case_id,age\n" + "".join(f"{c},{v}\n" for c, v in rows)


GOOD = _zip({"preds/age.csv": _csv([(c, "50") for c in VAL])})


def _platform(tmp_path: Path, url: str, **phase: Any) -> Platform:
    p = make_platform(
        url,
        tmp_path,
        spec_dict(**phase),
        ["ada", "bob"],
    )
    add_table_dataset(p, AGES)
    return p


def _submit(p: Platform, data: bytes, team: str = "ada", **kw: Any) -> Submission:
    args: dict[str, Any] = {
        "challenge_slug": "demo",
        "track_slug": "age",
        "phase_slug": "prelim",
        "user_id": p.users[team],
        "stream": io.BytesIO(data),
        "filename": "preds.zip",
        "work_dir": p.store.root.parent / "work",
    }
    args.update(kw)
    return submit(p.sessions, p.store, **args)


def _count(p: Platform, model: type) -> int:
    with p.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _nothing_stored(p: Platform) -> None:
    assert _count(p, Submission) == 0 and _count(p, Job) == 0
    assert list(p.store.iter_digests()) == []


def test_good_archive_is_stored_and_queued(platform_db_url: str, tmp_path: Path) -> None:
    p = _platform(tmp_path, platform_db_url)
    sub = _submit(p, GOOD)
    assert sub.status == "queued" and sub.archive_size == len(GOOD)
    assert p.store.get_bytes(sub.archive_digest) == GOOD
    with p.sessions() as s:
        job = s.scalars(select(Job)).one()
        assert job.kind == SCORE_JOB_KIND
        assert job.payload == {"submission_id": sub.id, "spec_revision": 1}
        st = submission_status(s, s.get(Submission, sub.id))  # type: ignore[arg-type]
        assert (st.status, st.progress) == ("queued", 0.0)
    assert list((tmp_path / "work").iterdir()) == [], "temporary files are removed"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("c3", "1"), ("c5", "1"), ("c7", "1"), ("c9", "1")], "unknown case ids: c9"),
        ([("c3", "1"), ("c3", "2"), ("c5", "1"), ("c7", "1")], "more than one row: c3"),
        ([("c3", "1"), ("c5", "1")], "no prediction for 1 case(s): c7"),
        ([("c3", "1"), ("c5", "old"), ("c7", "nan")], "not a finite number for: c5, c7"),
        ([("c3", "1"), ("c5", "1"), ("c7", "1"), ("c4", "1")], "unknown case ids: c4"),
    ],
)
def test_wrong_case_ids_and_values_refused(
    platform_db_url: str, tmp_path: Path, rows: list[tuple[str, str]], expected: str
) -> None:
    p = _platform(tmp_path, platform_db_url)
    with pytest.raises(SubmissionRefused) as info:
        _submit(p, _zip({"age.csv": _csv(rows)}))
    assert any(expected in prob for prob in info.value.problems), info.value.problems
    assert "preds.zip" in str(info.value)
    _nothing_stored(p)


def test_unsafe_or_empty_archive_refused(platform_db_url: str, tmp_path: Path) -> None:
    p = _platform(tmp_path, platform_db_url)
    with pytest.raises(ArchiveError, match="climbs out"):
        _submit(p, _zip({"../age.csv": _csv([(c, "1") for c in VAL])}))
    with pytest.raises(ArchiveError, match="empty archive"):
        _submit(p, _zip({}))
    with pytest.raises(InputError, match="0 bytes"):
        _submit(p, b"")
    with pytest.raises(SubmissionRefused, match="exactly one CSV"):
        _submit(p, _zip({"a.csv": _csv([]), "b.csv": _csv([])}))
    _nothing_stored(p)


def test_upload_larger_than_phase_limit(platform_db_url: str, tmp_path: Path) -> None:
    p = _platform(tmp_path, platform_db_url, max_upload_mb=0.0001)  # 104 bytes
    with pytest.raises(InputError, match="larger than this phase's limit"):
        _submit(p, GOOD + bytes(200))
    _nothing_stored(p)


def test_phase_not_open_and_requires_earlier_phase(platform_db_url: str, tmp_path: Path) -> None:
    p = _platform(tmp_path, platform_db_url)
    late = dt.datetime.now(dt.UTC) + dt.timedelta(days=1, hours=1)
    with pytest.raises(InputError, match="closed at"):
        _submit(p, GOOD, now=late)
    with pytest.raises(InputError, match="opens at"):
        _submit(p, GOOD, phase_slug="final")
    in_final = dt.datetime.now(dt.UTC) + dt.timedelta(days=2, hours=1)
    with pytest.raises(PermissionDenied, match="needs a scored submission"):
        _submit(p, GOOD, phase_slug="final", now=in_final)
    add_scored(
        p, "ada", {"c3": {"abs_error": 1.0}}, track="age", primary="abs_error", task="regression"
    )
    with pytest.raises(SubmissionRefused, match="no prediction for 3 case"):
        _submit(p, GOOD, phase_slug="final", now=in_final)  # the final scores the test cases
    final = _zip({"age.csv": _csv([(c, "50") for c in ("c4", "c6", "c8")])})
    sub = _submit(p, final, phase_slug="final", now=in_final)
    assert sub.phase_slug == "final"


def test_membership_and_rules_required(platform_db_url: str, tmp_path: Path) -> None:
    p = _platform(tmp_path, platform_db_url)
    with p.sessions() as s, s.begin():
        stranger = User(email="x@example.org", display_name="x", password_hash="x")
        s.add(stranger)
        s.flush()
        uid = stranger.id
    with pytest.raises(PermissionDenied, match="accept the rules"):
        _submit(p, GOOD, user_id=uid)


def test_daily_and_total_limits(platform_db_url: str, tmp_path: Path) -> None:
    t0 = dt.datetime.now(dt.UTC)
    closes = (t0 + dt.timedelta(days=1, hours=1)).isoformat()
    p = _platform(
        tmp_path, platform_db_url, submissions_per_day=2, submissions_total=3, closes=closes
    )
    _submit(p, GOOD, now=t0)
    _submit(p, GOOD, now=t0 + dt.timedelta(minutes=1))
    with pytest.raises(LimitReached, match="last 24 hours"):
        _submit(p, GOOD, now=t0 + dt.timedelta(minutes=2))
    _submit(p, GOOD, team="bob", now=t0)  # another team has its own slots
    next_day = t0 + dt.timedelta(hours=24, minutes=5)
    _submit(p, GOOD, now=next_day)
    with pytest.raises(LimitReached, match="all 3 submissions"):
        _submit(p, GOOD, now=next_day + dt.timedelta(minutes=1))
    # a failed run that does not count frees its slot
    with p.sessions() as s, s.begin():
        first = s.scalars(select(Submission).order_by(Submission.id)).first()
        assert first is not None
        first.status, first.counts_toward_limit = "failed", False
    _submit(p, GOOD, now=next_day + dt.timedelta(minutes=2))
    with p.sessions() as s:
        spec_phase = p.spec.phase("prelim")
        u = usage(s, p.challenge_id, p.teams["ada"], spec_phase, "age", next_day)
        assert (u.total, u.remaining) == (3, 0)


def test_two_uploads_race_for_the_last_slot(platform_db_url: str, tmp_path: Path) -> None:
    """Both pass the early checks; under the team lock exactly one takes the slot.

    Two teams race at once (four threads), so each run is two races, and one team's lock
    does not take the other team's slot.
    """
    p = _platform(tmp_path, platform_db_url, submissions_total=1)
    racers: list[tuple[str, Any]] = []
    with p.sessions() as s:
        for team in ("ada", "bob"):
            user = s.get(User, p.users[team])
            assert user is not None
            racers += [(team, check_can_submit(s, "demo", "age", "prelim", user)) for _ in "12"]
    barrier = threading.Barrier(len(racers))
    outcomes: dict[str, list[str]] = {"ada": [], "bob": []}
    lock = threading.Lock()

    def race(i: int) -> None:
        team, target = racers[i]
        barrier.wait()
        try:
            insert_submission(p.sessions, target, p.users[team], f"p{i}.zip", "0" * 64, 1)
            result = "ok"
        except LimitReached:
            result = "limit"
        with lock:
            outcomes[team].append(result)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(racers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert {team: sorted(o) for team, o in outcomes.items()} == {
        "ada": ["limit", "ok"],
        "bob": ["limit", "ok"],
    }
    assert _count(p, Submission) == 2 and _count(p, Job) == 2


def test_rescore_phase_queues_once_per_spec_revision(platform_db_url: str, tmp_path: Path) -> None:
    p = _platform(tmp_path, platform_db_url)
    for team in ("ada", "bob"):
        add_scored(
            p, team, {"c3": {"abs_error": 1.0}}, track="age", primary="abs_error", task="regression"
        )
    with p.sessions() as s, s.begin():
        ch = s.get(Challenge, p.challenge_id)
        assert ch is not None
        ch.spec_revision = 2
        assert rescore_phase(s, ch, "prelim", actor_id=None) == 2
    with p.sessions() as s, s.begin():
        ch = s.get(Challenge, p.challenge_id)
        assert ch is not None
        rescore_phase(s, ch, "prelim", track_slug="age", actor_id=None)
    with p.sessions() as s:
        jobs = s.scalars(select(Job)).all()
        assert len(jobs) == 2
        assert {j.payload["spec_revision"] for j in jobs} == {2}

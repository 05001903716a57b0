"""The job queue on SQLite and PostgreSQL: enqueue, claim, leases, fencing, failures."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from jobtest_handlers import FENCED_ACTION, JobsDb
from sqlalchemy import func, select

from medarena.db.platform_models import AuditEvent, Job
from medarena.errors import InputError
from medarena.jobs import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    LeaseLost,
    claim,
    complete,
    enqueue,
    fail,
    fenced,
    get_job,
    heartbeat,
    reap_expired,
)


def _enqueue(db: JobsDb, kind: str = "k", payload: dict | None = None, **kw: object) -> int:
    with db.sessions() as s, s.begin():
        return enqueue(s, kind, payload or {}, **kw).id  # type: ignore[arg-type]


def _job(db: JobsDb, job_id: int) -> Job:
    with db.sessions() as s:
        return get_job(s, job_id)


def _fenced_rows(db: JobsDb) -> int:
    with db.sessions() as s:
        return (
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == FENCED_ACTION)
            )
            or 0
        )


def test_claim_and_complete_round_trip(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "score", {"submission_id": 7})
    assert _job(jobs_db, job_id).state == QUEUED
    c = claim(jobs_db.sessions, "w1", ["score"], lease_seconds=30)
    assert c is not None
    assert (c.id, c.kind, c.payload, c.attempt, c.worker_id) == (
        job_id,
        "score",
        {"submission_id": 7},
        1,
        "w1",
    )
    row = _job(jobs_db, job_id)
    assert row.state == RUNNING and row.attempts == 1 and row.worker_id == "w1"
    assert claim(jobs_db.sessions, "w2", ["score"], lease_seconds=30) is None  # held
    complete(jobs_db.sessions, c, {"score": 0.5})
    row = _job(jobs_db, job_id)
    assert (row.state, row.result, row.progress) == (DONE, {"score": 0.5}, 1.0)
    assert row.finished_at is not None and row.lease_expires_at is None
    assert claim(jobs_db.sessions, "w2", ["score"], lease_seconds=30) is None  # done is final


def test_dedupe_key_returns_the_existing_job(jobs_db: JobsDb) -> None:
    a = _enqueue(jobs_db, "score", {"n": 1}, dedupe_key="submission:1:rev0")
    b = _enqueue(jobs_db, "score", {"n": 2}, dedupe_key="submission:1:rev0")
    c = _enqueue(jobs_db, "other", {"n": 3}, dedupe_key="submission:1:rev0")
    d = _enqueue(jobs_db, "score", {"n": 4})
    e = _enqueue(jobs_db, "score", {"n": 5})
    assert a == b and len({a, c, d, e}) == 4
    assert _job(jobs_db, a).payload == {"n": 1}  # the first enqueue's payload stands


def test_enqueue_rolls_back_with_the_callers_transaction(jobs_db: JobsDb) -> None:
    with jobs_db.sessions() as s:
        enqueue(s, "score", {})
        s.rollback()
    with jobs_db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0


def test_enqueue_rejects_bad_arguments(jobs_db: JobsDb) -> None:
    with jobs_db.sessions() as s:
        with pytest.raises(InputError, match="kind"):
            enqueue(s, "", {})
        with pytest.raises(InputError, match="max_attempts"):
            enqueue(s, "k", {}, max_attempts=0)


def test_claim_order_kinds_and_run_after(jobs_db: JobsDb) -> None:
    later = _enqueue(jobs_db, "a", run_after=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    first = _enqueue(jobs_db, "a")
    other_kind = _enqueue(jobs_db, "b")
    second = _enqueue(jobs_db, "a")
    got = [claim(jobs_db.sessions, "w", ["a"], 30) for _ in range(3)]
    assert [c.id if c else None for c in got] == [first, second, None]
    assert _job(jobs_db, later).state == QUEUED
    c = claim(jobs_db.sessions, "w", ["a", "b"], 30)
    assert c is not None and c.id == other_kind
    assert claim(jobs_db.sessions, "w", [], 30) is None


def test_concurrent_claims_take_each_job_once(jobs_db: JobsDb) -> None:
    ids = [_enqueue(jobs_db, "k", {"i": i}) for i in range(24)]
    taken: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def grab(name: str) -> None:
        try:
            while (c := claim(jobs_db.sessions, name, ["k"], 30)) is not None:
                with lock:
                    taken.append(c.id)
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(taken) == ids  # every job once, none twice


def test_expired_lease_is_reclaimed_and_the_stale_claim_is_fenced(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "k")
    stale = claim(jobs_db.sessions, "paused-worker", ["k"], lease_seconds=0.3)
    assert stale is not None
    assert claim(jobs_db.sessions, "w2", ["k"], lease_seconds=30) is None
    time.sleep(0.4)  # the first worker is paused past its lease (no heartbeat)
    fresh = claim(jobs_db.sessions, "w2", ["k"], lease_seconds=30)
    assert fresh is not None and (fresh.id, fresh.attempt) == (job_id, 2)

    # the paused worker wakes up: none of its writes lands
    assert heartbeat(jobs_db.sessions, stale, progress=0.9) is False
    with pytest.raises(LeaseLost), fenced(jobs_db.sessions, stale) as s:
        s.add(AuditEvent(action=FENCED_ACTION, target="stale"))
    with pytest.raises(LeaseLost):
        complete(jobs_db.sessions, stale, {"by": "stale"})
    with pytest.raises(LeaseLost):
        fail(jobs_db.sessions, stale, "stale failure")
    assert _fenced_rows(jobs_db) == 0
    assert _job(jobs_db, job_id).state == RUNNING

    with fenced(jobs_db.sessions, fresh, result={"by": "fresh"}) as s:
        s.add(AuditEvent(action=FENCED_ACTION, target="fresh"))
    row = _job(jobs_db, job_id)
    assert (row.state, row.result, row.attempts, row.worker_id) == (DONE, {"by": "fresh"}, 2, "w2")
    assert _fenced_rows(jobs_db) == 1
    # once done, even the stale claim's late fenced write is refused
    with pytest.raises(LeaseLost), fenced(jobs_db.sessions, stale) as s:
        s.add(AuditEvent(action=FENCED_ACTION, target="stale-late"))
    assert _fenced_rows(jobs_db) == 1


def test_heartbeat_extends_the_lease_and_records_progress(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "k")
    c = claim(jobs_db.sessions, "w1", ["k"], lease_seconds=0.6)
    assert c is not None
    for fraction in (0.2, 0.5):
        time.sleep(0.3)
        assert heartbeat(jobs_db.sessions, c, progress=fraction)
    time.sleep(0.3)  # 0.9 s after the claim, 0.3 s after the last beat
    assert claim(jobs_db.sessions, "w2", ["k"], lease_seconds=30) is None
    assert _job(jobs_db, job_id).progress == 0.5


def test_fenced_body_error_rolls_back_and_keeps_the_claim(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "k")
    c = claim(jobs_db.sessions, "w1", ["k"], lease_seconds=30)
    assert c is not None
    with pytest.raises(ZeroDivisionError), fenced(jobs_db.sessions, c) as s:
        s.add(AuditEvent(action=FENCED_ACTION, target="x"))
        s.flush()
        _ = 1 / 0
    assert _fenced_rows(jobs_db) == 0
    assert _job(jobs_db, job_id).state == RUNNING
    # a non-final fenced write keeps the job running; complete() then finishes it
    with fenced(jobs_db.sessions, c, final=False) as s:
        s.add(AuditEvent(action=FENCED_ACTION, target="y"))
    assert _job(jobs_db, job_id).state == RUNNING
    complete(jobs_db.sessions, c, {"ok": True})
    assert _job(jobs_db, job_id).state == DONE and _fenced_rows(jobs_db) == 1


def test_complete_after_final_fenced_write_records_the_result(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "k")
    c = claim(jobs_db.sessions, "w1", ["k"], lease_seconds=30)
    assert c is not None
    with fenced(jobs_db.sessions, c):
        pass
    complete(jobs_db.sessions, c, {"n": 3})
    assert _job(jobs_db, job_id).result == {"n": 3}


def test_user_error_fails_at_once_with_its_message(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "k", max_attempts=3)
    c = claim(jobs_db.sessions, "w1", ["k"], 30)
    assert c is not None
    state = fail(jobs_db.sessions, c, "case_003.nii.gz: wrong shape", user_error=True)
    row = _job(jobs_db, job_id)
    assert state == FAILED == row.state
    assert (row.attempts, row.error) == (1, "case_003.nii.gz: wrong shape")
    assert claim(jobs_db.sessions, "w1", ["k"], 30) is None


def test_internal_error_retries_after_the_delay_until_max_attempts(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "k", max_attempts=2)
    c1 = claim(jobs_db.sessions, "w1", ["k"], 30)
    assert c1 is not None
    assert fail(jobs_db.sessions, c1, "boom", retry_delay_seconds=0.3) == QUEUED
    assert claim(jobs_db.sessions, "w1", ["k"], 30) is None  # not before the delay
    time.sleep(0.35)
    c2 = claim(jobs_db.sessions, "w1", ["k"], 30)
    assert c2 is not None and c2.attempt == 2
    assert fail(jobs_db.sessions, c2, "boom again") == FAILED
    row = _job(jobs_db, job_id)
    assert (row.state, row.attempts, row.error) == (FAILED, 2, "boom again")


def test_lost_worker_on_the_last_attempt_fails_the_job(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "k", max_attempts=1)
    assert claim(jobs_db.sessions, "dies", ["k"], lease_seconds=0.2) is not None
    time.sleep(0.3)
    assert claim(jobs_db.sessions, "w2", ["k"], 30) is None
    row = _job(jobs_db, job_id)
    assert row.state == FAILED and row.error is not None and "lease expired" in row.error
    assert reap_expired(jobs_db.sessions) == 0

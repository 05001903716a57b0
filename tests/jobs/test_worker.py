"""Workers: handlers from an explicit registry, progress, retries, heartbeats, stopping."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from jobtest_handlers import HANDLERS, JobsDb
from sqlalchemy import update

from medarena.config import Settings
from medarena.db.platform_models import Job
from medarena.errors import ConfigError
from medarena.jobs import DONE, FAILED, QUEUED, Worker, claim, enqueue, get_job
from medarena.jobs.background import start_background_workers
from medarena.jobs.registry import load_handlers


def _enqueue(db: JobsDb, kind: str, payload: dict, **kw: object) -> int:
    with db.sessions() as s, s.begin():
        return enqueue(s, kind, payload, **kw).id  # type: ignore[arg-type]


def _job(db: JobsDb, job_id: int) -> Job:
    with db.sessions() as s:
        return get_job(s, job_id)


def _worker(db: JobsDb, **kw: object) -> Worker:
    opts: dict = {"lease_seconds": 5.0, "poll_seconds": 0.05, "retry_delay_seconds": 0.0}
    opts.update(kw)
    return Worker(db.sessions, HANDLERS, worker_id="test-worker", **opts)


def test_worker_runs_the_registered_handler_and_stores_its_result(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "test.add", {"values": [1, 2, 3, 4]})
    unknown = _enqueue(jobs_db, "no.such.kind", {})
    assert _worker(jobs_db).run_until_idle() == 1
    row = _job(jobs_db, job_id)
    assert (row.state, row.result, row.progress, row.attempts) == (DONE, {"sum": 10}, 1.0, 1)
    assert _job(jobs_db, unknown).state == QUEUED  # no handler here: left for another worker


def test_user_input_error_fails_once_with_the_message(jobs_db: JobsDb) -> None:
    job_id = _enqueue(
        jobs_db, "test.bad_input", {"file": "case_002.nii.gz", "shape": [4, 4]}, max_attempts=3
    )
    assert _worker(jobs_db).run_until_idle() == 1
    row = _job(jobs_db, job_id)
    assert row.state == FAILED and row.attempts == 1
    assert row.error == (
        "case_002.nii.gz: invalid value [4, 4] - a prediction must have the reference's shape"
    )


def test_internal_error_is_retried_then_succeeds(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "test.flaky", {"succeed_on": 3}, max_attempts=3)
    assert _worker(jobs_db).run_until_idle() == 3
    row = _job(jobs_db, job_id)
    assert (row.state, row.attempts, row.result, row.error) == (DONE, 3, {"attempt": 3}, None)


def test_internal_error_fails_after_max_attempts(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "test.flaky", {"succeed_on": 99}, max_attempts=2)
    assert _worker(jobs_db).run_until_idle() == 2
    row = _job(jobs_db, job_id)
    assert (row.state, row.attempts) == (FAILED, 2)
    assert row.error == "RuntimeError: transient failure on attempt 2"


def test_heartbeat_thread_holds_a_job_longer_than_its_lease(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "test.sleep", {"seconds": 1.2})
    w = _worker(jobs_db, lease_seconds=0.4)
    t = threading.Thread(target=w.run_until_idle)
    t.start()
    try:
        time.sleep(0.8)  # two leases' worth: only heartbeats keep the claim
        assert w.current_job_id == job_id
        assert claim(jobs_db.sessions, "intruder", ["test.sleep"], 30) is None
    finally:
        t.join()
    row = _job(jobs_db, job_id)
    assert (row.state, row.attempts, row.worker_id) == (DONE, 1, "test-worker")


def test_stop_lets_the_running_job_finish(jobs_db: JobsDb) -> None:
    first = _enqueue(jobs_db, "test.sleep", {"seconds": 0.5})
    second = _enqueue(jobs_db, "test.sleep", {"seconds": 0.5})
    w = _worker(jobs_db)
    t = threading.Thread(target=w.run)
    t.start()
    deadline = time.monotonic() + 10
    while w.current_job_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    w.stop()
    t.join(10)
    assert not t.is_alive()
    assert _job(jobs_db, first).state == DONE
    assert _job(jobs_db, second).state == QUEUED


def test_background_workers_run_jobs_and_stop(jobs_db: JobsDb, tmp_path: Path) -> None:
    ids = [_enqueue(jobs_db, "test.add", {"values": [i, i]}) for i in range(4)]
    settings = Settings(data_dir=tmp_path, database_url=jobs_db.url)
    stop = start_background_workers(settings, 2, handlers=HANDLERS, poll_seconds=0.05)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(_job(jobs_db, i).state == DONE for i in ids):
                break
            time.sleep(0.05)
    finally:
        stop()
    assert [_job(jobs_db, i).result for i in ids] == [{"sum": 2 * i} for i in range(4)]


def test_load_handlers_names_what_is_wrong() -> None:
    assert load_handlers(["jobtest_handlers:HANDLERS"]) == HANDLERS
    with pytest.raises(ConfigError, match="must be written 'module:attribute'"):
        load_handlers(["jobtest_handlers"])
    with pytest.raises(ConfigError, match="cannot import no_such_module_xyz"):
        load_handlers(["no_such_module_xyz:HANDLERS"])
    with pytest.raises(ConfigError, match="must be a dict"):
        load_handlers(["jobtest_handlers:FENCED_ACTION"])
    with pytest.raises(ConfigError, match="registered twice"):
        load_handlers(["jobtest_handlers:HANDLERS", "jobtest_handlers:HANDLERS"])
    with pytest.raises(ConfigError, match="no job handlers"):
        load_handlers([])


def test_worker_refuses_an_empty_or_broken_registry(jobs_db: JobsDb) -> None:
    with pytest.raises(ValueError, match="at least one handler"):
        Worker(jobs_db.sessions, {})
    with pytest.raises(TypeError, match="not callable"):
        Worker(jobs_db.sessions, {"k": "not a function"})  # type: ignore[dict-item]


def test_worker_that_lost_its_job_writes_nothing(jobs_db: JobsDb) -> None:
    job_id = _enqueue(jobs_db, "test.until_taken_over", {})
    w = _worker(jobs_db)
    t = threading.Thread(target=w.run_until_idle)
    t.start()
    deadline = time.monotonic() + 10
    while w.current_job_id is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # what a takeover after an expired lease does to the row
    with jobs_db.sessions() as s, s.begin():
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(attempts=Job.attempts + 1, worker_id="other-worker")
        )
    t.join(15)
    assert not t.is_alive()  # the handler's next ctx.progress raised LeaseLost
    row = _job(jobs_db, job_id)
    assert (row.state, row.worker_id, row.attempts, row.result) == (
        "running",
        "other-worker",
        2,
        {},
    )

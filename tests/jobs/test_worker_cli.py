"""`medarena worker` as a real process: SIGKILL during a job, takeover, one fenced write."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jobtest_handlers import FENCED_ACTION, JobsDb
from sqlalchemy import select

from medarena.db.platform_models import AuditEvent, Job
from medarena.jobs import DONE, RUNNING, enqueue, get_job

HERE = Path(__file__).parent
MEDARENA = Path(sys.executable).with_name("medarena")
LEASE = 2.0


def _wait_for(what: str, cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def start_worker(
    jobs_db: JobsDb, tmp_path: Path
) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start `medarena worker` subprocesses on the test database; kill leftovers after."""
    procs: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDARENA_")}
    env |= {
        "MEDARENA_DATABASE_URL": jobs_db.url,
        "MEDARENA_DATA_DIR": str(tmp_path / "worker-data"),
        "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    }

    def start(worker_id: str) -> subprocess.Popen[bytes]:
        cmd = [
            str(MEDARENA),
            "worker",
            "--handlers",
            "jobtest_handlers:HANDLERS",
            "--lease-seconds",
            str(LEASE),
            "--poll-seconds",
            "0.1",
            "--worker-id",
            worker_id,
        ]
        log = (tmp_path / f"{worker_id}.log").open("wb")
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_killed_worker_job_is_completed_once_by_another(
    jobs_db: JobsDb, tmp_path: Path, start_worker: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    marker = tmp_path / "starts.txt"
    with jobs_db.sessions() as s, s.begin():
        job_id = enqueue(
            s,
            "test.record_and_write",
            {"marker": str(marker), "first_attempt_seconds": 60, "seconds": 0.3},
        ).id

    def job() -> Job:
        with jobs_db.sessions() as s:
            return get_job(s, job_id)

    a = start_worker("worker-a")
    _wait_for("worker A to start the job", lambda: marker.exists() and marker.read_text() != "")
    row = job()
    assert (row.state, row.worker_id, row.attempts) == (RUNNING, "worker-a", 1)
    a.send_signal(signal.SIGKILL)
    assert a.wait(10) == -signal.SIGKILL
    lease_end = job().lease_expires_at  # A's last heartbeat is final now
    assert lease_end is not None
    lease_end = lease_end.replace(tzinfo=lease_end.tzinfo or dt.UTC)  # SQLite: naive UTC

    b = start_worker("worker-b")
    _wait_for("worker B to finish the job", lambda: job().state == DONE)
    b.send_signal(signal.SIGTERM)  # graceful stop
    assert b.wait(30) == 0

    row = job()
    assert (row.state, row.attempts, row.worker_id, row.result) == (
        DONE,
        2,
        "worker-b",
        {"attempt": 2},
    )
    starts = marker.read_text().split("\n")[:-1]
    assert [line.split()[1] for line in starts] == ["1", "2"]  # ran twice ...
    assert starts[0].split()[0] == str(a.pid) and starts[1].split()[0] == str(b.pid)
    # B took the job over only after A's lease had run out
    assert float(starts[1].split()[2]) >= lease_end.timestamp()
    with jobs_db.sessions() as s:
        writes = s.scalars(select(AuditEvent).where(AuditEvent.action == FENCED_ACTION)).all()
    assert [(w.target, w.detail["attempt"]) for w in writes] == [
        (f"job:{job_id}", 2)
    ]  # ... wrote once


def test_worker_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDARENA_")}
    env |= {
        "MEDARENA_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
        "MEDARENA_DATA_DIR": str(tmp_path / "d"),
        "PYTHONPATH": str(HERE),
    }
    res = subprocess.run(
        [str(MEDARENA), "worker", "--handlers", "jobtest_handlers:HANDLERS", "--until-idle"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "run `medarena db upgrade` first" in res.stderr

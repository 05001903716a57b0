"""The durable job queue: rows of the ``jobs`` table claimed under a lease.

A job moves ``queued -> running -> done | failed`` (or back to ``queued`` for a retry).
A claim increments ``attempts``; the pair (job id, attempt) is the **fencing token**:
every write made on behalf of a claim (heartbeat, progress, completion, failure and the
handler's own final writes through :func:`fenced`) is a guarded ``UPDATE ... WHERE id = ?
AND attempts = ? AND worker_id = ? AND state = 'running'``. A worker whose lease expired
and whose job was claimed again finds its guard matching no row and writes nothing, so
a result is stored exactly once.

Claiming is one ``UPDATE jobs SET state='running' ... WHERE id = (SELECT id ... LIMIT 1)``
statement. On PostgreSQL the sub-select carries ``FOR UPDATE SKIP LOCKED`` so concurrent
workers take different rows without waiting; on SQLite the statement takes the database
write lock first and re-checks the claimable condition, a compare-and-set inside one
short transaction.

Times are the workers' UTC clocks: keep the machines of a deployment NTP-synchronised,
and choose a lease several times longer than any plausible clock skew.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from medarena.db.models import utcnow
from medarena.db.platform_models import Job
from medarena.errors import InputError, MedarenaError, NotFoundError

logger = logging.getLogger(__name__)

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"

SessionFactory = sessionmaker[Session]

FailureHook = Callable[[Session, int, Mapping[str, Any]], None]
"""Called as ``hook(session, job_id, payload)`` inside the transaction failing a job."""

_FAILURE_HOOKS: dict[str, FailureHook] = {}


def on_final_failure(kind: str, hook: FailureHook) -> None:
    """Run ``hook`` whenever a job of ``kind`` fails for good (no retry left).

    The hook runs in the same transaction that marks the job failed, both when a worker
    reports the failure and when :func:`reap_expired` gives up on a job whose worker was
    lost, so the object the job worked on (e.g. a submission) never stays "running".
    Registering a kind again replaces its hook.
    """
    _check_kind(kind)
    _FAILURE_HOOKS[kind] = hook


def _run_failure_hook(s: Session, job_id: int, kind: str, payload: Mapping[str, Any]) -> None:
    hook = _FAILURE_HOOKS.get(kind)
    if hook is not None:
        hook(s, job_id, payload)


class LeaseLost(MedarenaError):
    """The claim no longer holds its job (lease expired and re-claimed, or job finished).

    Raised instead of writing: the worker must drop its work without storing anything.
    """


@dataclass(frozen=True)
class ClaimedJob:
    """A job held by one worker for one attempt; (id, attempt) is the fencing token."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    worker_id: str
    lease_seconds: float


def _check_kind(kind: str) -> None:
    if not kind or len(kind) > 64:
        raise InputError("a job kind is 1 to 64 characters", value=kind)


def enqueue(
    session: Session,
    kind: str,
    payload: Mapping[str, Any],
    *,
    dedupe_key: str | None = None,
    max_attempts: int = 3,
    run_after: dt.datetime | None = None,
) -> Job:
    """Add a job to the queue in the caller's transaction (the caller commits).

    Enqueueing inside the transaction that creates the work's subject (a submission row)
    makes both appear together or not at all. With ``dedupe_key``, a second enqueue of
    the same (kind, key) returns the existing job instead of adding one, also when two
    transactions race (``INSERT ... ON CONFLICT DO NOTHING``).
    """
    _check_kind(kind)
    if max_attempts < 1:
        raise InputError("max_attempts must be at least 1", value=max_attempts)
    if dedupe_key is not None and not 1 <= len(dedupe_key) <= 200:
        raise InputError("a dedupe key is 1 to 200 characters", value=dedupe_key)
    values: dict[str, Any] = {
        "kind": kind,
        "dedupe_key": dedupe_key,
        "payload": dict(payload),
        "state": QUEUED,
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_after": run_after or utcnow(),
        "progress": 0.0,
        "result": {},
        "created_at": utcnow(),
    }
    if dedupe_key is None:
        job = Job(**values)
        session.add(job)
        session.flush()
        return job
    dialect = session.get_bind().dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert_fn(Job)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["kind", "dedupe_key"])
    )
    session.execute(stmt)
    return session.scalars(select(Job).where(Job.kind == kind, Job.dedupe_key == dedupe_key)).one()


def get_job(session: Session, job_id: int) -> Job:
    """The job row with this id, or NotFoundError."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"no job with id {job_id}")
    return job


def _claimable(now: dt.datetime, kinds: Iterable[str] | None) -> ColumnElement[bool]:
    cond = and_(
        Job.attempts < Job.max_attempts,
        or_(
            and_(Job.state == QUEUED, Job.run_after <= now),
            and_(Job.state == RUNNING, Job.lease_expires_at < now),
        ),
    )
    if kinds is not None:
        cond = and_(cond, Job.kind.in_(list(kinds)))
    return cond


def reap_expired(session_factory: SessionFactory) -> int:
    """Fail running jobs whose lease expired on their last allowed attempt; return how many.

    Such a job's worker died (or hung) every time: claiming it again would exceed
    ``max_attempts``, so it is failed with a message saying so.
    """
    now = utcnow()
    with session_factory() as s, s.begin():
        rows = s.execute(
            update(Job)
            .where(
                Job.state == RUNNING,
                Job.lease_expires_at < now,
                Job.attempts >= Job.max_attempts,
            )
            .values(
                state=FAILED,
                error="the worker running this job stopped answering on every allowed "
                "attempt (lease expired); not retried",
                finished_at=now,
                lease_expires_at=None,
            )
            .returning(Job.id, Job.kind, Job.payload)
            .execution_options(synchronize_session=False)
        ).all()
        for row in rows:
            _run_failure_hook(s, row.id, row.kind, dict(row.payload or {}))
    n = len(rows)
    if n:
        logger.warning("failed %d job(s) whose worker was lost on the last attempt", n)
    return n


def claim(
    session_factory: SessionFactory,
    worker_id: str,
    kinds: Iterable[str] | None,
    lease_seconds: float,
) -> ClaimedJob | None:
    """Take the oldest runnable job of one of ``kinds`` for ``lease_seconds``, or None.

    Runnable: queued and due, or running with an expired lease (its worker is presumed
    dead). The returned claim's ``attempt`` is the job's new ``attempts`` value.
    """
    if lease_seconds <= 0:
        raise InputError("lease_seconds must be positive", value=lease_seconds)
    kinds = None if kinds is None else sorted(set(kinds))
    if kinds is not None and not kinds:
        return None
    reap_expired(session_factory)
    now = utcnow()
    cond = _claimable(now, kinds)
    # SKIP LOCKED applies on PostgreSQL; SQLAlchemy renders no locking clause on SQLite,
    # where the UPDATE holds the database write lock for the whole statement.
    pick = (
        select(Job.id)
        .where(cond)
        .order_by(Job.run_after, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(Job)
        .where(Job.id == pick, cond)
        .values(
            state=RUNNING,
            attempts=Job.attempts + 1,
            worker_id=worker_id,
            lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
            heartbeat_at=now,
            progress=0.0,
            error=None,
        )
        .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
        .execution_options(synchronize_session=False)
    )
    with session_factory() as s, s.begin():
        row = s.execute(stmt).first()
    if row is None:
        return None
    claimed = ClaimedJob(
        id=row.id,
        kind=row.kind,
        payload=dict(row.payload or {}),
        attempt=row.attempts,
        max_attempts=row.max_attempts,
        worker_id=worker_id,
        lease_seconds=lease_seconds,
    )
    logger.info(
        "worker %s claimed job %d (%s), attempt %d", worker_id, row.id, row.kind, row.attempts
    )
    return claimed


def _held(claimed: ClaimedJob, *states: str) -> ColumnElement[bool]:
    """The fencing guard: the row is still this claim's."""
    return and_(
        Job.id == claimed.id,
        Job.attempts == claimed.attempt,
        Job.worker_id == claimed.worker_id,
        Job.state.in_(states or (RUNNING,)),
    )


def _guarded_update(s: Session, claimed: ClaimedJob, values: dict[str, Any], *states: str) -> bool:
    res = s.execute(
        update(Job)
        .where(_held(claimed, *states))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(res, "rowcount", 0) or 0) == 1


def _lease_values(claimed: ClaimedJob, now: dt.datetime) -> dict[str, Any]:
    return {
        "heartbeat_at": now,
        "lease_expires_at": now + dt.timedelta(seconds=claimed.lease_seconds),
    }


def heartbeat(
    session_factory: SessionFactory, claimed: ClaimedJob, *, progress: float | None = None
) -> bool:
    """Extend the lease (and record progress); False when the claim no longer holds the job."""
    now = utcnow()
    values = _lease_values(claimed, now)
    if progress is not None:
        values["progress"] = min(1.0, max(0.0, float(progress)))
    with session_factory() as s, s.begin():
        return _guarded_update(s, claimed, values)


def _done_values(result: Mapping[str, Any] | None, now: dt.datetime) -> dict[str, Any]:
    values: dict[str, Any] = {
        "state": DONE,
        "finished_at": now,
        "progress": 1.0,
        "lease_expires_at": None,
        "error": None,
    }
    if result is not None:
        values["result"] = dict(result)
    return values


@contextmanager
def fenced(
    session_factory: SessionFactory,
    claimed: ClaimedJob,
    *,
    final: bool = True,
    result: Mapping[str, Any] | None = None,
) -> Iterator[Session]:
    """A transaction that commits only while ``claimed`` still holds its job.

    The guard is the transaction's first statement, an UPDATE of the job row: it takes
    the row lock (PostgreSQL) or the database write lock (SQLite) until commit, so no
    other worker can claim the job between the check and the commit. With ``final``
    (the default) the job is marked done in the same commit, so the handler's writes
    and the completion are one atomic step: a re-run after a crash finds the job done
    or finds nothing written. Raises :class:`LeaseLost` (and writes nothing) when the
    claim lost its job.
    """
    now = utcnow()
    with session_factory() as s, s.begin():
        if not _guarded_update(s, claimed, _lease_values(claimed, now)):
            raise LeaseLost(f"job {claimed.id} attempt {claimed.attempt} lost its lease")
        yield s
        s.flush()
        if final and not _guarded_update(s, claimed, _done_values(result, utcnow())):
            raise LeaseLost(f"job {claimed.id} attempt {claimed.attempt} lost its lease")


def complete(
    session_factory: SessionFactory,
    claimed: ClaimedJob,
    result: Mapping[str, Any] | None = None,
) -> None:
    """Mark the job done with ``result``; raise LeaseLost if the claim no longer holds it.

    A job already made done by this same claim (through ``fenced(final=True)``) only
    gets its result recorded.
    """
    with session_factory() as s, s.begin():
        if not _guarded_update(s, claimed, _done_values(result, utcnow()), RUNNING, DONE):
            raise LeaseLost(f"job {claimed.id} attempt {claimed.attempt} lost its lease")
    logger.info("job %d (%s) done on attempt %d", claimed.id, claimed.kind, claimed.attempt)


def fail(
    session_factory: SessionFactory,
    claimed: ClaimedJob,
    error: str,
    *,
    user_error: bool = False,
    retry_delay_seconds: float = 0.0,
) -> str:
    """Record a failure; return the job's new state.

    A user error (the participant's input is wrong) fails the job at once: retrying
    cannot help and the message is shown as is. Any other error re-queues the job after
    ``retry_delay_seconds`` until ``max_attempts`` claims were made. Raises LeaseLost if
    the claim no longer holds the job.
    """
    now = utcnow()
    retry = not user_error and claimed.attempt < claimed.max_attempts
    values: dict[str, Any] = {"error": error[:4000], "lease_expires_at": None}
    if retry:
        values |= {
            "state": QUEUED,
            "run_after": now + dt.timedelta(seconds=retry_delay_seconds),
        }
    else:
        values |= {"state": FAILED, "finished_at": now}
    with session_factory() as s, s.begin():
        if not _guarded_update(s, claimed, values):
            raise LeaseLost(f"job {claimed.id} attempt {claimed.attempt} lost its lease")
        if not retry:
            _run_failure_hook(s, claimed.id, claimed.kind, claimed.payload)
    state = values["state"]
    logger.info(
        "job %d (%s) attempt %d failed (%s); now %s",
        claimed.id,
        claimed.kind,
        claimed.attempt,
        "user input" if user_error else "internal",
        state,
    )
    return str(state)

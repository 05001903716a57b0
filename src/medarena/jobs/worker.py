"""Workers: claim jobs, run their handler from an explicit registry, heartbeat, stop gracefully.

A handler is a plain function ``handler(ctx: JobContext) -> dict | None`` registered under
its job kind in a dict given to the :class:`Worker`; nothing is discovered by scanning.
Its returned dict becomes the job's ``result``. A handler raising
:class:`~medarena.errors.InputError` (usually its subclass ``UserInputError``) fails the
job without retry and its message is stored for the user; any other exception is retried
until the job's ``max_attempts``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from medarena.errors import InputError
from medarena.jobs import queue
from medarena.jobs.queue import ClaimedJob, LeaseLost, SessionFactory

if TYPE_CHECKING:
    from medarena.config import Settings

logger = logging.getLogger(__name__)

Handler = Callable[["JobContext"], "Mapping[str, Any] | None"]

# Progress is written at most this often, so a tight loop calling ctx.progress does not
# turn into a stream of database writes.
_PROGRESS_MIN_INTERVAL = 0.5


def default_worker_id() -> str:
    """A worker id naming the machine and process, unique per Worker instance."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class JobContext:
    """What a handler gets: the claimed job, the database, the settings, progress and fencing."""

    job: ClaimedJob
    session_factory: SessionFactory
    settings: Settings | None = None
    _lost: threading.Event = field(default_factory=threading.Event)
    _last_progress_write: float = 0.0

    @property
    def job_id(self) -> int:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def lease_lost(self) -> bool:
        """True once a heartbeat found the job taken over; the handler should stop early."""
        return self._lost.is_set()

    def progress(self, fraction: float) -> None:
        """Report progress in [0, 1]; raises LeaseLost if another worker took the job over."""
        if not 0.0 <= fraction <= 1.0 or fraction != fraction:
            raise ValueError(f"progress must be within [0, 1], got {fraction!r}")
        if self._lost.is_set():
            raise LeaseLost(f"job {self.job.id} attempt {self.job.attempt} lost its lease")
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress_write < _PROGRESS_MIN_INTERVAL:
            return
        self._last_progress_write = now
        if not queue.heartbeat(self.session_factory, self.job, progress=fraction):
            self._lost.set()
            raise LeaseLost(f"job {self.job.id} attempt {self.job.attempt} lost its lease")

    def fenced(
        self, *, final: bool = True, result: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[Session]:
        """A session whose commit happens only if this attempt still holds the job.

        Make the job's lasting writes (a submission's scores) inside it. With ``final``
        the job is marked done in the same commit. See :func:`medarena.jobs.queue.fenced`.
        """
        return queue.fenced(self.session_factory, self.job, final=final, result=result)


class _Heartbeat:
    """A thread extending a claim's lease every ``interval`` seconds until stopped."""

    def __init__(self, ctx: JobContext, interval: float) -> None:
        self._ctx = ctx
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-job-{ctx.job.id}", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            try:
                held = queue.heartbeat(self._ctx.session_factory, self._ctx.job)
            except Exception:
                # A database hiccup is not a lost lease: try again at the next beat.
                logger.warning("heartbeat of job %d failed", self._ctx.job.id, exc_info=True)
                continue
            if not held:
                logger.warning(
                    "job %d attempt %d was taken over by another worker",
                    self._ctx.job.id,
                    self._ctx.job.attempt,
                )
                self._ctx._lost.set()
                return


class Worker:
    """Runs jobs of the kinds in ``handlers`` until stopped.

    ``lease_seconds`` is how long a claim survives without a heartbeat: after a crash the
    job is claimed again once it expires. Heartbeats come every third of it.
    ``retry_delay_seconds`` is the pause before an internally failed job is retried,
    doubled with every attempt.
    """

    def __init__(
        self,
        session_factory: SessionFactory,
        handlers: Mapping[str, Handler],
        *,
        settings: Settings | None = None,
        worker_id: str | None = None,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        retry_delay_seconds: float = 10.0,
    ) -> None:
        if not handlers:
            raise ValueError("a worker needs at least one handler")
        for kind, fn in handlers.items():
            if not callable(fn):
                raise TypeError(f"handler for job kind {kind!r} is not callable: {fn!r}")
        if lease_seconds <= 0 or poll_seconds <= 0 or retry_delay_seconds < 0:
            raise ValueError("lease_seconds and poll_seconds must be positive")
        self.session_factory = session_factory
        self.handlers = dict(handlers)
        self.settings = settings
        self.worker_id = worker_id or default_worker_id()
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.retry_delay_seconds = retry_delay_seconds
        self._stop = threading.Event()
        self.current_job_id: int | None = None

    def stop(self) -> None:
        """Ask the worker to stop after the job it is running (graceful stop)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_once(self) -> bool:
        """Claim and run one job; False when none was runnable."""
        claimed = queue.claim(
            self.session_factory, self.worker_id, self.handlers.keys(), self.lease_seconds
        )
        if claimed is None:
            return False
        self._run(claimed)
        return True

    def run_until_idle(self, max_jobs: int | None = None) -> int:
        """Run jobs until none is runnable (or ``max_jobs`` ran, or stop()); return the count."""
        n = 0
        while not self._stop.is_set() and (max_jobs is None or n < max_jobs):
            if not self.run_once():
                break
            n += 1
        return n

    def run(self) -> None:
        """Run jobs, polling when idle, until :meth:`stop` is called."""
        logger.info("worker %s started for kinds %s", self.worker_id, sorted(self.handlers))
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:
                # The database may be briefly unreachable; a worker outlives that.
                logger.exception("worker %s could not claim a job", self.worker_id)
                ran = False
            if not ran:
                self._stop.wait(self.poll_seconds)
        logger.info("worker %s stopped", self.worker_id)

    def _run(self, claimed: ClaimedJob) -> None:
        ctx = JobContext(claimed, self.session_factory, self.settings)
        handler = self.handlers[claimed.kind]
        self.current_job_id = claimed.id
        retry_delay = self.retry_delay_seconds * 2 ** (claimed.attempt - 1)
        try:
            with _Heartbeat(ctx, max(self.lease_seconds / 3.0, 0.05)):
                try:
                    result = handler(ctx)
                    queue.complete(self.session_factory, claimed, dict(result or {}))
                except LeaseLost as exc:
                    logger.warning("job %d: %s; its result was dropped", claimed.id, exc)
                except InputError as exc:
                    queue.fail(self.session_factory, claimed, str(exc), user_error=True)
                except Exception as exc:
                    logger.exception("job %d (%s) failed", claimed.id, claimed.kind)
                    queue.fail(
                        self.session_factory,
                        claimed,
                        f"{type(exc).__name__}: {exc}",
                        retry_delay_seconds=retry_delay,
                    )
        except LeaseLost as exc:
            # fail() found the job taken over: the other worker's outcome stands.
            logger.warning("job %d: %s; its failure was not recorded", claimed.id, exc)
        finally:
            self.current_job_id = None


def iter_threads(workers: list[Worker]) -> Iterator[threading.Thread]:
    """Start one daemon thread per worker running :meth:`Worker.run`; yield the threads."""
    for w in workers:
        t = threading.Thread(target=w.run, name=f"medarena-worker-{w.worker_id}", daemon=True)
        t.start()
        yield t

"""Workers inside another process: ``medarena serve`` runs jobs without a separate worker."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from medarena.db.engine import create_engine_for, session_factory
from medarena.jobs.registry import PLATFORM_HANDLER_SOURCES, load_handlers
from medarena.jobs.worker import Handler, Worker, iter_threads

if TYPE_CHECKING:
    from medarena.config import Settings

logger = logging.getLogger(__name__)


def start_background_workers(
    settings: Settings,
    n: int,
    *,
    handlers: Mapping[str, Handler] | None = None,
    lease_seconds: float = 60.0,
    poll_seconds: float = 1.0,
    stop_timeout: float = 30.0,
) -> Callable[[], None]:
    """Start ``n`` worker threads on the configured database; return ``stop()``.

    ``handlers`` defaults to the platform's registry (:data:`PLATFORM_HANDLER_SOURCES`).
    The returned function asks every worker to finish its current job, waits up to
    ``stop_timeout`` seconds for them, and closes the database engine. A job still
    running after the timeout is left to its lease: another worker takes it over.
    Threads suit this because a job's heavy work fans out to processes (``map_cases``).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    registry = dict(handlers) if handlers is not None else load_handlers(PLATFORM_HANDLER_SOURCES)
    engine = create_engine_for(settings.resolved_database_url)
    factory = session_factory(engine)
    workers = [
        Worker(
            factory,
            registry,
            settings=settings,
            lease_seconds=lease_seconds,
            poll_seconds=poll_seconds,
        )
        for _ in range(n)
    ]
    threads = list(iter_threads(workers))
    logger.info("started %d background worker(s) for kinds %s", n, sorted(registry))
    stopped = threading.Event()

    def stop() -> None:
        if stopped.is_set():
            return
        stopped.set()
        for w in workers:
            w.stop()
        deadline = time.monotonic() + stop_timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            logger.warning("workers still running a job at shutdown: %s", ", ".join(alive))
        else:
            engine.dispose()

    return stop

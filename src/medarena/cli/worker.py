"""`medarena worker`: run background jobs against the configured database and store."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

import typer

from medarena.cli.common import console, handle_errors, settings_or_exit

if TYPE_CHECKING:
    from medarena.jobs.worker import Worker


def register(app: typer.Typer) -> None:
    @app.command("worker")
    @handle_errors
    def worker_cmd(
        concurrency: int = typer.Option(
            1, "--concurrency", "-c", min=1, help="Jobs run at the same time (threads)."
        ),
        lease_seconds: float = typer.Option(
            60.0,
            min=0.1,
            help="How long a claimed job stays reserved without a heartbeat; after a crash "
            "another worker takes the job over once it expires.",
        ),
        poll_seconds: float = typer.Option(
            1.0, min=0.01, help="Pause between looks at the queue when it is empty."
        ),
        retry_delay_seconds: float = typer.Option(
            10.0, min=0.0, help="Pause before retrying a failed job, doubled per attempt."
        ),
        handlers: list[str] = typer.Option(
            [],
            "--handlers",
            help="A handler registry 'module:attribute' (a dict of job kind -> function); "
            "repeatable. Default: the platform's (medarena.challenges.scoring:HANDLERS, "
            "medarena.lab.runs:HANDLERS).",
        ),
        until_idle: bool = typer.Option(
            False, "--until-idle", help="Exit once no job is runnable instead of waiting."
        ),
        worker_id: str | None = typer.Option(
            None, help="Name shown on claimed jobs (default: host:pid:random)."
        ),
    ) -> None:
        """Run jobs (scoring, explanations of model submissions, lab training runs) from the
        database queue until interrupted.

        SIGINT or SIGTERM stops gracefully: running jobs finish first. Start as many
        workers as you like, on this machine or others sharing MEDARENA_DATABASE_URL
        and the object store.
        """
        from sqlalchemy import inspect

        from medarena.db.engine import create_engine_for, session_factory
        from medarena.errors import ConfigError
        from medarena.jobs.registry import PLATFORM_HANDLER_SOURCES, load_handlers
        from medarena.jobs.worker import Worker, default_worker_id
        from medarena.logging import configure

        with settings_or_exit() as settings:
            configure(settings.log_level)
            registry = load_handlers(handlers or PLATFORM_HANDLER_SOURCES)
            engine = create_engine_for(settings.resolved_database_url)
            try:
                if not inspect(engine).has_table("jobs"):
                    raise ConfigError(
                        "the database has no jobs table: run `medarena db upgrade` first"
                    )
                factory = session_factory(engine)
                base_id = worker_id or default_worker_id()
                workers = [
                    Worker(
                        factory,
                        registry,
                        settings=settings,
                        worker_id=base_id if concurrency == 1 else f"{base_id}/{i}",
                        lease_seconds=lease_seconds,
                        poll_seconds=poll_seconds,
                        retry_delay_seconds=retry_delay_seconds,
                    )
                    for i in range(concurrency)
                ]
                console.print(
                    f"worker {base_id}: {concurrency} thread(s) for job kinds "
                    f"{', '.join(sorted(registry))}"
                )
                if until_idle:
                    n = sum(w.run_until_idle() for w in workers)
                    console.print(f"{n} job(s) run; queue idle")
                    return
                _run_until_signal(workers)
            finally:
                engine.dispose()


def _run_until_signal(workers: list[Worker]) -> None:
    """Run the workers' threads; the first SIGINT/SIGTERM stops them after their job."""
    from medarena.jobs.worker import iter_threads

    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop_requested.is_set():
            raise KeyboardInterrupt  # a second signal: stop now, leases will expire
        stop_requested.set()
        console.print("stopping after the running job(s) (signal again to abort)")
        for w in workers:
            w.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        threads = list(iter_threads(workers))
        for t in threads:
            # join with a timeout so the main thread keeps receiving signals
            while t.is_alive():
                t.join(0.5)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

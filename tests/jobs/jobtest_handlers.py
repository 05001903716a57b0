"""Job handlers, fan-out functions and the test database type of the job tests.

Importable by name (``jobtest_handlers``): the worker subprocess gets this folder on
PYTHONPATH and names ``jobtest_handlers:HANDLERS`` with ``--handlers``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from medarena.db.platform_models import AuditEvent
from medarena.errors import UserInputError
from medarena.jobs import JobContext

FENCED_ACTION = "test.fenced_write"


@dataclass
class JobsDb:
    """A migrated test database: its URL, engine and session factory."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]


def record_and_write(ctx: JobContext) -> dict[str, Any]:
    """Note the start (pid, attempt, wall time) in a file, work, then make one fenced write."""
    p = ctx.payload
    with Path(p["marker"]).open("a") as fh:
        fh.write(f"{os.getpid()} {ctx.attempt} {time.time()}\n")
    seconds = float(p["first_attempt_seconds"] if ctx.attempt == 1 else p["seconds"])
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        ctx.progress(min(elapsed / seconds, 0.99))
        time.sleep(0.05)
    with ctx.fenced() as s:
        s.add(
            AuditEvent(
                action=FENCED_ACTION,
                target=f"job:{ctx.job_id}",
                detail={"attempt": ctx.attempt, "pid": os.getpid()},
            )
        )
    return {"attempt": ctx.attempt}


def add_values(ctx: JobContext) -> dict[str, Any]:
    """Return the sum of the payload's values, reporting progress per value."""
    values = ctx.payload["values"]
    total = 0
    for i, v in enumerate(values, 1):
        total += v
        ctx.progress(i / len(values))
    return {"sum": total}


def bad_input(ctx: JobContext) -> dict[str, Any]:
    """Fail on the user's input, as a scoring handler does for a wrong prediction file."""
    raise UserInputError(
        "a prediction must have the reference's shape",
        path=ctx.payload["file"],
        value=ctx.payload["shape"],
    )


def flaky(ctx: JobContext) -> dict[str, Any]:
    """Raise an internal error until the payload's ``succeed_on`` attempt."""
    if ctx.attempt < ctx.payload["succeed_on"]:
        raise RuntimeError(f"transient failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


def sleep_then_return(ctx: JobContext) -> dict[str, Any]:
    """Sleep ``seconds`` without reporting progress (the heartbeat thread keeps the lease)."""
    time.sleep(float(ctx.payload["seconds"]))
    return {"slept": ctx.payload["seconds"], "attempt": ctx.attempt}


def report_until_taken_over(ctx: JobContext) -> dict[str, Any]:
    """Report progress until the job is taken over (LeaseLost ends it), at most 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ctx.progress(0.5)
        time.sleep(0.6)
    return {"finished": True}


HANDLERS = {
    "test.until_taken_over": report_until_taken_over,
    "test.record_and_write": record_and_write,
    "test.add": add_values,
    "test.bad_input": bad_input,
    "test.flaky": flaky,
    "test.sleep": sleep_then_return,
}


def square_with_pid(x: int) -> tuple[int, int]:
    """x squared and the id of the process that computed it."""
    return x * x, os.getpid()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("case 3 cannot be scored")
    return x

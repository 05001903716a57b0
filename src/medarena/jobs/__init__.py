"""Durable background jobs: a queue on the ``jobs`` table, workers, and case fan-out.

See docs/jobs.md for the job model and the fencing rule.
"""

from medarena.jobs.queue import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    ClaimedJob,
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
from medarena.jobs.worker import Handler, JobContext, Worker

__all__ = [
    "DONE",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "ClaimedJob",
    "Handler",
    "JobContext",
    "LeaseLost",
    "Worker",
    "claim",
    "complete",
    "enqueue",
    "fail",
    "fenced",
    "get_job",
    "heartbeat",
    "reap_expired",
]

"""A scoring job that fails for good never leaves its submission "running"."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import update
from test_scoring import _setup, _submit, _zip

from medarena.challenges.scoring import HANDLERS, fail_unfinished_submission
from medarena.challenges.spec import ChallengeSpec
from medarena.challenges.submissions import INTERNAL_FAILURE, SCORE_JOB_KIND
from medarena.datasets.catalogue import Catalogue
from medarena.db.platform_models import Job, Submission
from medarena.jobs import FAILED, JobContext, Worker, claim, fenced, reap_expired


def _job_of(cat: Catalogue, sid: int) -> Job:
    with cat.sessions() as s:
        jobs = [j for j in s.query(Job).all() if j.payload.get("submission_id") == sid]
        assert len(jobs) == 1
        s.expunge(jobs[0])
        return jobs[0]


def test_reaped_job_fails_its_running_submission(catalogue: Catalogue, spec: ChallengeSpec) -> None:
    uid, labels = _setup(catalogue, spec)
    sid = _submit(catalogue, uid, _zip({f"{k}.nii.gz": v for k, v in labels.items()}))
    max_attempts = _job_of(catalogue, sid).max_attempts
    for attempt in range(1, max_attempts + 1):
        c = claim(catalogue.sessions, f"w{attempt}", [SCORE_JOB_KIND], 0.05)
        assert c is not None and c.attempt == attempt
        # the handler's first step (fenced), then the worker is killed: nothing more
        with fenced(catalogue.sessions, c, final=False) as s:
            s.execute(update(Submission).where(Submission.id == sid).values(status="running"))
        time.sleep(0.1)
    with catalogue.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None and sub.status == "running"
    assert reap_expired(catalogue.sessions) == 1
    assert claim(catalogue.sessions, "w-late", [SCORE_JOB_KIND], 30) is None
    job = _job_of(catalogue, sid)
    assert job.state == FAILED and "lease expired" in (job.error or "")
    with catalogue.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None
        assert (sub.status, sub.error, sub.counts_toward_limit) == (
            "failed",
            INTERNAL_FAILURE,
            False,
        )


def _crash_before_scoring(ctx: JobContext) -> dict[str, Any]:
    """A handler that dies the way an unexpected bug would, before touching the row."""
    raise RuntimeError(f"disk full under /srv/secret-path (job {ctx.job.id})")


def test_last_failed_attempt_fails_a_queued_submission(
    catalogue: Catalogue, spec: ChallengeSpec
) -> None:
    uid, labels = _setup(catalogue, spec)
    sid = _submit(catalogue, uid, _zip({f"{k}.nii.gz": v for k, v in labels.items()}))
    worker = Worker(
        catalogue.sessions,
        {SCORE_JOB_KIND: _crash_before_scoring},
        settings=catalogue.settings,
        lease_seconds=30,
        retry_delay_seconds=0,
    )
    ran = worker.run_until_idle()
    job = _job_of(catalogue, sid)
    assert ran == job.max_attempts and job.state == FAILED
    with catalogue.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None and sub.status == "failed"
        # neutral: the internal reason (a server path) is not shown to the team
        assert sub.error == INTERNAL_FAILURE and "secret-path" not in (sub.error or "")


def test_a_finished_submission_is_not_overwritten(
    catalogue: Catalogue, spec: ChallengeSpec
) -> None:
    uid, labels = _setup(catalogue, spec)
    sid = _submit(catalogue, uid, _zip({f"{k}.nii.gz": v for k, v in labels.items()}))
    assert Worker(catalogue.sessions, HANDLERS, settings=catalogue.settings).run_until_idle() == 1
    # the hook only acts on queued/running rows: a scored one stays scored
    with catalogue.sessions() as s, s.begin():
        fail_unfinished_submission(s, 0, {"submission_id": sid})
    with catalogue.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None and sub.status == "scored" and sub.error is None

"""Submissions: receive a predictions archive, check it, take a slot, queue its scoring.

:func:`submit` is the one entry point the web routes, the API and the CLI share:

1. quick checks before reading the upload: the phase is open, the user has accepted the
   rules and is in a team, the team has a scored submission in the required earlier phase,
   and its limits are not used up;
2. the upload is streamed to a temporary file in the data dir, at most the phase's
   ``max_upload_mb`` (never held in memory);
3. the archive is extracted safely (:mod:`medarena.challenges.archives`) and checked
   against the scored subset: case ids (unknown, duplicate, missing), file types, the shape
   of each prediction against its input image, label values for segmentation tasks and
   finite, non-negative doses for dose tasks; for detection, the candidate columns
   (x, y, z, probability) and finite values on every row;
   any problem refuses the upload at once with the whole list;
4. the archive enters the object store, and in **one locked transaction** the phase is
   checked open again, the team's submissions are counted, the Submission row is inserted
   and its scoring job enqueued. The lock is a row lock on the team
   (``SELECT ... FOR UPDATE`` on PostgreSQL) or the database write lock taken up front
   (``BEGIN IMMEDIATE`` on SQLite), so two uploads racing for the last slot are
   serialised: the second one counts the first and is refused.

Limits count per team, phase and track: ``submissions_per_day`` over the last 24 hours and
``submissions_total`` over the phase. A failed run uses up a slot only when the phase says
``failed_runs_count``; a refused upload never does.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import nibabel as nib
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from medarena.challenges.archives import ArchiveLimits, ExtractedFile, extract_archive
from medarena.challenges.data import subset_cases
from medarena.challenges.models import check_model_archive, is_model_archive
from medarena.challenges.service import (
    PermissionDenied,
    find_track_phase,
    get_challenge,
    has_accepted_rules,
    load_spec,
)
from medarena.challenges.spec import ChallengeSpec, Phase, Track
from medarena.challenges.teams import team_of
from medarena.db.models import Case
from medarena.db.platform_models import Challenge, Job, Submission, Team, User
from medarena.errors import InputError, NotFoundError
from medarena.evaluation import tasks as tasks_mod
from medarena.evaluation.runner import task_config
from medarena.jobs import enqueue
from medarena.storage import LocalObjectStore

logger = logging.getLogger(__name__)

SCORE_JOB_KIND = "score_submission"
INTERNAL_FAILURE = "internal error while scoring; the organizers can see the details in the logs"
_CHUNK = 1 << 20
_MAX_IDS_LISTED = 10


class SubmissionRefused(InputError):
    """An upload that was not accepted; ``problems`` lists every reason (nothing was stored)."""

    def __init__(self, filename: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"submission refused ({len(self.problems)} problem(s)): " + "; ".join(self.problems),
            path=filename,
        )


class LimitReached(InputError):
    """The team has used up its submissions for the day or the phase."""


def _utc(t: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they were stored in UTC.
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _ids(ids: Iterable[str]) -> str:
    ids = sorted(ids)
    shown = ", ".join(ids[:_MAX_IDS_LISTED])
    return shown + (f" and {len(ids) - _MAX_IDS_LISTED} more" if len(ids) > _MAX_IDS_LISTED else "")


# ---------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Usage:
    """How many submissions a team has made and may still make in a phase and track."""

    last_24h: int
    total: int
    per_day_limit: int | None
    total_limit: int | None

    @property
    def remaining(self) -> int | None:
        """Submissions left now (None: unlimited)."""
        left = [
            lim - used
            for lim, used in ((self.per_day_limit, self.last_24h), (self.total_limit, self.total))
            if lim is not None
        ]
        return max(0, min(left)) if left else None


def usage(
    session: Session,
    challenge_id: int,
    team_id: int,
    phase: Phase,
    track_slug: str,
    now: dt.datetime | None = None,
) -> Usage:
    """Counted submissions of a team in (phase, track): last 24 h and whole phase."""
    now = now or dt.datetime.now(dt.UTC)
    base = select(func.count(Submission.id)).where(
        Submission.challenge_id == challenge_id,
        Submission.team_id == team_id,
        Submission.phase_slug == phase.slug,
        Submission.track_slug == track_slug,
        Submission.counts_toward_limit.is_(True),
        Submission.status != "cancelled",
    )
    total = int(session.scalar(base) or 0)
    day = int(session.scalar(base.where(Submission.created_at > now - dt.timedelta(hours=24))) or 0)
    return Usage(day, total, phase.submissions_per_day, phase.submissions_total)


def _limit_problem(u: Usage) -> str | None:
    if u.total_limit is not None and u.total >= u.total_limit:
        return f"your team has used all {u.total_limit} submissions of this phase"
    if u.per_day_limit is not None and u.last_24h >= u.per_day_limit:
        return (
            f"your team has used its {u.per_day_limit} submissions of the last 24 hours; "
            "try again later"
        )
    return None


# ---------------------------------------------------------------------------- pre-checks


@dataclass(frozen=True)
class Target:
    """Where a submission goes: the challenge, its spec, track, phase and the user's team."""

    challenge: Challenge
    spec: ChallengeSpec
    track: Track
    phase: Phase
    team: Team


def check_can_submit(
    session: Session,
    challenge_slug: str,
    track_slug: str,
    phase_slug: str,
    user: User,
    now: dt.datetime | None = None,
) -> Target:
    """Everything that can refuse a submission before its bytes are read."""
    now = now or dt.datetime.now(dt.UTC)
    challenge = get_challenge(session, challenge_slug)
    spec = load_spec(challenge)
    track, phase = find_track_phase(spec, track_slug, phase_slug)
    if not user.is_active:
        raise PermissionDenied("this account is deactivated")
    if not has_accepted_rules(session, challenge, user.id):
        raise PermissionDenied(f"accept the rules of {challenge.slug!r} first (join the challenge)")
    team = team_of(session, challenge.id, user.id)
    if team is None:
        raise PermissionDenied("create or join a team before submitting")
    _check_open(phase, now)
    if phase.requires_phase is not None:
        earlier = session.scalar(
            select(func.count(Submission.id)).where(
                Submission.challenge_id == challenge.id,
                Submission.team_id == team.id,
                Submission.phase_slug == phase.requires_phase,
                Submission.track_slug == track.slug,
                Submission.status == "scored",
            )
        )
        if not earlier:
            raise PermissionDenied(
                f"phase {phase.slug!r} needs a scored submission of your team to track "
                f"{track.slug!r} in phase {phase.requires_phase!r} first"
            )
    problem = _limit_problem(usage(session, challenge.id, team.id, phase, track.slug, now))
    if problem:
        raise LimitReached(problem)
    return Target(challenge, spec, track, phase, team)


def _check_open(phase: Phase, now: dt.datetime) -> None:
    state = phase.state(now)
    if state == "upcoming":
        raise InputError(
            f"phase {phase.slug!r} opens at {phase.opens.isoformat()}; submissions are not "
            "accepted yet"
        )
    if state == "closed":
        raise InputError(
            f"phase {phase.slug!r} closed at {phase.closes.isoformat()}; submissions are no "
            "longer accepted"
        )


# ---------------------------------------------------------------------------- upload


def receive_upload(stream: BinaryIO, dest: Path, max_bytes: int, filename: str) -> int:
    """Copy ``stream`` to ``dest`` chunk by chunk, refusing more than ``max_bytes``."""
    written = 0
    with open(dest, "wb") as out:
        while chunk := stream.read(_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise InputError(
                    f"upload is larger than this phase's limit of {max_bytes / 1024**2:g} MB",
                    path=filename,
                    hint="submit compressed NIfTI (.nii.gz) or ask the organizers",
                )
            out.write(chunk)
    if written == 0:
        raise InputError("upload is empty (0 bytes)", path=filename)
    return written


# ---------------------------------------------------------------------------- validation


def _allowed_labels(task: str, config: Any) -> frozenset[int] | None:
    if task == "segmentation":
        return frozenset(config.allowed())
    if task == "brats":
        return frozenset({0, 1, 2, 4} if config.labels == "2021" else {0, 1, 2, 3})
    if task == "autopet":
        return frozenset({0, 1})
    return None


def _shape_key(shape: Sequence[int]) -> tuple[int, ...]:
    # (i, j, 1) and (i, j) are the same 2D grid
    s = [int(n) for n in shape]
    while len(s) > 2 and s[-1] == 1:
        s.pop()
    return tuple(s)


def _dose_problem(img: Any) -> str | None:
    """Why a predicted dose volume is unusable (None: finite and non-negative Gy)."""
    try:
        dose = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for truncated data
        return f"voxel data cannot be read ({type(exc).__name__})"
    if dose.dtype.kind not in "fiu":
        return f"dose must be numbers, found data type {dose.dtype}"
    if dose.dtype.kind == "f" and not np.all(np.isfinite(dose)):
        return "dose holds NaN or infinite values"
    if dose.size and float(dose.min()) < 0:
        return f"dose holds negative values (minimum {float(dose.min()):g}); dose is in Gy, >= 0"
    return None


def validate_image_predictions(
    files: Sequence[ExtractedFile],
    cases: dict[str, Case],
    task: str,
    config: Any,
) -> list[str]:
    """Problems of NIfTI predictions against the expected cases (empty list: all good)."""
    problems: list[str] = []
    by_case: dict[str, ExtractedFile] = {}
    allowed = _allowed_labels(task, config)
    unknown: list[str] = []
    for f in files:
        cid = tasks_mod.case_id_of(f.path)
        if cid is None:
            problems.append(f"{f.member}: not a NIfTI file (.nii or .nii.gz) named <case id>")
            continue
        if cid in by_case:
            problems.append(f"{f.member}: second file for case {cid!r} ({by_case[cid].member})")
            continue
        by_case[cid] = f
        if cid not in cases:
            unknown.append(cid)
    if unknown:
        problems.append(f"unknown case ids (not in this phase's cases): {_ids(unknown)}")
    missing = set(cases) - set(by_case)
    if missing:
        problems.append(f"no prediction for {len(missing)} case(s): {_ids(missing)}")
    for cid, f in sorted(by_case.items()):
        if cid not in cases:
            continue
        try:
            img: Any = nib.load(str(f.path))  # a Nifti1/2Image: shape and dataobj
        except Exception as exc:  # nibabel raises many types for a broken header
            problems.append(f"{f.member}: not a readable NIfTI file ({type(exc).__name__})")
            continue
        shape = tuple(int(n) for n in img.shape)
        expected = cases[cid].shape
        if expected and _shape_key(shape) != _shape_key(expected):
            problems.append(
                f"{f.member}: shape {list(shape)} differs from the input image's "
                f"shape {list(expected)}"
            )
            continue
        if task == "dose":
            problem = _dose_problem(img)
            if problem:
                problems.append(f"{f.member}: {problem}")
            continue
        if allowed is not None:
            try:
                values = np.unique(np.asanyarray(img.dataobj))
            except Exception as exc:
                problems.append(f"{f.member}: voxel data cannot be read ({type(exc).__name__})")
                continue
            if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                problems.append(f"{f.member}: label map holds NaN or infinite values")
                continue
            if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
                problems.append(f"{f.member}: label map holds non-integer values")
                continue
            bad = sorted(int(v) for v in values if int(v) not in allowed)
            if bad:
                problems.append(
                    f"{f.member}: label values {bad[:10]} are not allowed; this track allows "
                    f"{sorted(allowed)}"
                )
    return problems


def validate_table_predictions(
    files: Sequence[ExtractedFile], cases: dict[str, Case], task: str, config: Any
) -> list[str]:
    """Problems of a CSV prediction (one file with a ``case_id`` column) against the cases."""
    csvs = [f for f in files if f.path.name.lower().endswith(".csv")]
    others = [f.member for f in files if f not in csvs]
    problems: list[str] = []
    if others:
        problems.append(f"only one CSV file is expected; also found: {', '.join(others[:10])}")
    if len(csvs) != 1:
        problems.append(f"expected exactly one CSV file, found {len(csvs)}")
        return problems
    f = csvs[0]
    try:
        with open(f.path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            if "case_id" not in cols:
                return [*problems, f"{f.member}: needs a 'case_id' column (found {cols})"]
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        return [*problems, f"{f.member}: not a readable UTF-8 CSV ({exc})"]
    counts: dict[str, int] = {}
    for row in rows:
        cid = (row.get("case_id") or "").strip()
        counts[cid] = counts.get(cid, 0) + 1
    if task != "detection":  # detection lists one row per candidate
        dup = [c for c, n in counts.items() if n > 1]
        if dup:
            problems.append(f"{f.member}: case ids on more than one row: {_ids(dup)}")
    unknown = [c for c in counts if c not in cases]
    if unknown:
        problems.append(f"{f.member}: unknown case ids: {_ids(unknown)}")
    missing = set(cases) - set(counts)
    if missing:
        problems.append(f"{f.member}: no prediction for {len(missing)} case(s): {_ids(missing)}")
    if task == "regression":
        col = config.value_column
        if col not in cols:
            problems.append(f"{f.member}: needs a {col!r} column")
        else:
            bad = []
            for row in rows:
                try:
                    ok = math.isfinite(float(row.get(col) or "nan"))
                except ValueError:
                    ok = False
                if not ok:
                    bad.append((row.get("case_id") or "").strip())
            if bad:
                problems.append(f"{f.member}: {col!r} is not a finite number for: {_ids(bad)}")
    if task == "detection":
        problems.extend(_candidate_problems(f.member, cols, rows))
    return problems


_CANDIDATE_COLUMNS = ("x", "y", "z", "probability")


def _candidate_problems(member: str, cols: Sequence[str], rows: list[dict[str, Any]]) -> list[str]:
    """Problems of a detection candidates CSV: the columns, finite numbers on every row.

    A row with empty x, y, z declares a scan without candidates (the engine's convention).
    """
    absent = [c for c in _CANDIDATE_COLUMNS if c not in cols]
    if absent:
        return [f"{member}: needs the columns {', '.join(absent)} (found {list(cols)})"]
    bad: list[str] = []
    for line, row in enumerate(rows, start=2):
        cells = {k: (row.get(k) or "").strip() for k in _CANDIDATE_COLUMNS}
        if not any(cells[k] for k in ("x", "y", "z")):
            continue
        for k, text in cells.items():
            try:
                ok = math.isfinite(float(text))
            except ValueError:
                ok = False
            if not ok:
                bad.append(f"line {line} {k}={text!r}")
    if not bad:
        return []
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    return [f"{member}: values that are not finite numbers: {'; '.join(bad[:10])}{more}"]


def validate_predictions(
    session: Session, spec: ChallengeSpec, track: Track, phase: Phase, files: list[ExtractedFile]
) -> list[str]:
    """All problems of extracted prediction files for (track, phase); empty when acceptable."""
    subset = spec.scored_subset(track, phase)
    cases = {c.case_key: c for c in subset_cases(session, track.dataset, track.split, subset)}
    cfg = task_config(track.task, track.task_config)
    if track.task in tasks_mod.TABLE_TASKS:
        return validate_table_predictions(files, cases, track.task, cfg)
    return validate_image_predictions(files, cases, track.task, cfg)


# ---------------------------------------------------------------------------- submit


def _lock_team(session: Session, team_id: int) -> None:
    """Serialise submissions of one team (see the module docstring)."""
    if session.get_bind().dialect.name == "sqlite":
        # The write lock up front: a plain BEGIN would take it only at the INSERT, after
        # both racers had counted. Must be the transaction's first statement.
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    else:
        session.execute(select(Team.id).where(Team.id == team_id).with_for_update())


def submit(
    sessions: sessionmaker[Session],
    store: LocalObjectStore,
    *,
    challenge_slug: str,
    track_slug: str,
    phase_slug: str,
    user_id: int,
    stream: BinaryIO,
    filename: str,
    work_dir: Path,
    now: dt.datetime | None = None,
    archive_limits: ArchiveLimits | None = None,
) -> Submission:
    """Receive, check and queue one predictions archive; see the module docstring.

    Raises PermissionDenied, LimitReached, SubmissionRefused / ArchiveError (with the list
    of problems) or InputError (phase closed, upload too large); in each case nothing is
    stored and no slot is used. ``work_dir`` holds the temporary upload and extraction.
    """
    filename = Path(filename.replace("\\", "/")).name[:255] or "upload"
    with sessions() as s:
        user = s.get(User, user_id)
        if user is None:
            raise NotFoundError(f"no user with id {user_id}")
        target = check_can_submit(s, challenge_slug, track_slug, phase_slug, user, now)
    phase = target.phase
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="upload-", dir=work_dir))
    try:
        upload = tmp / "upload"
        size = receive_upload(stream, upload, phase.max_upload_bytes, filename)
        files = extract_archive(upload, tmp / "files", limits=archive_limits, display_name=filename)
        kind = "model" if is_model_archive(files) else "predictions"
        if kind == "model":  # the server decides by content (challenges.models)
            problems = (
                check_model_archive(files, target.track, phase.model_limits)
                if "model" in phase.submission_kinds
                else [f"phase {phase.slug!r} does not accept model submissions (model.onnx)"]
            )
        elif "predictions" not in phase.submission_kinds:
            problems = [
                f"phase {phase.slug!r} accepts only model submissions "
                "(an archive of model.onnx and manifest.yaml)"
            ]
        else:
            with sessions() as s:
                problems = validate_predictions(s, target.spec, target.track, phase, files)
        if problems:
            raise SubmissionRefused(filename, problems)
        digest = store.put_file(upload)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return insert_submission(sessions, target, user_id, filename, digest, size, now, kind=kind)


def insert_submission(
    sessions: sessionmaker[Session],
    target: Target,
    user_id: int,
    filename: str,
    digest: str,
    size: int,
    now: dt.datetime | None = None,
    *,
    kind: str = "predictions",
) -> Submission:
    """Take a slot and queue scoring, atomically: count and insert under the team lock.

    ``target`` comes from :func:`check_can_submit`; its checks of phase and limits are
    repeated here under the lock, where they hold against concurrent submissions.
    """
    with sessions() as s:
        _lock_team(s, target.team.id)
        t = now or dt.datetime.now(dt.UTC)
        # The phase may have closed while the upload was read; this check is the one
        # that counts, taken under the lock.
        _check_open(target.phase, t)
        problem = _limit_problem(
            usage(s, target.challenge.id, target.team.id, target.phase, target.track.slug, t)
        )
        if problem:
            s.rollback()
            raise LimitReached(problem)
        sub = Submission(
            challenge_id=target.challenge.id,
            track_slug=target.track.slug,
            phase_slug=target.phase.slug,
            team_id=target.team.id,
            user_id=user_id,
            filename=filename,
            archive_digest=digest,
            archive_size=size,
            kind=kind,
            status="queued",
            progress=0.0,
            counts_toward_limit=True,
            scores={},
            score_revision=0,
            created_at=t,
        )
        s.add(sub)
        s.flush()
        revision = int(target.challenge.spec_revision)
        enqueue(
            s,
            SCORE_JOB_KIND,
            {"submission_id": sub.id, "spec_revision": revision},
            dedupe_key=score_dedupe_key(sub.id, revision),
            max_attempts=3,
        )
        s.commit()
        logger.info("submission %d queued (team %d)", sub.id, target.team.id)
        return sub


def score_dedupe_key(submission_id: int, spec_revision: int) -> str:
    """The scoring job's dedupe key: one job per submission and spec revision."""
    return f"submission:{submission_id}:spec:{spec_revision}"


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Status:
    """What the live status shows: state, progress (running) and the reason (failed)."""

    id: int
    status: str
    progress: float
    error: str | None
    primary_score: float | None
    scored_at: dt.datetime | None

    def as_dict(self) -> dict[str, Any]:
        score = self.primary_score
        return {
            "id": self.id,
            "status": self.status,
            "progress": round(self.progress, 3),
            "error": self.error,
            "primary_score": score if score is None or math.isfinite(score) else str(score),
            "scored_at": self.scored_at.isoformat() if self.scored_at else None,
        }


def submission_status(session: Session, sub: Submission, *, show_score: bool = True) -> Status:
    """The live status of ``sub``; progress comes from its scoring job while it runs."""
    progress = sub.progress
    if sub.status in ("queued", "running"):
        job = session.scalars(
            select(Job)
            .where(
                Job.kind == SCORE_JOB_KIND,
                Job.dedupe_key.like(f"submission:{sub.id}:spec:%"),
            )
            .order_by(Job.id.desc())
        ).first()
        if job is not None:
            progress = job.progress
            if job.state == "failed":
                # the job gave up (e.g. its worker died on the last attempt) before the
                # handler could say so on the submission: show it failed, not running
                return Status(sub.id, "failed", 0.0, INTERNAL_FAILURE, None, None)
    return Status(
        sub.id,
        sub.status,
        float(progress or 0.0),
        sub.error,
        sub.primary_score if show_score else None,
        _utc(sub.scored_at) if sub.scored_at else None,
    )


def team_submissions(
    session: Session,
    challenge_id: int,
    team_id: int,
    *,
    phase_slug: str | None = None,
    track_slug: str | None = None,
) -> list[Submission]:
    """A team's submissions, newest first."""
    q = select(Submission).where(
        Submission.challenge_id == challenge_id, Submission.team_id == team_id
    )
    if phase_slug:
        q = q.where(Submission.phase_slug == phase_slug)
    if track_slug:
        q = q.where(Submission.track_slug == track_slug)
    return list(session.scalars(q.order_by(Submission.created_at.desc(), Submission.id.desc())))


def rescore_phase(
    session: Session,
    challenge: Challenge,
    phase_slug: str,
    *,
    track_slug: str | None = None,
    actor_id: int | None,
) -> int:
    """Queue a new scoring of every scored submission of a phase (after a spec change).

    Each job carries the challenge's current spec revision, so a submission is re-scored
    once per revision however often this is called. Returns how many jobs were queued.
    The caller checks the actor is an organizer and commits.
    """
    from medarena.accounts.audit import audit

    spec = load_spec(challenge)
    spec.phase(phase_slug)
    if track_slug is not None:
        spec.track(track_slug)
    q = select(Submission).where(
        Submission.challenge_id == challenge.id,
        Submission.phase_slug == phase_slug,
        Submission.status == "scored",
    )
    if track_slug is not None:
        q = q.where(Submission.track_slug == track_slug)
    revision = int(challenge.spec_revision)
    n = 0
    for sub in session.scalars(q):
        if sub.score_revision >= revision:
            continue
        key = score_dedupe_key(sub.id, revision)
        queued = select(Job.id).where(Job.kind == SCORE_JOB_KIND, Job.dedupe_key == key)
        if session.scalar(queued) is not None:  # asked before: count only new jobs
            continue
        enqueue(
            session,
            SCORE_JOB_KIND,
            {"submission_id": sub.id, "spec_revision": revision},
            dedupe_key=key,
        )
        n += 1
    audit(
        session,
        actor_id,
        "submissions.rescore",
        challenge_id=challenge.id,
        target=f"phase:{phase_slug}" + (f" track:{track_slug}" if track_slug else ""),
        detail={"jobs": n, "spec_revision": revision},
    )
    return n


# ---------------------------------------------------------------------------- who sees what


def get_visible_submission(session: Session, submission_id: int, user: User | None) -> Submission:
    """A submission the user may see: a member of its team, or a reviewer/organizer/admin.

    Anyone else gets NotFoundError, the same answer as for an id that does not exist, so
    ids of other teams' submissions cannot be probed.
    """
    from medarena.accounts.roles import can_review

    sub = session.get(Submission, submission_id)
    if sub is None or user is None:
        raise NotFoundError(f"no submission {submission_id}")
    team = team_of(session, sub.challenge_id, user.id)
    if (team is None or team.id != sub.team_id) and not can_review(session, user, sub.challenge_id):
        raise NotFoundError(f"no submission {submission_id}")
    return sub


def submission_detail(
    session: Session, store: LocalObjectStore, sub: Submission, user: User
) -> dict[str, Any]:
    """What the detail page and API show of a visible submission.

    Aggregate scores always (they are the team's own); per-case results and failure
    reasons only when the scored subset is not hidden, or to reviewers and organizers, in
    which case reading a hidden subset's per-case results is written to the audit log.
    """
    from medarena.accounts.audit import audit
    from medarena.accounts.roles import can_review
    from medarena.challenges.service import subset_info
    from medarena.evaluation.results import EvaluationResult

    challenge = session.get(Challenge, sub.challenge_id)
    assert challenge is not None
    spec = load_spec(challenge)
    track, phase = find_track_phase(spec, sub.track_slug, sub.phase_slug)
    subset = spec.scored_subset(track, phase)
    hidden = subset_info(session, track.dataset, track.split, subset).hidden
    reviewer = can_review(session, user, challenge.id)
    out: dict[str, Any] = {
        **submission_status(session, sub).as_dict(),
        "challenge": challenge.slug,
        "track": sub.track_slug,
        "phase": sub.phase_slug,
        "filename": sub.filename,
        "archive_size": sub.archive_size,
        "created_at": _utc(sub.created_at).isoformat(),
        "scores": {k: (v if math.isfinite(v) else str(v)) for k, v in (sub.scores or {}).items()},
        "primary_metric": track.primary_metric,
        "subset_hidden": hidden,
        "cases": None,
        "failed_cases": None,
        "missing_cases": None,
    }
    if sub.status != "scored" or sub.result_digest is None or (hidden and not reviewer):
        return out
    result = EvaluationResult.model_validate_json(store.get_bytes(sub.result_digest))
    out["cases"] = {
        cid: {m: (v if math.isfinite(v) else str(v)) for m, v in vals.items()}
        for cid, vals in result.cases.items()
    }
    out["failed_cases"] = result.failed
    out["missing_cases"] = result.missing
    if hidden:
        audit(
            session,
            user.id,
            "data.hidden_read",
            challenge_id=challenge.id,
            target=f"submission:{sub.id}",
            detail={"what": "per-case results", "subset": subset},
        )
        session.commit()
    return out

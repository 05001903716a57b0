"""Submissions over HTTP: streamed upload, live status, detail, re-score; and their pages.

The upload is the raw request body (``Content-Type: application/octet-stream``; the file
name in the ``filename`` query parameter), read chunk by chunk into a temporary file under
the phase's size cap, then handed to :func:`medarena.challenges.submissions.submit`. The
browser's submit page sends the same request from a little JavaScript (progress bar);
without JavaScript the page's multipart form is used, which Starlette spools to disk.
Errors map to statuses: PermissionDenied 403, NotFoundError 404, LimitReached 429, other
InputError 400 with the list of problems.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from medarena.challenges import service, submissions
from medarena.challenges.archives import ArchiveError
from medarena.challenges.teams import team_of
from medarena.db.platform_models import User
from medarena.errors import MedarenaError, NotFoundError
from medarena.web.deps import (
    CatalogueDep,
    CurrentUser,
    DbSession,
    TemplatesDep,
    release_db,
    verify_csrf,
)

router = APIRouter()
_CSRF = [Depends(verify_csrf)]


def _http(exc: MedarenaError) -> HTTPException:
    if isinstance(exc, service.PermissionDenied):
        return HTTPException(403, str(exc))
    if isinstance(exc, NotFoundError):
        return HTTPException(404, str(exc))
    if isinstance(exc, submissions.LimitReached):
        return HTTPException(429, str(exc))
    problems = getattr(exc, "problems", None)
    if isinstance(exc, submissions.SubmissionRefused | ArchiveError) and problems:
        return HTTPException(400, {"message": str(exc), "problems": list(problems)})
    return HTTPException(400, str(exc))


def _do_submit(
    cat: Any, user: User, slug: str, track: str, phase: str, stream: BinaryIO, name: str
) -> dict[str, Any]:
    sub = submissions.submit(
        cat.sessions,
        cat.store,
        challenge_slug=slug,
        track_slug=track,
        phase_slug=phase,
        user_id=user.id,
        stream=stream,
        filename=name,
        work_dir=Path(cat.settings.data_dir) / "work",
    )
    return {"id": sub.id, "status": sub.status, "status_url": f"/api/v1/submissions/{sub.id}"}


def _max_bytes(db: Session, slug: str, track: str, phase: str, user: User) -> int:
    try:
        return submissions.check_can_submit(db, slug, track, phase, user).phase.max_upload_bytes
    except MedarenaError as exc:
        raise _http(exc) from None


@router.post(
    "/api/v1/challenges/{slug}/submissions",
    tags=["submissions"],
    status_code=201,
    dependencies=_CSRF,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def api_submit(
    request: Request,
    slug: str,
    track: str,
    phase: str,
    user: CurrentUser,
    db: DbSession,
    cat: CatalogueDep,
    filename: str = "predictions.zip",
) -> dict[str, Any]:
    """Upload a predictions archive (raw body, zip or tar) to a track and phase."""
    cap = await run_in_threadpool(_max_bytes, db, slug, track, phase, user)
    release_db(request)  # the upload may take minutes: hold no connection meanwhile
    work = Path(cat.settings.data_dir) / "work"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=work) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                # stop reading at once: the rest of a huge upload is never written
                raise HTTPException(
                    413, f"{filename}: upload is larger than this phase's limit of {cap} bytes"
                )
            spool.write(chunk)
        spool.seek(0)
        try:
            return await run_in_threadpool(
                _do_submit, cat, user, slug, track, phase, spool, filename
            )
        except MedarenaError as exc:
            raise _http(exc) from None


@router.get("/api/v1/challenges/{slug}/submissions", tags=["submissions"])
def api_my_submissions(
    slug: str, user: CurrentUser, db: DbSession, phase: str | None = None
) -> list[dict[str, Any]]:
    """Your team's submissions in a challenge, newest first, with their live status."""
    try:
        ch = service.get_challenge(db, slug)
    except MedarenaError as exc:
        raise _http(exc) from None
    team = team_of(db, ch.id, user.id)
    if team is None:
        return []
    return [
        {
            **submissions.submission_status(db, s).as_dict(),
            "track": s.track_slug,
            "phase": s.phase_slug,
            "filename": s.filename,
            "created_at": s.created_at.isoformat(),
        }
        for s in submissions.team_submissions(db, ch.id, team.id, phase_slug=phase)
    ]


@router.get("/api/v1/submissions/{submission_id}", tags=["submissions"])
def api_status(submission_id: int, user: CurrentUser, db: DbSession) -> dict[str, Any]:
    """Live status of one submission (poll this): queued, running with progress, scored, failed."""
    try:
        sub = submissions.get_visible_submission(db, submission_id, user)
    except MedarenaError as exc:
        raise _http(exc) from None
    return submissions.submission_status(db, sub).as_dict()


@router.get("/api/v1/submissions/{submission_id}/result", tags=["submissions"])
def api_result(
    submission_id: int, user: CurrentUser, db: DbSession, cat: CatalogueDep
) -> dict[str, Any]:
    """Scores of a submission; per-case results only for a public subset (or to reviewers)."""
    try:
        sub = submissions.get_visible_submission(db, submission_id, user)
        return submissions.submission_detail(db, cat.store, sub, user)
    except MedarenaError as exc:
        raise _http(exc) from None


@router.post(
    "/api/v1/challenges/{slug}/phases/{phase}/rescore", tags=["submissions"], dependencies=_CSRF
)
def api_rescore(
    slug: str, phase: str, user: CurrentUser, db: DbSession, track: str | None = None
) -> dict[str, int]:
    """Organizers: score every scored submission of a phase again with the current spec."""
    try:
        ch = service.get_challenge(db, slug)
        service.require_organizer(db, ch, user)
        n = submissions.rescore_phase(db, ch, phase, track_slug=track, actor_id=user.id)
        db.commit()
    except MedarenaError as exc:
        raise _http(exc) from None
    return {"queued": n}


# ---------------------------------------------------------------------------- pages


@router.get("/challenges/{slug}/submit", response_class=HTMLResponse, include_in_schema=False)
def submit_page(
    request: Request, slug: str, user: CurrentUser, db: DbSession, templates: TemplatesDep
) -> Response:
    try:
        ch = service.get_challenge(db, slug)
    except MedarenaError as exc:
        raise _http(exc) from None
    spec = service.load_spec(ch)
    choices = [
        {"phase": p, "tracks": spec.tracks_of(p)} for p in spec.phases if p.state() == "open"
    ]
    return templates.TemplateResponse(
        request, "submit.html", {"challenge": ch, "spec": spec, "choices": choices}
    )


@router.post("/challenges/{slug}/submit", include_in_schema=False, dependencies=_CSRF)
def submit_form(
    request: Request,
    slug: str,
    user: CurrentUser,
    cat: CatalogueDep,
    templates: TemplatesDep,
    target: str = Form(...),
    archive: UploadFile = File(...),
) -> Response:
    """The no-JavaScript fallback: multipart form, then the same checks."""
    phase, _, track = target.partition("/")
    try:
        _do_submit(cat, user, slug, track, phase, archive.file, archive.filename or "upload")
    except MedarenaError as exc:
        return templates.TemplateResponse(
            request,
            "challenge_message.html",
            {
                "title": "Submission refused",
                "message": str(exc),
                "back": f"/challenges/{slug}/submit",
            },
            status_code=400,
        )
    return RedirectResponse(f"/challenges/{slug}/submissions", status_code=303)


@router.get("/challenges/{slug}/submissions", response_class=HTMLResponse, include_in_schema=False)
def my_submissions_page(
    request: Request, slug: str, user: CurrentUser, db: DbSession, templates: TemplatesDep
) -> Response:
    rows = api_my_submissions(slug, user, db)
    ch = service.get_challenge(db, slug)
    return templates.TemplateResponse(request, "submissions.html", {"challenge": ch, "rows": rows})


@router.get("/submissions/{submission_id}", response_class=HTMLResponse, include_in_schema=False)
def submission_page(
    request: Request,
    submission_id: int,
    user: CurrentUser,
    db: DbSession,
    cat: CatalogueDep,
    templates: TemplatesDep,
) -> Response:
    detail = api_result(submission_id, user, db, cat)
    metrics: list[str] = []
    for vals in (detail.get("cases") or {}).values():
        for m in vals:
            if m not in metrics:
                metrics.append(m)
    return templates.TemplateResponse(request, "submission.html", {"d": detail, "metrics": metrics})

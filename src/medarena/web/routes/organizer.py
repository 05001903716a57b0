"""Organizer pages of a challenge (dashboard, participants, phases, re-score, exports,
audit log) and their API: participants, audit log, all-submissions CSV.

Organizers, reviewers and platform admins see the pages; reviewers read only: the forms
that change something (roles, phase dates, re-score) are for organizers and admins.
Anyone else gets 403, an anonymous browser a redirect to the login page. The work is done
by medarena.challenges.organizer, the challenge service and the submissions package.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from medarena.accounts.audit import audit
from medarena.accounts.roles import can_organize, can_review
from medarena.challenges import organizer, service, submissions
from medarena.db.platform_models import Challenge, User
from medarena.errors import InputError, MedarenaError, NotFoundError
from medarena.web.deps import CurrentUser, DbSession, TemplatesDep, verify_csrf
from medarena.web.errors import http_status

router = APIRouter()
_CSRF = [Depends(verify_csrf)]


def _challenge(db: Session, slug: str, user: User, *, write: bool = False) -> Challenge:
    """The challenge if the user may see (reviewers) or change (organizers) its organizer
    pages; 404 when it does not exist, 403 otherwise."""
    try:
        ch = service.get_challenge(db, slug)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    if write and not can_organize(db, user, ch.id):
        raise HTTPException(403, f"only organizers of {slug!r} may do this")
    if not can_review(db, user, ch.id):
        raise HTTPException(403, f"only organizers and reviewers of {slug!r} see this page")
    return ch


@dataclass(frozen=True)
class _View:
    """One request for an organizer page of ``ch`` by ``user``: what every page renders with."""

    request: Request
    templates: TemplatesDep
    db: Session
    ch: Challenge
    user: User

    def page(self, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
        """Render template ``name`` with the challenge, its spec and ``context``, uncached."""
        response = self.templates.TemplateResponse(
            self.request,
            name,
            {
                "ch": self.ch,
                "spec": service.load_spec(self.ch),
                "can_change": can_organize(self.db, self.user, self.ch.id),
                **context,
            },
            status_code=status,
        )
        response.headers["Cache-Control"] = "no-store"  # other teams' standing, e-mail addresses
        return response


def _view(
    slug: str,
    request: Request,
    templates: TemplatesDep,
    db: Session,
    user: User,
    *,
    write: bool = False,
) -> _View:
    """The page context of challenge ``slug`` (404, or 403 unless ``user`` may see / change it)."""
    return _View(request, templates, db, _challenge(db, slug, user, write=write), user)


# ---------------------------------------------------------------------------- API


@router.get("/api/v1/challenges/{slug}/participants", tags=["organizer"])
def api_participants(slug: str, db: DbSession, user: CurrentUser) -> dict[str, Any]:
    """Users of the challenge (team, roles, rules acceptance, submissions) and its teams
    (organizers and reviewers)."""
    ch = _challenge(db, slug, user)
    return {
        "users": [r.as_dict() for r in organizer.participants(db, ch.id)],
        "teams": [t.as_dict() for t in organizer.team_rows(db, ch.id)],
    }


@router.get("/api/v1/challenges/{slug}/audit", tags=["organizer"])
def api_audit(
    slug: str,
    db: DbSession,
    user: CurrentUser,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=organizer.AUDIT_MAX_LIMIT)] = organizer.AUDIT_PAGE_SIZE,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The challenge's audit log, newest first, optionally one action only (organizers and
    reviewers): organizer and admin actions and every read of hidden data."""
    ch = _challenge(db, slug, user)
    total, rows = organizer.audit_events(db, ch.id, action=action, limit=limit, offset=offset)
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "events": [r.as_dict() for r in rows],
    }


@router.get("/api/v1/challenges/{slug}/export/submissions.csv", tags=["organizer"])
def api_submissions_csv(slug: str, db: DbSession, user: CurrentUser) -> Response:
    """Every submission of the challenge as CSV: team, submitter, track, phase, status,
    times and scores (organizers and reviewers; the export is audited)."""
    ch = _challenge(db, slug, user)
    text, n = organizer.submissions_csv(db, ch)
    audit(db, user.id, "submissions.export", challenge_id=ch.id, target=slug, detail={"rows": n})
    db.commit()
    return Response(
        text,
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{slug}-submissions.csv"',
            "Cache-Control": "no-store",
        },
    )


# ---------------------------------------------------------------------------- pages


@router.get("/challenges/{slug}/organize", response_class=HTMLResponse, include_in_schema=False)
def dashboard(
    slug: str, request: Request, templates: TemplatesDep, db: DbSession, user: CurrentUser
) -> HTMLResponse:
    v = _view(slug, request, templates, db, user)
    ch = v.ch
    spec = service.load_spec(ch)
    counts = organizer.submission_counts(db, ch.id)
    now = dt.datetime.now(dt.UTC)
    phases = [
        {
            "phase": p,
            "state": p.state(now),
            "counts": counts.get(p.slug, {}),
            "opens": organizer.display_time(p.opens),
            "closes": organizer.display_time(p.closes),
        }
        for p in spec.phases
    ]
    return v.page(
        "organize.html",
        {
            "phases": phases,
            "statuses": organizer.STATUSES,
            "n_teams": len(organizer.team_rows(db, ch.id)),
            "n_users": len(organizer.challenge_user_ids(db, ch.id)),
        },
    )


def _participants_page(
    v: _View,
    *,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    return v.page(
        "organize_participants.html",
        {
            "users": organizer.participants(v.db, v.ch.id),
            "teams": organizer.team_rows(v.db, v.ch.id),
            "roles": organizer.GRANTABLE_ROLES,
            "error": error,
            "notice": notice,
        },
        status,
    )


@router.get(
    "/challenges/{slug}/organize/participants",
    response_class=HTMLResponse,
    include_in_schema=False,
)
def participants_page(
    slug: str, request: Request, templates: TemplatesDep, db: DbSession, user: CurrentUser
) -> HTMLResponse:
    return _participants_page(_view(slug, request, templates, db, user))


@router.post(
    "/challenges/{slug}/organize/participants", include_in_schema=False, dependencies=_CSRF
)
def participants_action(
    slug: str,
    request: Request,
    templates: TemplatesDep,
    db: DbSession,
    user: CurrentUser,
    action: Annotated[str, Form()],
    role: Annotated[str, Form()],
    user_id: Annotated[int | None, Form()] = None,
    email: Annotated[str, Form()] = "",
) -> Response:
    """Grant or revoke the reviewer or organizer role (audited by the service)."""
    v = _view(slug, request, templates, db, user, write=True)
    ch = v.ch
    try:
        if action not in ("grant", "revoke"):
            raise InputError("must be grant or revoke", path="action", value=action)
        target = organizer.change_role(
            db,
            ch,
            role=role,
            grant=action == "grant",
            actor_id=user.id,
            user_id=user_id,
            email=email,
        )
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        return _participants_page(v, error=str(exc), status=http_status(exc))
    verb = "is now" if action == "grant" else "is no longer"
    return _participants_page(v, notice=f"{target.display_name} {verb} {role}.")


def _phases_page(
    v: _View,
    *,
    error: str | None = None,
    error_phase: str | None = None,
    error_field: str | None = None,
    sent: dict[str, str] | None = None,
    notice: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    spec = service.load_spec(v.ch)
    now = dt.datetime.now(dt.UTC)
    rows = []
    for p in spec.phases:
        mine = sent if p.slug == error_phase and sent else {}
        rows.append(
            {
                "phase": p,
                "state": p.state(now),
                "shown": (organizer.display_time(p.opens), organizer.display_time(p.closes)),
                "opens": mine.get("opens", organizer.form_value(p.opens)),
                "closes": mine.get("closes", organizer.form_value(p.closes)),
            }
        )
    return v.page(
        "organize_phases.html",
        {
            "rows": rows,
            "error": error,
            "error_phase": error_phase,
            "error_field": error_field,
            "notice": notice,
        },
        status,
    )


@router.get(
    "/challenges/{slug}/organize/phases", response_class=HTMLResponse, include_in_schema=False
)
def phases_page(
    slug: str,
    request: Request,
    templates: TemplatesDep,
    db: DbSession,
    user: CurrentUser,
    saved: str = "",
) -> HTMLResponse:
    v = _view(slug, request, templates, db, user)
    ch = v.ch
    notice = None
    if saved in {p.slug for p in service.load_spec(ch).phases}:
        notice = f"Phase {saved}: new dates saved (spec revision {ch.spec_revision})."
    return _phases_page(v, notice=notice)


@router.post("/challenges/{slug}/organize/phases", include_in_schema=False, dependencies=_CSRF)
def phases_action(
    slug: str,
    request: Request,
    templates: TemplatesDep,
    db: DbSession,
    user: CurrentUser,
    phase: Annotated[str, Form()],
    opens: Annotated[str, Form()],
    closes: Annotated[str, Form()],
) -> Response:
    """Move a phase's dates: a new spec revision through the service, audited."""
    v = _view(slug, request, templates, db, user, write=True)
    ch = v.ch
    try:
        changed = organizer.set_phase_dates(
            db, ch, phase, opens=opens, closes=closes, actor_id=user.id
        )
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        path = getattr(exc, "path", None) or ""
        return _phases_page(
            v,
            error=str(exc),
            error_phase=phase,
            error_field="closes" if path.endswith("closes") else "opens",
            sent={"opens": opens, "closes": closes},
            status=http_status(exc),
        )
    if not changed:
        return _phases_page(v, notice=f"Phase {phase}: the dates are unchanged.")
    return RedirectResponse(f"/challenges/{slug}/organize/phases?saved={phase}", status_code=303)


def _rescore_page(
    v: _View,
    *,
    queued: int | None = None,
    what: str = "",
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    spec = service.load_spec(v.ch)
    counts = organizer.submission_counts(v.db, v.ch.id)
    phases = [
        {"phase": p, "tracks": spec.tracks_of(p), "scored": counts.get(p.slug, {}).get("scored", 0)}
        for p in spec.phases
    ]
    return v.page(
        "organize_rescore.html",
        {"phases": phases, "queued": queued, "what": what, "error": error},
        status,
    )


@router.get(
    "/challenges/{slug}/organize/rescore", response_class=HTMLResponse, include_in_schema=False
)
def rescore_page(
    slug: str, request: Request, templates: TemplatesDep, db: DbSession, user: CurrentUser
) -> HTMLResponse:
    return _rescore_page(_view(slug, request, templates, db, user))


@router.post("/challenges/{slug}/organize/rescore", include_in_schema=False, dependencies=_CSRF)
def rescore_action(
    slug: str,
    request: Request,
    templates: TemplatesDep,
    db: DbSession,
    user: CurrentUser,
    phase: Annotated[str, Form()],
    track: Annotated[str, Form()] = "",
) -> Response:
    """Queue a re-scoring of a phase (or one track of it) and say how many jobs."""
    v = _view(slug, request, templates, db, user, write=True)
    ch = v.ch
    what = f"phase {phase}" + (f", track {track}" if track else "")
    try:
        n = submissions.rescore_phase(db, ch, phase, track_slug=track or None, actor_id=user.id)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        return _rescore_page(v, error=str(exc), status=http_status(exc))
    return _rescore_page(v, queued=n, what=what)


@router.get(
    "/challenges/{slug}/organize/exports", response_class=HTMLResponse, include_in_schema=False
)
def exports_page(
    slug: str, request: Request, templates: TemplatesDep, db: DbSession, user: CurrentUser
) -> HTMLResponse:
    v = _view(slug, request, templates, db, user)
    spec = service.load_spec(v.ch)
    boards = [(p, spec.tracks_of(p)) for p in spec.phases]
    return v.page("organize_exports.html", {"boards": boards})


@router.get(
    "/challenges/{slug}/organize/audit", response_class=HTMLResponse, include_in_schema=False
)
def audit_page(
    slug: str,
    request: Request,
    templates: TemplatesDep,
    db: DbSession,
    user: CurrentUser,
    action: str = "",
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    v = _view(slug, request, templates, db, user)
    ch = v.ch
    size = organizer.AUDIT_PAGE_SIZE
    total, rows = organizer.audit_events(
        db, ch.id, action=action or None, limit=size, offset=(page - 1) * size
    )
    pages = max(1, -(-total // size))
    return v.page(
        "organize_audit.html",
        {
            "events": rows,
            "actions": organizer.audit_actions(db, ch.id),
            "action": action,
            "page": page,
            "pages": pages,
            "total": total,
        },
    )

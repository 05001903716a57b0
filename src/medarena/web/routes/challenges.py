"""Challenge pages and /api/v1/challenges: list, page, spec create/edit, join, teams, data.

Routes parse input and call medarena.challenges (service, teams, data); the errors those
raise map to HTTP statuses here: PermissionDenied 403, NotFoundError 404, InputError 400.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from medarena.accounts.roles import can_organize, can_review, roles_of
from medarena.challenges import data, service, teams
from medarena.challenges.spec import ChallengeSpec, SpecError, parse_spec, render_markdown
from medarena.db.platform_models import Challenge, Team, User
from medarena.errors import InputError, MedarenaError, NotFoundError
from medarena.web.deps import (
    CatalogueDep,
    CurrentUser,
    DbSession,
    OptionalUser,
    TemplatesDep,
    verify_csrf,
)
from medarena.web.errors import http_status

router = APIRouter()
MAX_SPEC_BYTES = 1 << 20
_CSRF = [Depends(verify_csrf)]
_YAML_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/yaml": {"schema": {"type": "string"}}},
    }
}


def _http(exc: MedarenaError) -> HTTPException:
    detail: Any = str(exc)
    if isinstance(exc, SpecError):
        detail = {
            "message": "invalid challenge spec",
            "problems": [
                {"line": p.line, "field": p.field, "message": p.message} for p in exc.problems
            ],
        }
    return HTTPException(http_status(exc), detail)


def _challenge(db: Session, slug: str) -> Challenge:
    try:
        return service.get_challenge(db, slug)
    except NotFoundError as exc:
        raise _http(exc) from None


# ---------------------------------------------------------------------------- views


def _phase_view(spec: ChallengeSpec, now: dt.datetime) -> list[dict[str, Any]]:
    return [
        {
            "slug": p.slug,
            "title": p.title,
            "description": p.description,
            "opens": p.opens.isoformat(),
            "closes": p.closes.isoformat(),
            "state": p.state(now),
            "leaderboard": p.leaderboard,
            "tracks": [t.slug for t in spec.tracks_of(p)],
            "submissions_per_day": p.submissions_per_day,
            "submissions_total": p.submissions_total,
            "failed_runs_count": p.failed_runs_count,
            "requires_phase": p.requires_phase,
            "max_upload_mb": p.max_upload_mb,
            "best_or_latest": p.best_or_latest,
        }
        for p in spec.phases
    ]


def challenge_public(db: Session, ch: Challenge, user: User | None) -> dict[str, Any]:
    """A challenge as anyone may see it, plus the caller's own standing in it."""
    spec = service.load_spec(ch)
    me: dict[str, Any] | None = None
    if user is not None:
        team = teams.team_of(db, ch.id, user.id)
        me = {
            "roles": sorted(roles_of(db, user.id, ch.id)),
            "accepted_rules": service.has_accepted_rules(db, ch, user.id),
            "team": {"id": team.id, "name": team.name} if team else None,
        }
    return {
        "slug": ch.slug,
        "title": ch.title,
        "summary": spec.summary,
        "revision": ch.spec_revision,
        "team_size_max": spec.team_size_max,
        "rules": spec.rules,
        "data": spec.data.model_dump(),
        "tracks": [
            {
                "slug": t.slug,
                "title": t.title,
                "task": t.task,
                "metrics": t.metrics,
                "primary_metric": t.primary_metric,
                "ranking_scheme": t.ranking.scheme,
            }
            for t in spec.tracks
        ],
        "phases": _phase_view(spec, dt.datetime.now(dt.UTC)),
        "me": me,
    }


# ---------------------------------------------------------------------------- API


def _yaml_text(raw: bytes) -> str:
    if len(raw) > MAX_SPEC_BYTES:
        raise InputError(f"a challenge spec is at most {MAX_SPEC_BYTES} bytes", value=len(raw))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("a challenge spec must be UTF-8 text") from None


@router.get("/api/v1/challenges", tags=["challenges"])
def api_list(db: DbSession) -> list[dict[str, Any]]:
    """All challenges (slug, title, summary, revision)."""
    return [
        {
            "slug": c.slug,
            "title": c.title,
            "summary": service.load_spec(c).summary,
            "revision": c.spec_revision,
        }
        for c in service.list_challenges(db)
    ]


@router.post(
    "/api/v1/challenges",
    tags=["challenges"],
    status_code=201,
    dependencies=_CSRF,
    openapi_extra=_YAML_BODY,
)
async def api_create(request: Request, db: DbSession, user: CurrentUser) -> dict[str, Any]:
    """Create a challenge from a YAML spec (platform admins); the caller becomes organizer."""
    if not user.is_admin:
        raise HTTPException(403, "only platform admins create challenges")
    try:
        spec = parse_spec(_yaml_text(await request.body()), "request body")
        ch = service.create_challenge(db, spec, actor_id=user.id)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        raise _http(exc) from None
    return challenge_public(db, ch, user)


@router.get("/api/v1/challenges/{slug}", tags=["challenges"])
def api_get(slug: str, db: DbSession, user: OptionalUser) -> dict[str, Any]:
    """A challenge: tracks, phases with dates and state, rules, and the caller's standing."""
    return challenge_public(db, _challenge(db, slug), user)


@router.get("/api/v1/challenges/{slug}/spec", tags=["challenges"])
def api_get_spec(slug: str, db: DbSession, user: CurrentUser) -> Response:
    """The stored spec as YAML (organizers and reviewers)."""
    ch = _challenge(db, slug)
    if not can_review(db, user, ch.id):
        raise HTTPException(403, f"only organizers and reviewers of {slug!r} see its spec")
    return Response(service.load_spec(ch).to_yaml(), media_type="application/yaml")


@router.put(
    "/api/v1/challenges/{slug}", tags=["challenges"], dependencies=_CSRF, openapi_extra=_YAML_BODY
)
async def api_update(
    slug: str, request: Request, db: DbSession, user: CurrentUser
) -> dict[str, Any]:
    """Replace the spec (organizers); a new revision, audited."""
    ch = _challenge(db, slug)
    try:
        service.require_organizer(db, ch, user)
        spec = parse_spec(_yaml_text(await request.body()), "request body")
        service.update_challenge(db, slug, spec, actor_id=user.id)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        raise _http(exc) from None
    return challenge_public(db, ch, user)


@router.post("/api/v1/challenges/{slug}/join", tags=["challenges"], dependencies=_CSRF)
def api_join(slug: str, db: DbSession, user: CurrentUser) -> dict[str, Any]:
    """Accept the current rules and become a participant."""
    ch = _challenge(db, slug)
    try:
        service.join_challenge(db, ch, user)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        raise _http(exc) from None
    return challenge_public(db, ch, user)


class TeamIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)


class InviteIn(BaseModel):
    email: str = Field(min_length=3, max_length=320)


def _team_public(db: Session, team: Any) -> dict[str, Any]:
    return {
        "id": team.id,
        "name": team.name,
        "members": [
            {"user_id": m.user_id, "display_name": m.display_name, "captain": m.is_captain}
            for m in teams.members(db, team.id)
        ],
    }


@router.get("/api/v1/challenges/{slug}/teams", tags=["challenges"])
def api_teams(slug: str, db: DbSession) -> list[dict[str, Any]]:
    """Teams of the challenge with their members' display names."""
    ch = _challenge(db, slug)
    return [_team_public(db, t) for t in teams.list_teams(db, ch.id)]


@router.get("/api/v1/challenges/{slug}/team", tags=["challenges"])
def api_my_team(slug: str, db: DbSession, user: CurrentUser) -> dict[str, Any] | None:
    """The caller's team (null when in none)."""
    team = teams.team_of(db, _challenge(db, slug).id, user.id)
    return _team_public(db, team) if team else None


@router.post(
    "/api/v1/challenges/{slug}/teams", tags=["challenges"], status_code=201, dependencies=_CSRF
)
def api_create_team(slug: str, body: TeamIn, db: DbSession, user: CurrentUser) -> dict[str, Any]:
    """Create a team; the caller becomes its captain."""
    ch = _challenge(db, slug)
    try:
        team = teams.create_team(db, ch, user, body.name)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        raise _http(exc) from None
    return _team_public(db, team)


def _my_team_or_400(db: Session, ch: Challenge, user: User) -> Any:
    team = teams.team_of(db, ch.id, user.id)
    if team is None:
        raise HTTPException(400, "you are not in a team of this challenge")
    return team


@router.post(
    "/api/v1/challenges/{slug}/team/invitations",
    tags=["challenges"],
    status_code=201,
    dependencies=_CSRF,
)
def api_invite(
    slug: str, body: InviteIn, request: Request, db: DbSession, user: CurrentUser
) -> dict[str, Any]:
    """Invite an e-mail address (captain); the link is returned once and never again."""
    ch = _challenge(db, slug)
    team = _my_team_or_400(db, ch, user)
    try:
        inv, token = teams.invite(db, ch, team, user, body.email)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        raise _http(exc) from None
    link = str(request.url_for("invitation_page", token=token))
    return {"id": inv.id, "email": inv.email, "link": link}


@router.post("/api/v1/invitations/{token}/accept", tags=["challenges"], dependencies=_CSRF)
def api_accept(token: str, db: DbSession, user: CurrentUser) -> dict[str, Any]:
    """Join the team of an invitation addressed to the caller's e-mail."""
    try:
        team = teams.accept_invitation(db, token, user)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        raise _http(exc) from None
    return _team_public(db, team)


@router.post("/api/v1/challenges/{slug}/team/leave", tags=["challenges"], dependencies=_CSRF)
def api_leave(slug: str, db: DbSession, user: CurrentUser) -> dict[str, str]:
    """Leave one's team (refused once it has submitted)."""
    ch = _challenge(db, slug)
    try:
        teams.leave_team(db, ch, user)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        raise _http(exc) from None
    return {"status": "left"}


def _download(
    db: Session,
    catalogue: CatalogueDep,
    slug: str,
    user: User | None,
    kind: str,
    track: str,
    phase: str | None,
) -> StreamingResponse:
    ch = _challenge(db, slug)
    try:
        plan = data.plan_download(db, ch, user, kind, track, phase)
        db.commit()  # the audit event of a hidden read is stored before any byte leaves
    except MedarenaError as exc:
        db.rollback()
        raise _http(exc) from None
    return StreamingResponse(
        data.stream_zip(catalogue.store, plan),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{plan.filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/api/v1/challenges/{slug}/data/{kind}", tags=["challenges"])
def api_download(
    slug: str,
    kind: str,
    track: str,
    db: DbSession,
    catalogue: CatalogueDep,
    user: CurrentUser,
    phase: str | None = None,
) -> StreamingResponse:
    """Zip download: ``training`` (train images + labels), ``inputs`` (a phase's images
    only) or ``reference`` (organizers; hidden reads audited). Rules must be accepted."""
    return _download(db, catalogue, slug, user, kind, track, phase)


# ---------------------------------------------------------------------------- pages


def _message(
    request: Request, templates: TemplatesDep, title: str, message: str, status: int, back: str
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "challenge_message.html",
        {"title": title, "message": message, "back": back},
        status_code=status,
    )


@router.get("/challenges", response_class=HTMLResponse, include_in_schema=False)
def list_page(
    request: Request, templates: TemplatesDep, db: DbSession, user: OptionalUser
) -> HTMLResponse:
    now = dt.datetime.now(dt.UTC)
    rows = []
    for c in service.list_challenges(db):
        spec = service.load_spec(c)
        rows.append(
            {
                "slug": c.slug,
                "title": c.title,
                "summary": spec.summary,
                "phases": [(p.title, p.state(now)) for p in spec.phases],
            }
        )
    return templates.TemplateResponse(
        request, "challenges.html", {"challenges": rows, "can_create": bool(user and user.is_admin)}
    )


@router.get("/challenges/{slug}", response_class=HTMLResponse, include_in_schema=False)
def challenge_page(
    slug: str, request: Request, templates: TemplatesDep, db: DbSession, user: OptionalUser
) -> HTMLResponse:
    ch = _challenge(db, slug)
    spec = service.load_spec(ch)
    view = challenge_public(db, ch, user)
    return templates.TemplateResponse(
        request,
        "challenge.html",
        {
            "ch": view,
            "spec": spec,
            "description_html": render_markdown(spec.description),
            "rules_html": render_markdown(spec.rules),
            "organizer": can_organize(db, user, ch.id),
            "reviewer": can_review(db, user, ch.id),
        },
    )


@router.post("/challenges/{slug}/join", include_in_schema=False, dependencies=_CSRF)
def join_form(
    slug: str, request: Request, templates: TemplatesDep, db: DbSession, user: CurrentUser
) -> Response:
    ch = _challenge(db, slug)
    try:
        service.join_challenge(db, ch, user)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        return _message(
            request, templates, "Cannot join", str(exc), http_status(exc), f"/challenges/{slug}"
        )
    return RedirectResponse(f"/challenges/{slug}/team", status_code=303)


@router.get("/challenges/{slug}/data/{kind}", include_in_schema=False)
def download_page(
    slug: str,
    kind: str,
    track: str,
    db: DbSession,
    catalogue: CatalogueDep,
    user: CurrentUser,
    phase: str | None = None,
) -> StreamingResponse:
    return _download(db, catalogue, slug, user, kind, track, phase)


def _team_page(
    request: Request,
    templates: TemplatesDep,
    db: Session,
    ch: Challenge,
    user: User,
    *,
    error: str | None = None,
    new_link: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    team = teams.team_of(db, ch.id, user.id)
    members = teams.members(db, team.id) if team else []
    captain = any(m.user_id == user.id and m.is_captain for m in members)
    response = templates.TemplateResponse(
        request,
        "challenge_team.html",
        {
            "ch": ch,
            "spec": service.load_spec(ch),
            "joined": service.has_accepted_rules(db, ch, user.id),
            "team": team,
            "members": members,
            "captain": captain,
            "invitations": teams.pending_invitations(db, team.id) if captain and team else [],
            "error": error,
            "new_link": new_link,
        },
        status_code=status,
    )
    response.headers["Cache-Control"] = "no-store"  # may hold a fresh invitation link
    return response


@router.get("/challenges/{slug}/team", response_class=HTMLResponse, include_in_schema=False)
def team_page(
    slug: str, request: Request, templates: TemplatesDep, db: DbSession, user: CurrentUser
) -> HTMLResponse:
    return _team_page(request, templates, db, _challenge(db, slug), user)


@router.post("/challenges/{slug}/team", include_in_schema=False, dependencies=_CSRF)
def team_action(
    slug: str,
    request: Request,
    templates: TemplatesDep,
    db: DbSession,
    user: CurrentUser,
    action: Annotated[str, Form()],
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    target: Annotated[int, Form()] = 0,
) -> Response:
    """Form actions of the team page: create, invite, revoke, captain, leave."""
    ch = _challenge(db, slug)
    link = None
    try:
        team = teams.team_of(db, ch.id, user.id)
        if action == "create":
            teams.create_team(db, ch, user, name)
        elif team is None:
            raise InputError("you are not in a team of this challenge")
        elif action == "invite":
            _, token = teams.invite(db, ch, team, user, email)
            link = str(request.url_for("invitation_page", token=token))
        elif action == "revoke":
            teams.revoke_invitation(db, team, user, target)
        elif action == "captain":
            teams.make_captain(db, team, user, target)
        elif action == "leave":
            teams.leave_team(db, ch, user)
        else:
            raise InputError("unknown team action", value=action)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        return _team_page(request, templates, db, ch, user, error=str(exc), status=http_status(exc))
    if link is not None:
        return _team_page(request, templates, db, ch, user, new_link=link, status=201)
    return RedirectResponse(f"/challenges/{slug}/team", status_code=303)


@router.get("/invitations/{token}", response_class=HTMLResponse, include_in_schema=False)
def invitation_page(
    token: str, request: Request, templates: TemplatesDep, db: DbSession, user: CurrentUser
) -> HTMLResponse:
    try:
        inv = teams.find_invitation(db, token)
    except NotFoundError as exc:
        return _message(request, templates, "Invitation", str(exc), 404, "/challenges")
    team = db.get(Team, inv.team_id)
    ch = db.get(Challenge, team.challenge_id) if team else None
    response = templates.TemplateResponse(
        request,
        "invitation.html",
        {
            "token": token,
            "team": team,
            "ch": ch,
            "joined": bool(ch and service.has_accepted_rules(db, ch, user.id)),
        },
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in this URL
    return response


@router.post("/invitations/{token}/accept", include_in_schema=False, dependencies=_CSRF)
def invitation_accept(
    token: str, request: Request, templates: TemplatesDep, db: DbSession, user: CurrentUser
) -> Response:
    try:
        team = teams.accept_invitation(db, token, user)
        ch = db.get(Challenge, team.challenge_id)
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        return _message(request, templates, "Invitation", str(exc), http_status(exc), "/challenges")
    assert ch is not None
    return RedirectResponse(f"/challenges/{ch.slug}/team", status_code=303)


def _edit_page(
    request: Request,
    templates: TemplatesDep,
    *,
    slug: str | None,
    text: str,
    problems: list[str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "challenge_edit.html",
        {"slug": slug, "text": text, "problems": problems or []},
        status_code=status,
    )


async def _form_spec(text: str, upload: UploadFile | None) -> str:
    if upload is not None and upload.filename:
        return _yaml_text(await upload.read(MAX_SPEC_BYTES + 1))
    return text


def _problems(exc: MedarenaError) -> list[str]:
    return [str(p) for p in exc.problems] if isinstance(exc, SpecError) else [str(exc)]


@router.get("/challenges-new", response_class=HTMLResponse, include_in_schema=False)
def new_page(request: Request, templates: TemplatesDep, user: CurrentUser) -> HTMLResponse:
    if not user.is_admin:
        raise HTTPException(403, "only platform admins create challenges")
    return _edit_page(request, templates, slug=None, text="")


@router.post("/challenges-new", include_in_schema=False, dependencies=_CSRF)
async def new_submit(
    request: Request,
    templates: TemplatesDep,
    db: DbSession,
    user: CurrentUser,
    spec_text: Annotated[str, Form()] = "",
    spec_file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    if not user.is_admin:
        raise HTTPException(403, "only platform admins create challenges")

    def save(spec: ChallengeSpec) -> str:
        return service.create_challenge(db, spec, actor_id=user.id).slug

    return await _save_spec_form(request, templates, db, None, spec_text, spec_file, save)


@router.get("/challenges/{slug}/edit", response_class=HTMLResponse, include_in_schema=False)
def edit_page(
    slug: str, request: Request, templates: TemplatesDep, db: DbSession, user: CurrentUser
) -> HTMLResponse:
    ch = _challenge(db, slug)
    if not can_organize(db, user, ch.id):
        raise HTTPException(403, f"only organizers of {slug!r} edit its spec")
    return _edit_page(request, templates, slug=slug, text=service.load_spec(ch).to_yaml())


@router.post("/challenges/{slug}/edit", include_in_schema=False, dependencies=_CSRF)
async def edit_submit(
    slug: str,
    request: Request,
    templates: TemplatesDep,
    db: DbSession,
    user: CurrentUser,
    spec_text: Annotated[str, Form()] = "",
    spec_file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    ch = _challenge(db, slug)
    if not can_organize(db, user, ch.id):
        raise HTTPException(403, f"only organizers of {slug!r} edit its spec")

    def save(spec: ChallengeSpec) -> str:
        service.update_challenge(db, slug, spec, actor_id=user.id)
        return slug

    return await _save_spec_form(request, templates, db, slug, spec_text, spec_file, save)


async def _save_spec_form(
    request: Request,
    templates: Jinja2Templates,
    db: Session,
    slug: str | None,
    spec_text: str,
    spec_file: UploadFile | None,
    save: Callable[[ChallengeSpec], str],
) -> Response:
    """Parse the posted spec and ``save`` it (returns the slug); on error, the form again."""
    text = spec_text
    try:
        text = await _form_spec(spec_text, spec_file)
        saved = save(parse_spec(text, "spec"))
        db.commit()
    except MedarenaError as exc:
        db.rollback()
        return _edit_page(
            request,
            templates,
            slug=slug,
            text=text,
            problems=_problems(exc),
            status=http_status(exc),
        )
    return RedirectResponse(f"/challenges/{saved}", status_code=303)

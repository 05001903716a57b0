"""Leaderboards over HTTP: JSON, CSV and SVG exports per phase and track, combined, and the page.

Visibility follows the phase (public, private until close, hidden); organizers, reviewers
and admins always see the boards. A board the caller may not see answers 404, the same as
one that does not exist. Boards come from :func:`leaderboard.cached_leaderboard`: computed
once per change of their inputs (a scored submission, a spec update), not per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from medarena.accounts.roles import can_review
from medarena.challenges import leaderboard as lb
from medarena.challenges import service
from medarena.datasets.catalogue import Catalogue, case_records
from medarena.db.platform_models import User
from medarena.errors import MedarenaError
from medarena.web.deps import CatalogueDep, DbSession, OptionalUser, TemplatesDep

router = APIRouter()


def _board(
    db: Session, cat: Catalogue, slug: str, phase: str, track: str, user: User | None
) -> lb.Leaderboard:
    try:
        ch = service.get_challenge(db, slug)
        spec = service.load_spec(ch)
        ph = spec.phase(phase)
        tr = spec.track(track)
        if not lb.board_visible(ph, organizer=can_review(db, user, ch.id)):
            raise HTTPException(404, f"no leaderboard {phase}/{track} to show")
        return lb.cached_leaderboard(
            db,
            cat.store,
            spec,
            ch.id,
            ch.spec_revision,
            phase,
            track,
            cache_dir=Path(cat.settings.data_dir) / "cache" / "leaderboards",
            attributes=lambda: lb.case_attributes(case_records(cat, tr.dataset)),
        )
    except MedarenaError as exc:
        raise HTTPException(404 if "no challenge" in str(exc) else 400, str(exc)) from None


@router.get("/api/v1/challenges/{slug}/leaderboards/{phase}/combined", tags=["leaderboards"])
def api_combined(
    slug: str, phase: str, db: DbSession, cat: CatalogueDep, user: OptionalUser
) -> dict[str, Any]:
    """Teams ranked by their mean rank over the phase's tracks."""
    try:
        spec = service.load_spec(service.get_challenge(db, slug))
        tracks = spec.tracks_of(spec.phase(phase))
    except MedarenaError as exc:
        raise HTTPException(404, str(exc)) from None
    boards = [_board(db, cat, slug, phase, t.slug, user) for t in tracks]
    return lb.combined_leaderboard(boards).model_dump(mode="json")


@router.get("/api/v1/challenges/{slug}/leaderboards/{phase}/{track}", tags=["leaderboards"])
def api_board(
    slug: str,
    phase: str,
    track: str,
    db: DbSession,
    cat: CatalogueDep,
    user: OptionalUser,
    format: str = "json",
) -> Any:
    """One board as JSON (default), CSV (``format=csv``) or an SVG plot (``format=svg``)."""
    board = _board(db, cat, slug, phase, track, user)
    if format == "csv":
        return Response(
            lb.board_csv(board),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{slug}-{phase}-{track}.csv"'},
        )
    if format == "svg":
        return Response(lb.board_svg(board), media_type="image/svg+xml")
    if format != "json":
        raise HTTPException(400, "format must be json, csv or svg")
    return lb.board_json(board)


@router.get(
    "/challenges/{slug}/leaderboard/{phase}/{track}",
    response_class=HTMLResponse,
    include_in_schema=False,
)
def board_page(
    request: Request,
    slug: str,
    phase: str,
    track: str,
    db: DbSession,
    cat: CatalogueDep,
    user: OptionalUser,
    templates: TemplatesDep,
) -> Response:
    board = _board(db, cat, slug, phase, track, user)
    return templates.TemplateResponse(
        request,
        "leaderboard.html",
        {"board": board, "svg": lb.board_svg(board), "slug": slug},
    )

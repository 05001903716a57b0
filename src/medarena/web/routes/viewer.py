"""Submission detail extras: metric distributions and the slice viewer of image cases.

Pages and images only (no API): the per-case viewer list, one case's slice viewer (image
with reference and prediction overlays stacked, and the heat map of the case's stored
explanation when there is one, a range input to step through slices),
the PNG of one layer of one slice, and the SVG of the metric distributions. Who may see
which case is decided by :mod:`medarena.challenges.viewer` and
:func:`medarena.challenges.submissions.submission_detail`; every refusal is a 404.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from medarena.challenges import explanations, submissions, viewer
from medarena.db.platform_models import User
from medarena.errors import InputError, MedarenaError, NotFoundError
from medarena.storage import LocalObjectStore
from medarena.web.deps import CatalogueDep, CurrentUser, DbSession, TemplatesDep

router = APIRouter()
# rendered slices and plots never change for a given submission and case; keep them private
_CACHE = {"Cache-Control": "private, max-age=3600"}


def _http(exc: MedarenaError) -> HTTPException:
    if isinstance(exc, NotFoundError):
        return HTTPException(404, str(exc))
    if isinstance(exc, InputError):
        return HTTPException(400, str(exc))
    return HTTPException(403, str(exc))


def _detail(db: Session, store: LocalObjectStore, submission_id: int, user: User) -> dict[str, Any]:
    try:
        sub = submissions.get_visible_submission(db, submission_id, user)
        return submissions.submission_detail(db, store, sub, user)
    except MedarenaError as exc:
        raise _http(exc) from None


@router.get("/submissions/{submission_id}/distributions.svg", include_in_schema=False)
def distributions(
    submission_id: int, user: CurrentUser, db: DbSession, cat: CatalogueDep
) -> Response:
    """SVG of the metric distributions over the cases the user may see per case."""
    detail = _detail(db, cat.store, submission_id, user)
    if not detail.get("cases"):
        raise HTTPException(404, "no per-case results to plot for this submission")
    svg = viewer.distributions_svg(detail["cases"])
    return Response(svg, media_type="image/svg+xml", headers=_CACHE)


@router.get(
    "/submissions/{submission_id}/viewer", response_class=HTMLResponse, include_in_schema=False
)
def viewer_index(
    request: Request,
    submission_id: int,
    user: CurrentUser,
    db: DbSession,
    cat: CatalogueDep,
    templates: TemplatesDep,
) -> Response:
    """Distributions (inline SVG) and the list of cases to open in the slice viewer."""
    detail = _detail(db, cat.store, submission_id, user)
    try:
        sub = submissions.get_visible_submission(db, submission_id, user)
        ctx = viewer.viewer_context(db, sub, user)
    except MedarenaError as exc:
        raise _http(exc) from None
    cases = detail.get("cases")
    svg = viewer.distributions_svg(cases, inline=True) if cases else None
    index = explanations.explanation_index(db, cat.store, sub) if ctx.case_keys else None
    explained = set(index.get("cases", {})) & set(ctx.case_keys) if index else set()
    return templates.TemplateResponse(
        request,
        "submission_viewer.html",
        {
            "d": detail,
            "ctx": ctx,
            "svg": svg,
            "explained": explained,
            "explained_title": explanations.METHOD_TITLES.get(str((index or {}).get("method"))),
            "explanation_error": bool(index and index.get("error")),
        },
    )


@router.get(
    "/submissions/{submission_id}/cases/{case_key}",
    response_class=HTMLResponse,
    include_in_schema=False,
)
def case_page(
    request: Request,
    submission_id: int,
    case_key: str,
    user: CurrentUser,
    db: DbSession,
    cat: CatalogueDep,
    templates: TemplatesDep,
    axis: int = 2,
    index: int | None = None,
    channel: int = 0,
) -> Response:
    """The slice viewer of one case: image, reference and prediction overlays, explanation.

    ``axis`` and ``index`` (default: the middle slice) come from the query string, so the
    page's form picks a slice without JavaScript too.
    """
    try:
        sub = submissions.get_visible_submission(db, submission_id, user)
        case = viewer.viewer_case(db, sub, user, case_key)
        shape = viewer.case_shape(cat.store, case, Path(cat.settings.data_dir))
        viewer.check_slice(shape, axis, 0)  # the axis first: the default index depends on it
        index = shape[axis] // 2 if index is None else index
        viewer.check_slice(shape, axis, index)
        case.channel_digest(channel)  # in range
        explanation = explanations.case_explanation(db, cat.store, sub, case_key)
    except MedarenaError as exc:
        raise _http(exc) from None
    n = shape[axis]
    return templates.TemplateResponse(
        request,
        "submission_case.html",
        {
            "sub": sub,
            "case": case,
            "axis": axis,
            "n": n,
            "index": index,
            "channel": channel,
            "channels": [name for name, _ in case.channels],
            "has_reference": case.label_digest is not None,
            "has_prediction": case.label_maps,
            "explanation": explanation,
            "heat_legend": viewer.heat_legend_css(),
            "shape": shape,
        },
    )


@router.get("/submissions/{submission_id}/cases/{case_key}/slice.png", include_in_schema=False)
async def slice_png(
    submission_id: int,
    case_key: str,
    user: CurrentUser,
    db: DbSession,
    cat: CatalogueDep,
    axis: int = 2,
    index: int = 0,
    layer: str = "image",
    channel: int = 0,
    map_index: int = Query(0, alias="map"),
) -> Response:
    """One layer of one slice as PNG (image grey levels; reference, prediction and
    explanation RGBA; ``map`` picks the explanation's map)."""

    def render() -> bytes:
        sub = submissions.get_visible_submission(db, submission_id, user)
        return viewer.render_layer(
            db,
            cat.store,
            sub,
            user,
            case_key,
            layer,
            axis,
            index,
            Path(cat.settings.data_dir),
            channel,
            map_index,
        )

    try:
        png = await run_in_threadpool(render)
    except MedarenaError as exc:
        raise _http(exc) from None
    return Response(png, media_type="image/png", headers=_CACHE)

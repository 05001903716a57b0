"""The model registry in the browser and /api/v1/lab/models: cards, curves, download, submit.

Pages: /lab/models (the models you may see), /lab/models/{ref} (model card, validation
metrics overall and per subgroup, training curves as SVG, download, and a one-click
submit form listing the phases where your team may submit a model to a matching track),
GET /lab/models/{ref}/download (a zip of model.onnx, model_card.json, recipe.yaml),
POST /lab/models/{ref}/submit (form, CSRF). API: GET /api/v1/lab/models,
GET /api/v1/lab/models/{ref}, GET /api/v1/lab/models/{ref}/download,
POST /api/v1/lab/models/{ref}/submit ``{"challenge", "track", "phase"}``.

Who sees a model (:mod:`medarena.lab.submit`): admins all; a user the models of their own
lab runs. Anyone else gets 404, as for a model that does not exist. ``ref`` is
``NAME:VERSION`` (or ``NAME``: the latest version).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from medarena.accounts.errors import PermissionDenied
from medarena.challenges.submissions import LimitReached, SubmissionRefused
from medarena.errors import MedarenaError, NotFoundError
from medarena.lab.registry import ModelInfo
from medarena.lab.submit import (
    destinations,
    download_zip,
    get_visible_model,
    submit_registry_model,
    visible_models,
)
from medarena.web.deps import CatalogueDep, CurrentUser, DbSession, TemplatesDep, verify_csrf

router = APIRouter()
_CSRF = [Depends(verify_csrf)]


def _http(exc: MedarenaError) -> HTTPException:
    if isinstance(exc, NotFoundError):
        return HTTPException(404, str(exc))
    if isinstance(exc, PermissionDenied):
        return HTTPException(403, str(exc))
    if isinstance(exc, LimitReached):
        return HTTPException(429, str(exc))
    problems = getattr(exc, "problems", None)
    if isinstance(exc, SubmissionRefused) and problems:
        return HTTPException(400, {"message": str(exc), "problems": list(problems)})
    return HTTPException(400, str(exc))


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _summary(m: ModelInfo) -> dict[str, Any]:
    return {
        "model": m.ref,
        "name": m.name,
        "version": m.version,
        "task": m.task,
        "dataset": m.dataset,
        "split": m.split,
        "metrics": {k: _finite(v) for k, v in m.metrics.items()},
        "onnx": m.onnx_digest is not None,
        "created_at": m.created_at,
        "url": f"/lab/models/{m.ref}",
    }


def _detail(m: ModelInfo) -> dict[str, Any]:
    return {
        **_summary(m),
        "dataset_version": m.dataset_version,
        "onnx_size": m.onnx_size,
        "export": m.export,
        "model_card": m.model_card,
        "curves": m.curves,
        "recipe": m.recipe_yaml,
        "download_url": f"/lab/models/{m.ref}/download",
    }


# ---------------------------------------------------------------------------- curves


def _series(curves: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Per-epoch series: the loss and every numeric validation metric."""
    out: dict[str, list[tuple[float, float]]] = {}
    skip = {"epoch", "step", "lr", "stopped"}
    for row in curves:
        epoch = row.get("epoch")
        if not isinstance(epoch, int | float):
            continue
        for k, v in row.items():
            if k in skip or not isinstance(v, int | float) or isinstance(v, bool):
                continue
            if math.isfinite(v):
                out.setdefault(k, []).append((float(epoch), float(v)))
    return out


def curve_charts(curves: list[dict[str, Any]], width: int = 320, height: int = 160) -> list[dict]:
    """One small SVG line chart per series: its name, points attribute and axis labels."""
    charts = []
    pad = 28
    for name, pts in _series(curves).items():
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        dx, dy = (x1 - x0) or 1.0, (y1 - y0) or 1.0
        coords = [
            (
                pad + (x - x0) / dx * (width - 2 * pad),
                height - pad - (y - y0) / dy * (height - 2 * pad),
            )
            for x, y in pts
        ]
        charts.append(
            {
                "name": name,
                "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in coords),
                "dots": coords,
                "width": width,
                "height": height,
                "pad": pad,
                "y_min": f"{y0:.4g}",
                "y_max": f"{y1:.4g}",
                "x_min": f"{x0:g}",
                "x_max": f"{x1:g}",
                "last": f"{ys[-1]:.4g}",
            }
        )
    return charts


# ---------------------------------------------------------------------------- API


class SubmitIn(BaseModel):
    challenge: str = Field(min_length=1, max_length=200)
    track: str = Field(min_length=1, max_length=200)
    phase: str = Field(min_length=1, max_length=200)


@router.get("/api/v1/lab/models", tags=["lab"])
def api_models(cat: CatalogueDep, db: DbSession, user: CurrentUser) -> list[dict[str, Any]]:
    """The registry models you may see (admins: all), by name then version."""
    return [_summary(m) for m in visible_models(cat, db, user)]


@router.get("/api/v1/lab/models/{ref}", tags=["lab"])
def api_model(ref: str, cat: CatalogueDep, db: DbSession, user: CurrentUser) -> dict[str, Any]:
    """A model: card, metrics, curves, recipe, and where you may submit it."""
    try:
        m = get_visible_model(cat, db, user, ref)
    except MedarenaError as exc:
        raise _http(exc) from None
    out = _detail(m)
    out["destinations"] = [vars(d) | {"value": d.value} for d in destinations(db, user, m)]
    return out


def _download(ref: str, cat: Any, db: Any, user: Any) -> Response:
    try:
        m = get_visible_model(cat, db, user, ref)
        data = download_zip(cat, m)
    except MedarenaError as exc:
        raise _http(exc) from None
    name = f"{m.name}-v{m.version}.zip"
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/api/v1/lab/models/{ref}/download", tags=["lab"])
def api_download(ref: str, cat: CatalogueDep, db: DbSession, user: CurrentUser) -> Response:
    """A zip of model.onnx, model_card.json and recipe.yaml."""
    return _download(ref, cat, db, user)


@router.post("/api/v1/lab/models/{ref}/submit", tags=["lab"], status_code=201, dependencies=_CSRF)
def api_submit(
    ref: str, body: SubmitIn, cat: CatalogueDep, db: DbSession, user: CurrentUser
) -> dict[str, Any]:
    """Submit the model to a challenge phase for your team (the usual checks and quotas)."""
    try:
        m = get_visible_model(cat, db, user, ref)
        db.rollback()  # end the read transaction: submit opens sessions of its own
        sub = submit_registry_model(
            cat, m, user_id=user.id, challenge=body.challenge, track=body.track, phase=body.phase
        )
    except MedarenaError as exc:
        raise _http(exc) from None
    return {"id": sub.id, "status": sub.status, "status_url": f"/api/v1/submissions/{sub.id}"}


# ---------------------------------------------------------------------------- pages


@router.get("/lab/models", response_class=HTMLResponse, include_in_schema=False)
def models_page(
    request: Request, cat: CatalogueDep, db: DbSession, user: CurrentUser, templates: TemplatesDep
) -> Response:
    models = [_summary(m) for m in visible_models(cat, db, user)]
    return templates.TemplateResponse(
        request, "lab_models.html", {"models": models, "everyone": user.is_admin}
    )


@router.get("/lab/models/{ref}", response_class=HTMLResponse, include_in_schema=False)
def model_page(
    request: Request,
    ref: str,
    cat: CatalogueDep,
    db: DbSession,
    user: CurrentUser,
    templates: TemplatesDep,
) -> Response:
    try:
        m = get_visible_model(cat, db, user, ref)
    except MedarenaError as exc:
        raise _http(exc) from None
    card = m.model_card
    return templates.TemplateResponse(
        request,
        "lab_model.html",
        {
            "m": _detail(m),
            "card": card,
            "subgroups": (card.get("metrics") or {}).get("subgroups") or [],
            "charts": curve_charts(m.curves),
            "destinations": destinations(db, user, m),
        },
    )


@router.get("/lab/models/{ref}/download", include_in_schema=False)
def download_page(ref: str, cat: CatalogueDep, db: DbSession, user: CurrentUser) -> Response:
    return _download(ref, cat, db, user)


@router.post("/lab/models/{ref}/submit", include_in_schema=False, dependencies=_CSRF)
def submit_form(
    request: Request,
    ref: str,
    cat: CatalogueDep,
    db: DbSession,
    user: CurrentUser,
    templates: TemplatesDep,
    target: str = Form(..., description="challenge/track/phase"),
) -> Response:
    """The one-click submission: the same service and checks as an upload."""
    challenge, _, rest = target.partition("/")
    track, _, phase = rest.partition("/")
    try:
        m = get_visible_model(cat, db, user, ref)
    except MedarenaError as exc:
        raise _http(exc) from None
    db.rollback()
    try:
        submit_registry_model(
            cat, m, user_id=user.id, challenge=challenge, track=track, phase=phase
        )
    except MedarenaError as exc:
        return templates.TemplateResponse(
            request,
            "challenge_message.html",
            {
                "title": "Submission refused",
                "message": str(exc),
                "back": f"/lab/models/{m.ref}",
            },
            status_code=400,
        )
    return RedirectResponse(f"/challenges/{challenge}/submissions", status_code=303)

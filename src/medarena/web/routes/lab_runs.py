"""The lab's training runs in the browser and /api/v1/lab/runs.

Pages: /lab (my runs, links to the builder and the models), /lab/runs/new (paste a
recipe, validate, launch), /lab/runs/{id} (status, progress bar, live chart of the loss per
step and the validation metric per epoch, cancel). API: POST /api/v1/lab/runs
``{"recipe": "<yaml>"}`` -> 201 ``{"id", "url", "status"}`` or 422 ``{"problems": [...]}``;
GET /api/v1/lab/runs, GET /api/v1/lab/runs/{id} (with curve points), POST
/api/v1/lab/runs/{id}/cancel. A run is visible to its owner and platform admins only;
anyone else gets 404, as for a run that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from medarena.errors import InputError, NotFoundError
from medarena.lab.recipe import RecipeError
from medarena.lab.runs import (
    MAX_RECIPE_BYTES,
    cancel_run,
    check_recipe,
    get_run,
    launch_run,
    list_runs,
    run_public,
)
from medarena.web.deps import CurrentUser, DbSession, SettingsDep, TemplatesDep, verify_csrf

router = APIRouter()


def _problems(exc: RecipeError) -> list[dict[str, Any]]:
    return [
        {"line": p.line, "field": p.field, "message": p.message, "text": str(p)}
        for p in exc.problems
    ]


def _refused(exc: RecipeError) -> JSONResponse:
    return JSONResponse(
        {"detail": "the recipe cannot be launched", "problems": _problems(exc)}, status_code=422
    )


class RunIn(BaseModel):
    recipe: str = Field(
        min_length=1, max_length=MAX_RECIPE_BYTES, description="The recipe as YAML text."
    )


# ---------------------------------------------------------------------------- API


@router.post("/api/v1/lab/runs", tags=["lab"], status_code=201, dependencies=[Depends(verify_csrf)])
def api_launch_run(body: RunIn, db: DbSession, user: CurrentUser, settings: SettingsDep) -> Any:
    """Launch a training run of ``recipe``; 422 lists the recipe's problems with their lines."""
    try:
        run = launch_run(db, user, body.recipe, data_dir=settings.data_dir)
    except RecipeError as exc:
        db.rollback()
        return _refused(exc)
    db.commit()
    return {"id": run.id, "url": f"/lab/runs/{run.id}", "status": run.status}


@router.get("/api/v1/lab/runs", tags=["lab"])
def api_list_runs(
    db: DbSession,
    user: CurrentUser,
    everyone: Annotated[bool, Query(description="Admins: every user's runs.")] = False,
) -> list[dict[str, Any]]:
    """Your training runs, newest first (without curve points)."""
    return [run_public(r) for r in list_runs(db, user, everyone=everyone)]


@router.get("/api/v1/lab/runs/{run_id}", tags=["lab"])
def api_get_run(run_id: int, db: DbSession, user: CurrentUser) -> dict[str, Any]:
    """A run's status, last progress and curve points (loss per step, metric per epoch)."""
    try:
        return run_public(get_run(db, user, run_id), points=True)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/api/v1/lab/runs/{run_id}/cancel", tags=["lab"], dependencies=[Depends(verify_csrf)])
def api_cancel_run(run_id: int, db: DbSession, user: CurrentUser) -> dict[str, Any]:
    """Cancel a queued run, or stop a running one after its current step."""
    try:
        run = cancel_run(db, user, run_id)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except InputError as exc:
        raise HTTPException(409, str(exc)) from None
    db.commit()
    return run_public(run)


# ---------------------------------------------------------------------------- pages


@router.get("/lab", response_class=HTMLResponse, include_in_schema=False)
def lab_page(
    request: Request, db: DbSession, user: CurrentUser, templates: TemplatesDep
) -> HTMLResponse:
    runs = [run_public(r) for r in list_runs(db, user)]
    return templates.TemplateResponse(request, "lab_index.html", {"runs": runs})


def _new_page(
    request: Request,
    templates: TemplatesDep,
    recipe: str = "",
    *,
    problems: list[dict[str, Any]] | None = None,
    ok: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "lab_run_new.html",
        {"recipe": recipe, "problems": problems or [], "ok": ok},
        status_code=status_code,
    )


@router.get("/lab/runs/new", response_class=HTMLResponse, include_in_schema=False)
def new_run_page(request: Request, user: CurrentUser, templates: TemplatesDep) -> HTMLResponse:
    return _new_page(request, templates)


@router.post("/lab/runs", include_in_schema=False, dependencies=[Depends(verify_csrf)])
def new_run_form(
    request: Request,
    db: DbSession,
    user: CurrentUser,
    settings: SettingsDep,
    templates: TemplatesDep,
    recipe: Annotated[str, Form(max_length=MAX_RECIPE_BYTES)] = "",
    action: Annotated[str, Form()] = "launch",
) -> Response:
    """Validate (``action=validate``) or launch the pasted recipe; problems shown inline."""
    try:
        if action == "validate":
            r = check_recipe(db, recipe)
            msg = f"The recipe is valid: {r.name} ({r.task.type}, {r.task.spatial_dims}D)."
            return _new_page(request, templates, recipe, ok=msg)
        run = launch_run(db, user, recipe, data_dir=settings.data_dir)
    except RecipeError as exc:
        db.rollback()
        return _new_page(request, templates, recipe, problems=_problems(exc), status_code=422)
    db.commit()
    return RedirectResponse(f"/lab/runs/{run.id}", status_code=303)


@router.get("/lab/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
def run_page(
    request: Request, run_id: int, db: DbSession, user: CurrentUser, templates: TemplatesDep
) -> HTMLResponse:
    try:
        run = get_run(db, user, run_id)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    return templates.TemplateResponse(
        request,
        "lab_run.html",
        {"run": run_public(run), "recipe": run.recipe_yaml},
    )


@router.post(
    "/lab/runs/{run_id}/cancel", include_in_schema=False, dependencies=[Depends(verify_csrf)]
)
def cancel_form(run_id: int, db: DbSession, user: CurrentUser) -> Response:
    try:
        cancel_run(db, user, run_id)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except InputError as exc:
        raise HTTPException(409, str(exc)) from None
    db.commit()
    return RedirectResponse(f"/lab/runs/{run_id}", status_code=303)

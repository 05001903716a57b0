"""The visual recipe builder: /lab/builder and the JSON it is built from.

- ``GET /api/v1/lab/blocks``: the block registry with typed parameters, and the task,
  trainer and export settings, as form data (medarena.lab.builder.block_catalogue).
- ``GET /api/v1/lab/datasets``: datasets, splits, trainable subsets (never a hidden one)
  and the case labels usable as targets.
- ``POST /api/v1/lab/recipes/validate``: ``{"recipe": yaml}`` -> ``{"ok", "problems",
  "recipe", "data"}``; each problem has its YAML line, field, value, message and
  suggestion; a valid recipe comes back normalised, as YAML and as data.

All need a login. The page assembles a recipe in the browser (static/lab_builder.js),
validates it here and launches it with ``POST /api/v1/lab/runs`` (routes.lab_runs).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field

from medarena.lab.builder import block_catalogue, check_recipe, dataset_choices
from medarena.web.deps import CatalogueDep, CurrentUser, TemplatesDep, verify_csrf

router = APIRouter()

RUNS_PATH = "/api/v1/lab/runs"
MAX_RECIPE_CHARS = 200_000


class RecipeIn(BaseModel):
    recipe: str = Field(
        ..., max_length=MAX_RECIPE_CHARS, description="The recipe as YAML text (a file's text)."
    )


@router.get("/api/v1/lab/blocks", tags=["lab"])
def api_blocks(user: CurrentUser) -> dict[str, Any]:
    """The block registry and recipe settings, each parameter typed (for building forms)."""
    return block_catalogue()


@router.get("/api/v1/lab/datasets", tags=["lab"])
def api_datasets(user: CurrentUser, cat: CatalogueDep) -> list[dict[str, Any]]:
    """Datasets with splits, the subsets a recipe may use and the labels usable as targets."""
    return dataset_choices(cat)


@router.post("/api/v1/lab/recipes/validate", tags=["lab"], dependencies=[Depends(verify_csrf)])
def api_validate(body: RecipeIn, user: CurrentUser, cat: CatalogueDep) -> dict[str, Any]:
    """Check a recipe as `medarena lab validate` does, and its data against the catalogue.

    Always 200 for a recipe that was read: ``ok`` says whether it can be launched.
    """
    result = check_recipe(body.recipe, cat)
    return {
        "ok": result.ok,
        "problems": [asdict(p) for p in result.problems],
        "recipe": result.recipe,
        "data": result.data,
    }


def _can_launch(request: Request) -> bool:
    """Whether the app serves ``POST /api/v1/lab/runs`` (routes.lab_runs), which Launch uses."""
    return any(
        str(ctx.path) == RUNS_PATH and "POST" in (ctx.methods or ())
        for ctx in iter_route_contexts(request.app.routes)
    )


@router.get("/lab/builder", response_class=HTMLResponse, include_in_schema=False)
def builder_page(request: Request, user: CurrentUser, templates: TemplatesDep) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "lab_builder.html", {"can_launch": _can_launch(request), "runs_path": RUNS_PATH}
    )

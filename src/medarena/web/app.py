"""The FastAPI application: server-rendered pages and the /api/v1 JSON API.

Routes live in routers under medarena.web.routes, one module per resource, listed in
``ROUTER_MODULES``; they parse input and call package apis. Resources (settings,
catalogue with database sessions and object store, templates) live on ``app.state``
and reach routes through the typed dependencies in medarena.web.deps.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from medarena import __version__
from medarena.config import Settings
from medarena.datasets.catalogue import Catalogue

_HERE = Path(__file__).parent
log = logging.getLogger(__name__)

# What a client is told when the database refuses a write as a duplicate. The driver's own
# message is not passed on: it holds SQL and the offending values.
CONFLICT_DETAIL = (
    "conflict: the database refused this change because it clashes with data stored "
    "meanwhile (a name or entry that must be unique exists already, or a record it refers "
    "to is gone); nothing was changed by this request. Reload to see the stored state, then "
    "retry or choose another name."
)

# Router modules, each exposing ``router``; included in this order, then every other module
# of medarena.web.routes in name order (see router_modules), so a new page needs no edit here.
ROUTER_MODULES = (
    "medarena.web.routes.datasets",
    "medarena.web.routes.auth",
    "medarena.web.routes.tokens",
    "medarena.web.routes.challenges",
    "medarena.web.routes.submissions",
    "medarena.web.routes.leaderboards",
    "medarena.web.routes.viewer",
    "medarena.web.routes.organizer",
)


def router_modules() -> list[str]:
    """ROUTER_MODULES, then the package's remaining modules in name order."""
    package = importlib.import_module("medarena.web.routes")
    found = sorted(
        f"{package.__name__}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    )
    return list(ROUTER_MODULES) + [name for name in found if name not in ROUTER_MODULES]


async def _integrity_conflict(request: Request, exc: Exception) -> JSONResponse:
    """A duplicate insert the services did not pre-check (e.g. two creates racing): a 409.

    The request's session is closed by ``get_db`` on the way out, which rolls its
    transaction back, so nothing of this request is stored.
    """
    cause = type(getattr(exc, "orig", None) or exc).__name__
    log.warning(
        "409 for %s %s: the database refused a duplicate (%s)",
        request.method,
        request.url.path,
        cause,
    )
    return JSONResponse({"detail": CONFLICT_DETAIL}, status_code=409)


def create_app(settings: Settings, catalogue: Catalogue) -> FastAPI:
    """Build the app around an open catalogue (created by the caller, closed by it)."""
    app = FastAPI(title="medarena", version=__version__, openapi_url="/openapi.json")
    app.state.settings = settings
    app.state.catalogue = catalogue
    app.state.templates = Jinja2Templates(directory=str(_HERE / "templates"))
    app.add_exception_handler(DbIntegrityError, _integrity_conflict)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:  # on the event loop: answers while threads are busy
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/datasets", status_code=307)

    for name in router_modules():
        app.include_router(importlib.import_module(name).router)
    return app

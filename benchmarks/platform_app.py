"""An app factory for running the medarena web app under ``uvicorn --workers N --factory``.

``medarena serve`` runs one uvicorn process; uvicorn's own ``--workers`` needs an import
string, and each worker process must open its own catalogue (database engine, store):

    MEDARENA_DATA_DIR=... uvicorn --factory --app-dir benchmarks platform_app:app --workers 2
"""

from __future__ import annotations

from fastapi import FastAPI

from medarena.config import get_settings
from medarena.datasets.catalogue import open_catalogue
from medarena.web.app import create_app


def app() -> FastAPI:
    """The web app over the catalogue of the environment's settings (MEDARENA_DATA_DIR ...)."""
    settings = get_settings()
    return create_app(settings, open_catalogue(settings))

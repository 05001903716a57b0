"""Fixtures of the accounts tests: a migrated database (SQLite and PostgreSQL) and an app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, open_catalogue
from medarena.db.engine import create_engine_for, session_factory, upgrade
from medarena.web.app import create_app

SECRET = "x" * 48


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on a freshly migrated database."""
    upgrade(db_url)
    engine = create_engine_for(db_url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def catalogue(db_url: str, tmp_path: Path) -> Iterator[Catalogue]:
    settings = get_settings(data_dir=tmp_path / "data", database_url=db_url, secret_key=SECRET)
    cat = open_catalogue(settings)
    try:
        yield cat
    finally:
        cat.close()


@pytest.fixture
def client(catalogue: Catalogue) -> Iterator[TestClient]:
    """A TestClient on http://testserver (cookies without the Secure flag)."""
    with TestClient(create_app(catalogue.settings, catalogue)) as c:
        yield c

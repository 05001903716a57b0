"""Fixtures for data-hub tests: settings and catalogues on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from medarena.config import Settings, get_settings
from medarena.datasets.catalogue import Catalogue, open_catalogue


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return get_settings(data_dir=tmp_path / "data")


@pytest.fixture
def catalogue(settings: Settings) -> Iterator[Catalogue]:
    cat = open_catalogue(settings)
    yield cat
    cat.close()


@pytest.fixture
def any_catalogue(db_url: str, tmp_path: Path) -> Iterator[Catalogue]:
    """A catalogue on SQLite and, as a second parameter, on PostgreSQL."""
    s = get_settings(data_dir=tmp_path / "data", database_url=db_url, secret_key="s" * 48)
    cat = open_catalogue(s)
    yield cat
    cat.close()

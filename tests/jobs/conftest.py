"""Fixtures of the job tests: a migrated database (SQLite and PostgreSQL) and its sessions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from jobtest_handlers import JobsDb

from medarena.db.engine import create_engine_for, session_factory, upgrade


@pytest.fixture
def jobs_db(db_url: str) -> Iterator[JobsDb]:
    """A migrated database on each backend, with a session factory."""
    upgrade(db_url)
    engine = create_engine_for(db_url)
    try:
        yield JobsDb(db_url, engine, session_factory(engine))
    finally:
        engine.dispose()

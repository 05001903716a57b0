"""Fixtures shared by the whole suite: isolated settings and the two databases."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get(
    "MEDARENA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_pg_state: dict[str, str | None] = {}


def _postgres_problem() -> str | None:
    """None when the test PostgreSQL server answers, else why not (checked once)."""
    if "problem" not in _pg_state:
        try:
            import psycopg

            dsn = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                conn.execute("select 1")
            _pg_state["problem"] = None
        except Exception as exc:  # any failure means: not reachable
            _pg_state["problem"] = f"{type(exc).__name__}: {exc}"
    return _pg_state["problem"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    problem = _pg_state.get("problem")
    if problem:
        terminalreporter.write_sep(
            "!", "PostgreSQL NOT REACHABLE: postgres tests did not run", red=True
        )
        terminalreporter.write_line(f"{POSTGRES_URL}: {problem}", red=True)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own data dir and no inherited MEDARENA_ configuration."""
    for key in list(os.environ):
        if key.startswith("MEDARENA_") and key != "MEDARENA_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("MEDARENA_DATA_DIR", str(tmp_path / "medarena-data"))


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    """Commands run in-process configure the root logger; undo it after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the test PostgreSQL server's database.

    In CI (CI=true) an unreachable server fails the test; elsewhere it is skipped
    and the run ends with a loud notice.
    """
    problem = _postgres_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but not reachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'drop schema "{schema}" cascade')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: SQLite file, then PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("postgres_url"))

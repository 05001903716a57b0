"""Timestamps are aware UTC on every backend, whatever offset they were written with.

SQLite has no time zone type (it keeps the wall time and drops the offset) and PostgreSQL
answers in the session's TimeZone; the platform must read one instant either way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from medarena.db.engine import create_engine_for, session_factory, upgrade
from medarena.db.platform_models import User

UTC = dt.UTC
PLUS5 = dt.timezone(dt.timedelta(hours=5), "+05:00")
T0 = dt.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """A migrated database; PostgreSQL sessions use a zone that is not UTC."""
    upgrade(db_url)
    engine = create_engine_for(db_url)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _zone(dbapi_conn: object, _record: object) -> None:
            with dbapi_conn.cursor() as cur:  # type: ignore[attr-defined]
                cur.execute("SET TIME ZONE 'America/St_Johns'")  # -03:30 / -02:30

    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


def _user(s: Session, email: str, created: dt.datetime) -> None:
    s.add(User(email=email, display_name=email, password_hash="x", created_at=created))


def test_read_back_as_aware_utc_instants(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        _user(s, "utc@example.org", T0)
        _user(s, "plus5@example.org", T0.astimezone(PLUS5))
        _user(s, "naive@example.org", T0.replace(tzinfo=None))  # naive means UTC
    with sessions() as s:
        got = {e: c for e, c in s.execute(select(User.email, User.created_at))}
    for email, value in got.items():
        assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0), email
        assert value == T0, email
        assert value.isoformat() == "2030-06-01T12:00:00+00:00", email


def test_comparisons_in_sql_use_the_instant(sessions: sessionmaker[Session]) -> None:
    with sessions() as s, s.begin():
        _user(s, "early@example.org", T0.astimezone(PLUS5))  # 17:00 +05:00
        _user(s, "late@example.org", T0 + dt.timedelta(hours=1))  # 13:00 UTC
    bound = (T0 + dt.timedelta(minutes=30)).astimezone(PLUS5)  # 17:30 +05:00
    with sessions() as s:
        after = s.scalars(select(User.email).where(User.created_at > bound)).all()
        ordered = s.scalars(select(User.email).order_by(User.created_at)).all()
    assert after == ["late@example.org"]
    assert ordered == ["early@example.org", "late@example.org"]

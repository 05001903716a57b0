"""Browser sessions: a random id in a signed cookie, the row keyed by the id's hash.

The cookie value is the session id signed with the project secret (itsdangerous), so a
forged or altered cookie is rejected before the database is asked. The table stores only
sha256(id): a copy of the database alone does not let anyone take over a session.
Each session carries its own CSRF token for the forms it renders.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from medarena.db.platform_models import User, WebSession

SESSION_LIFETIME = dt.timedelta(days=14)
_SESSION_SALT = "medarena.session"
_ANON_CSRF_SALT = "medarena.anon-csrf"


def _hash_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _serializer(secret: bytes, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=salt)


def create_web_session(
    session: Session,
    user: User,
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = SESSION_LIFETIME,
) -> tuple[WebSession, str]:
    """Start a browser session for ``user``; returns the row and the plain session id.

    The row is flushed, not committed. Sign the id with :func:`sign_session_id` for the
    cookie.
    """
    now = now or dt.datetime.now(dt.UTC)
    session_id = secrets.token_urlsafe(32)
    row = WebSession(
        id=_hash_id(session_id),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + lifetime,
    )
    session.add(row)
    # Expired rows of this user go when a new one starts: the table stays small.
    session.execute(
        delete(WebSession).where(WebSession.user_id == user.id, WebSession.expires_at < now)
    )
    session.flush()
    return row, session_id


def sign_session_id(secret: bytes, session_id: str) -> str:
    """The cookie value for ``session_id``."""
    return str(_serializer(secret, _SESSION_SALT).dumps(session_id))


def unsign_session_id(
    secret: bytes, cookie: str, *, max_age: dt.timedelta = SESSION_LIFETIME
) -> str | None:
    """The session id inside a cookie value, or None when forged, altered or too old."""
    try:
        value = _serializer(secret, _SESSION_SALT).loads(
            cookie, max_age=int(max_age.total_seconds())
        )
    except BadSignature:
        return None
    return value if isinstance(value, str) else None


def load_web_session(
    session: Session, session_id: str, *, now: dt.datetime | None = None
) -> tuple[WebSession, User] | None:
    """The live session and its active user, or None (unknown, expired, user inactive).

    Expired sessions and sessions of deactivated users are deleted (committed).
    """
    now = now or dt.datetime.now(dt.UTC)
    row = session.get(WebSession, _hash_id(session_id))
    if row is None:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active or _aware(row.expires_at) <= now:
        session.delete(row)
        session.commit()
        return None
    return row, user


def end_web_session(session: Session, session_id: str) -> None:
    """Delete a browser session (logout); committed."""
    session.execute(delete(WebSession).where(WebSession.id == _hash_id(session_id)))
    session.commit()


def end_user_sessions(session: Session, user_id: int) -> int:
    """Delete every browser session of a user (flushed); returns how many."""
    result = session.execute(delete(WebSession).where(WebSession.user_id == user_id))
    session.flush()
    return int(result.rowcount or 0) if isinstance(result, CursorResult) else 0


def list_sessions(session: Session, user_id: int) -> list[WebSession]:
    return list(session.scalars(select(WebSession).where(WebSession.user_id == user_id)))


def tokens_equal(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token (False for a missing one)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def new_anonymous_csrf(secret: bytes) -> tuple[str, str]:
    """A CSRF token for forms shown before login, and its signed cookie value.

    Login and signup forms have no session yet; the token is bound to the browser by a
    signed cookie (double submit), which stops other sites from logging a visitor into
    an account of theirs.
    """
    token = secrets.token_urlsafe(32)
    return token, str(_serializer(secret, _ANON_CSRF_SALT).dumps(token))


def read_anonymous_csrf(secret: bytes, cookie: str | None) -> str | None:
    """The token inside an anonymous CSRF cookie, or None when absent or forged."""
    if not cookie:
        return None
    try:
        value = _serializer(secret, _ANON_CSRF_SALT).loads(cookie, max_age=86400)
    except BadSignature:
        return None
    return value if isinstance(value, str) else None

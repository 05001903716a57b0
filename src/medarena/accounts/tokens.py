"""Personal API tokens for scripts: shown once, stored as sha256, revocable.

A token reads ``mda_<43 url-safe characters>`` (256 random bits). Only its sha256 and
its first characters (the prefix, to tell tokens apart in a list) are stored. Because
the token is random and long, an unsalted fast hash is enough: there is nothing to guess.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from medarena.accounts.errors import AuthError
from medarena.db.platform_models import ApiToken, User
from medarena.errors import InputError, NotFoundError

TOKEN_PREFIX = "mda_"
SHOWN_PREFIX_LENGTH = 12  # "mda_" + 8 characters: enough to recognise, far too few to guess
# Writing last_used_at on every request would turn reads into writes; minute precision will do.
_LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    """Create a token for ``user``; returns the row and the plain token (flushed).

    The plain token exists only in the return value: show it once and forget it.
    """
    label = name.strip()
    if not label or len(label) > 120:
        raise InputError("a token name needs 1-120 characters", path="name", value=name[:40])
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        name=label,
        token_hash=hash_token(plain),
        prefix=plain[:SHOWN_PREFIX_LENGTH],
    )
    session.add(row)
    session.flush()
    return row, plain


def list_tokens(session: Session, user_id: int) -> list[ApiToken]:
    """All tokens of a user, newest first, revoked ones included."""
    return list(
        session.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user_id)
            .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
        )
    )


def revoke_token(
    session: Session, user_id: int, token_id: int, *, now: dt.datetime | None = None
) -> ApiToken:
    """Revoke one of the user's tokens (flushed); NotFoundError if it is not theirs."""
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user_id:
        raise NotFoundError(f"no API token {token_id} of this user")
    if row.revoked_at is None:
        row.revoked_at = now or dt.datetime.now(dt.UTC)
        session.flush()
    return row


def authenticate_token(
    session: Session, token: str, *, now: dt.datetime | None = None
) -> tuple[ApiToken, User]:
    """The token row and its user for a presented token, or AuthError saying why not.

    Updates last_used_at (at most once a minute; committed).
    """
    now = now or dt.datetime.now(dt.UTC)
    if not token.startswith(TOKEN_PREFIX):
        raise AuthError("this is not a medarena API token (they start with 'mda_')")
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None:
        raise AuthError("unknown API token: create one on /account or with `medarena users token`")
    if row.revoked_at is not None:
        raise AuthError(
            f"API token {row.prefix}… was revoked on {_aware(row.revoked_at):%Y-%m-%d %H:%M} "
            "UTC; create a new one on /account"
        )
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise AuthError("the account of this API token is deactivated; ask a platform admin")
    if row.last_used_at is None or now - _aware(row.last_used_at) >= _LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.commit()
    return row, user

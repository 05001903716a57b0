"""User accounts: creation, password login with throttling, activation, admin flag."""

from __future__ import annotations

import datetime as dt
import logging
import re

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from medarena.accounts.errors import AuthError
from medarena.accounts.passwords import (
    check_password_rules,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)
from medarena.accounts.throttle import (
    DEFAULT_POLICY,
    ThrottlePolicy,
    check_login_allowed,
    record_attempt,
)
from medarena.db.platform_models import ApiToken, User, WebSession
from medarena.errors import InputError, NotFoundError

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_DISPLAY_NAME = 120


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def normalize_email(email: str) -> str:
    """The stored form of an e-mail address: trimmed and lower-cased, shape checked.

    The whole address is lower-cased (strictly the local part is case-sensitive, but no
    mail provider in practice treats it so, and two accounts differing only in case
    would be a trap).
    """
    value = email.strip().lower()
    if len(value) > 320 or not _EMAIL.match(value):
        raise InputError(
            "an e-mail address looks like name@example.org", path="email", value=email[:80]
        )
    return value


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email.strip().lower()))


def require_user(session: Session, email: str) -> User:
    """The user with ``email``, or NotFoundError naming the address."""
    user = get_user_by_email(session, email)
    if user is None:
        raise NotFoundError(f"no user with e-mail {email.strip().lower()!r}")
    return user


def create_user(
    session: Session,
    email: str,
    password: str,
    *,
    display_name: str | None = None,
    is_admin: bool = False,
) -> User:
    """Create an account (flushed, not committed); refuses a taken address or weak password."""
    address = normalize_email(email)
    check_password_rules(password, email=address)
    name = (display_name or "").strip() or address.split("@", 1)[0]
    if len(name) > MAX_DISPLAY_NAME:
        raise InputError(
            f"a display name may have at most {MAX_DISPLAY_NAME} characters",
            path="display_name",
        )
    if session.scalar(select(func.count()).select_from(User).where(User.email == address)):
        raise InputError(
            "an account with this e-mail address exists already",
            path="email",
            value=address,
            hint="log in instead",
        )
    user = User(
        email=address,
        display_name=name,
        password_hash=hash_password(password),
        is_admin=is_admin,
        is_active=True,
    )
    session.add(user)
    session.flush()
    log.info("created user %s (admin=%s)", user.id, is_admin)
    return user


def authenticate(
    session: Session,
    email: str,
    password: str,
    *,
    address: str,
    now: dt.datetime | None = None,
    policy: ThrottlePolicy = DEFAULT_POLICY,
) -> User:
    """The user whose e-mail and password match; commits the attempt's record.

    Raises LoginThrottled before checking anything when the account or the client
    address has failed too often, and AuthError with one message for a wrong address,
    a wrong password or a deactivated account, so the answer does not tell which.
    """
    now = now or utcnow()
    key_email = email.strip().lower()[:320]
    check_login_allowed(session, key_email, address, now=now, policy=policy)
    user = session.scalar(select(User).where(User.email == key_email))
    # Verify against a dummy hash for unknown accounts: same work, same timing.
    ok = verify_password(user.password_hash if user else dummy_hash(), password)
    ok = ok and user is not None and user.is_active
    record_attempt(session, key_email, address, success=ok, now=now, policy=policy)
    if user is not None:
        user.failed_logins = 0 if ok else (user.failed_logins or 0) + 1
    if not ok or user is None:
        session.commit()
        raise AuthError("wrong e-mail address or password")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    session.commit()
    return user


def set_password(session: Session, user: User, password: str) -> None:
    """Replace the password and end every browser session of the user (flushed)."""
    check_password_rules(password, email=user.email)
    user.password_hash = hash_password(password)
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    session.flush()


def set_active(session: Session, user: User, active: bool) -> None:
    """Activate or deactivate an account; deactivating ends its browser sessions (flushed).

    Its API tokens stay stored but are refused while the account is inactive.
    """
    user.is_active = active
    if not active:
        session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    session.flush()


def set_admin(session: Session, user: User, admin: bool) -> None:
    user.is_admin = admin
    session.flush()


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def count_active_tokens(session: Session, user_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        )
        or 0
    )

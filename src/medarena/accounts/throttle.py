"""Login throttling per account and per client address, on the LoginAttempt table.

Policy: within a sliding window, an account may fail ``account_limit`` times (failures
before its last successful login do not count) and a client address may fail
``address_limit`` times (a success does not reset it, so an attacker holding one valid
account cannot use it to clear the counter). A throttled attempt is refused before the
password is checked and is not recorded, so waiting out the window always works.
Rows live in the database, so every server process of a deployment shares the counts.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from medarena.accounts.errors import LoginThrottled
from medarena.db.platform_models import LoginAttempt


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failed logins a window allows, per account and per client address."""

    account_limit: int = 5
    address_limit: int = 30
    window: dt.timedelta = dt.timedelta(minutes=15)


DEFAULT_POLICY = ThrottlePolicy()


def account_key(email: str) -> str:
    return f"account:{email}"


def address_key(address: str) -> str:
    return f"address:{address}"


def _aware(t: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they were stored as UTC.
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _wait_seconds(
    session: Session,
    key: str,
    limit: int,
    window: dt.timedelta,
    now: dt.datetime,
    *,
    reset_on_success: bool,
) -> float:
    """Seconds until ``key`` may try again (0 when it may try now)."""
    since = now - window
    rows = session.execute(
        select(LoginAttempt.at, LoginAttempt.success)
        .where(LoginAttempt.key == key, LoginAttempt.at > since)
        .order_by(LoginAttempt.at)
    ).all()
    failures: list[dt.datetime] = []
    for at, success in rows:
        if success:
            if reset_on_success:
                failures.clear()
        else:
            failures.append(_aware(at))
    if len(failures) < limit:
        return 0.0
    # The count drops below the limit when the limit-th most recent failure leaves the window.
    return (failures[-limit] + window - now).total_seconds()


def check_login_allowed(
    session: Session,
    email: str,
    address: str,
    *,
    now: dt.datetime,
    policy: ThrottlePolicy = DEFAULT_POLICY,
) -> None:
    """Raise LoginThrottled (with the seconds to wait) when either key is over its limit."""
    wait = _wait_seconds(
        session,
        address_key(address),
        policy.address_limit,
        policy.window,
        now,
        reset_on_success=False,
    )
    if wait > 0:
        raise LoginThrottled("from this address", math.ceil(wait))
    wait = _wait_seconds(
        session,
        account_key(email),
        policy.account_limit,
        policy.window,
        now,
        reset_on_success=True,
    )
    if wait > 0:
        raise LoginThrottled("for this account", math.ceil(wait))


def record_attempt(
    session: Session,
    email: str,
    address: str,
    *,
    success: bool,
    now: dt.datetime,
    policy: ThrottlePolicy = DEFAULT_POLICY,
) -> None:
    """Record one login outcome under both keys and drop rows older than the window."""
    cutoff = now - policy.window
    for key in (account_key(email), address_key(address)):
        session.execute(
            delete(LoginAttempt).where(LoginAttempt.key == key, LoginAttempt.at < cutoff)
        )
        session.add(LoginAttempt(key=key, at=now, success=success))
    session.flush()

"""Accounts services on a real database: users, throttling, sessions, tokens, roles, audit."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from medarena.accounts import (
    AuthError,
    LoginThrottled,
    audit,
    authenticate,
    authenticate_token,
    can_organize,
    create_token,
    create_user,
    grant_role,
    has_role,
    list_audit,
    revoke_role,
    revoke_token,
    set_active,
)
from medarena.accounts.sessions import (
    create_web_session,
    load_web_session,
    sign_session_id,
    unsign_session_id,
)
from medarena.accounts.throttle import ThrottlePolicy
from medarena.db.platform_models import ApiToken, Challenge, User, WebSession
from medarena.errors import InputError

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
PW = "correct horse battery"


def _user(s: Session, email: str = "ana@example.org", **kw: object) -> User:
    u = create_user(s, email, PW, **kw)  # type: ignore[arg-type]
    s.commit()
    return u


def test_password_is_stored_as_argon2id_and_verified(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        u = _user(s, "  Ana@Example.ORG ", display_name="Ana")
        assert u.email == "ana@example.org"
        assert u.password_hash.startswith("$argon2id$") and PW not in u.password_hash
        assert authenticate(s, "ANA@example.org", PW, address="1.2.3.4").id == u.id
        with pytest.raises(AuthError, match="wrong e-mail address or password"):
            authenticate(s, "ana@example.org", PW + "x", address="1.2.3.4")
        with pytest.raises(AuthError, match="wrong e-mail address or password"):
            authenticate(s, "nobody@example.org", PW, address="1.2.3.4")


def test_bad_signup_input_is_refused(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        _user(s)
        with pytest.raises(InputError, match="exists already"):
            create_user(s, "ANA@example.org", PW)
        with pytest.raises(InputError, match="at least 8 characters"):
            create_user(s, "bo@example.org", "short")
        with pytest.raises(InputError, match=r"name@example\.org"):
            create_user(s, "not-an-address", PW)
        with pytest.raises(InputError, match="must not be the e-mail"):
            create_user(s, "long.name@example.org", "Long.Name@example.org")


def test_account_throttle_counts_failures_in_window_and_resets_on_success(
    sessions: sessionmaker[Session],
) -> None:
    policy = ThrottlePolicy(account_limit=3, address_limit=100, window=dt.timedelta(minutes=10))
    with sessions() as s:
        _user(s)
        # Failures at T0, T0+1 min, T0+2 min: the third reaches the limit.
        for minute in range(3):
            with pytest.raises(AuthError) as exc:
                authenticate(
                    s,
                    "ana@example.org",
                    "wrong-pass",
                    address=f"10.0.0.{minute}",
                    now=T0 + dt.timedelta(minutes=minute),
                    policy=policy,
                )
            assert not isinstance(exc.value, LoginThrottled)
        # Even the right password is refused now, from any address; the wait ends when the
        # first failure (T0) leaves the 10-minute window: T0+10 min - (T0+3 min) = 420 s.
        with pytest.raises(LoginThrottled, match="for this account; try again in 420 s") as t:
            authenticate(
                s,
                "ana@example.org",
                PW,
                address="10.9.9.9",
                now=T0 + dt.timedelta(minutes=3),
                policy=policy,
            )
        assert t.value.retry_after == 420
        # Throttled attempts are not recorded, so the wait does not grow.
        later = T0 + dt.timedelta(minutes=10, seconds=1)
        assert authenticate(s, "ana@example.org", PW, address="10.9.9.9", now=later, policy=policy)
        # The success resets the account count: two fresh failures do not throttle.
        for k in range(2):
            with pytest.raises(AuthError):
                authenticate(
                    s,
                    "ana@example.org",
                    "wrong-pass",
                    address="10.9.9.9",
                    now=later + dt.timedelta(seconds=k + 1),
                    policy=policy,
                )
        assert authenticate(
            s,
            "ana@example.org",
            PW,
            address="10.9.9.9",
            now=later + dt.timedelta(seconds=5),
            policy=policy,
        )


def test_address_throttle_spans_accounts_and_ignores_successes(
    sessions: sessionmaker[Session],
) -> None:
    policy = ThrottlePolicy(account_limit=100, address_limit=2, window=dt.timedelta(minutes=5))
    with sessions() as s:
        _user(s)
        _user(s, "eve@example.org")
        for i, email in enumerate(["ana@example.org", "ghost@example.org"]):
            with pytest.raises(AuthError):
                authenticate(
                    s,
                    email,
                    "wrong-pass",
                    address="6.6.6.6",
                    now=T0 + dt.timedelta(seconds=i),
                    policy=policy,
                )
        # Failures at T0 and T0+1 s; the first leaves the window at T0+300 s: 298 s from T0+2 s.
        with pytest.raises(LoginThrottled, match="from this address; try again in 298 s"):
            authenticate(
                s,
                "eve@example.org",
                PW,
                address="6.6.6.6",
                now=T0 + dt.timedelta(seconds=2),
                policy=policy,
            )
        # Another address is unaffected.
        assert authenticate(
            s,
            "eve@example.org",
            PW,
            address="7.7.7.7",
            now=T0 + dt.timedelta(seconds=2),
            policy=policy,
        )


def test_web_session_cookie_signature_expiry_and_deactivation(
    sessions: sessionmaker[Session],
) -> None:
    secret = b"s" * 40
    with sessions() as s:
        u = _user(s)
        row, sid = create_web_session(s, u, now=T0, lifetime=dt.timedelta(hours=1))
        s.commit()
        assert row.id != sid and len(row.id) == 64  # only the hash is stored
        cookie = sign_session_id(secret, sid)
        assert unsign_session_id(secret, cookie) == sid
        assert unsign_session_id(b"t" * 40, cookie) is None
        assert unsign_session_id(secret, cookie[:-2] + "AA") is None
        loaded = load_web_session(s, sid, now=T0 + dt.timedelta(minutes=59))
        assert loaded is not None and loaded[1].id == u.id
        assert load_web_session(s, sid, now=T0 + dt.timedelta(minutes=61)) is None
        assert s.scalar(select(WebSession).where(WebSession.user_id == u.id)) is None
        _, sid2 = create_web_session(s, u)
        s.commit()
        set_active(s, u, False)
        s.commit()
        assert load_web_session(s, sid2) is None


def test_api_token_shown_once_hashed_revoked_and_deactivated(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as s:
        u = _user(s)
        row, plain = create_token(s, u, "laptop")
        s.commit()
        stored = s.scalar(select(ApiToken).where(ApiToken.id == row.id))
        assert stored is not None
        assert plain.startswith("mda_") and len(plain) == 4 + 43
        assert stored.prefix == plain[:12] and plain not in stored.token_hash
        assert stored.last_used_at is None
        assert authenticate_token(s, plain, now=T0)[1].id == u.id
        assert stored.last_used_at is not None
        with pytest.raises(AuthError, match="unknown API token"):
            authenticate_token(s, plain[:-1] + ("A" if plain[-1] != "A" else "B"))
        set_active(s, u, False)
        s.commit()
        with pytest.raises(AuthError, match="deactivated"):
            authenticate_token(s, plain)
        set_active(s, u, True)
        revoke_token(s, u.id, row.id, now=T0)
        s.commit()
        with pytest.raises(AuthError, match="revoked on 2025-03-01 12:00 UTC"):
            authenticate_token(s, plain)


def test_roles_admin_and_audit(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        org = _user(s)
        admin = _user(s, "root@example.org", is_admin=True)
        other = _user(s, "bo@example.org")
        ch = Challenge(slug="c1", title="C1", spec={})
        s.add(ch)
        s.flush()
        assert grant_role(s, org.id, ch.id, "organizer") is True
        assert grant_role(s, org.id, ch.id, "organizer") is False
        assert has_role(s, org.id, ch.id, "organizer")
        assert not has_role(s, org.id, ch.id, "reviewer")
        assert can_organize(s, org, ch.id) and can_organize(s, admin, ch.id)
        assert not can_organize(s, other, ch.id) and not can_organize(s, None, ch.id)
        assert not has_role(s, admin.id, ch.id, "organizer")  # admin power is not a role
        with pytest.raises(InputError, match="one of organizer"):
            has_role(s, org.id, ch.id, "judge")
        audit(s, admin.id, "role.grant", challenge_id=ch.id, target="bo", detail={"role": "x"})
        audit(s, None, "user.create", target="root")
        s.commit()
        assert revoke_role(s, org.id, ch.id, "organizer") is True
        assert [e.action for e in list_audit(s)] == ["user.create", "role.grant"]
        only = list_audit(s, challenge_id=ch.id)
        assert len(only) == 1 and only[0].detail == {"role": "x"}

"""Accounts through HTTP (TestClient) on SQLite and PostgreSQL: pages, API, cookies, CSRF."""

from __future__ import annotations

import re

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from fastapi.testclient import TestClient
from sqlalchemy import select

from medarena.accounts import create_token, create_user, require_user, set_active
from medarena.datasets.catalogue import Catalogue
from medarena.db.platform_models import ApiToken, LoginAttempt, WebSession
from medarena.web.app import create_app
from medarena.web.deps import AdminUser, OptionalUser, verify_csrf

PW = "correct horse battery"


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no csrf_token field in the page"
    return m.group(1)


def _signup(c: TestClient, email: str = "ana@example.org") -> None:
    token = _csrf(c.get("/signup").text)
    r = c.post(
        "/signup",
        data={
            "csrf_token": token,
            "email": email,
            "display_name": "Ana Lima",
            "password": PW,
            "password_repeat": PW,
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/account", r.text


def test_signup_sets_hardened_cookie_and_nav_shows_user(
    client: TestClient, catalogue: Catalogue
) -> None:
    assert 'href="/login"' in client.get("/login").text
    _signup(client)
    cookie = next(
        h for h in client.cookies.jar if h.name == "medarena_session"
    )  # the client kept it
    assert cookie.value
    page = client.get("/account")
    assert page.status_code == 200 and "Ana Lima" in page.text
    assert 'action="/logout"' in page.text and 'href="/signup"' not in page.text
    # The stored id is the hash of what the cookie carries, never the cookie itself.
    with catalogue.session() as s:
        rows = list(s.scalars(select(WebSession)))
    assert len(rows) == 1 and rows[0].id not in cookie.value


def test_session_cookie_flags_http_and_https(catalogue: Catalogue) -> None:
    with catalogue.session() as s:
        create_user(s, "bo@example.org", PW)
        s.commit()
    for base, secure in (("http://testserver", False), ("https://testserver", True)):
        with TestClient(create_app(catalogue.settings, catalogue), base_url=base) as c:
            r = c.post("/api/v1/auth/login", json={"email": "bo@example.org", "password": PW})
            assert r.status_code == 200, r.text
            header = r.headers["set-cookie"]
            assert header.startswith("medarena_session=")
            assert "HttpOnly" in header and "SameSite=lax" in header and "Path=/" in header
            assert "Max-Age=1209600" in header  # 14 days
            assert ("Secure" in header) is secure
            assert c.get("/api/v1/me").json()["email"] == "bo@example.org"


def test_login_form_throttles_and_says_when_to_retry(
    client: TestClient, catalogue: Catalogue
) -> None:
    with catalogue.session() as s:
        create_user(s, "cy@example.org", PW)
        s.commit()
    token = _csrf(client.get("/login").text)
    form = {"csrf_token": token, "email": "cy@example.org", "password": "wrong-password"}
    for _ in range(5):
        r = client.post("/login", data=form)
        assert r.status_code == 401 and "wrong e-mail address or password" in r.text
    r = client.post("/login", data={**form, "password": PW}, follow_redirects=False)
    assert r.status_code == 429
    m = re.search(r"too many failed login attempts for this account; try again in (\d+) s", r.text)
    assert m and 1 <= int(m.group(1)) <= 900
    assert r.headers["retry-after"] == m.group(1)
    assert "medarena_session" not in r.headers.get("set-cookie", "")
    with catalogue.session() as s:
        n = len(list(s.scalars(select(LoginAttempt).where(LoginAttempt.success.is_(False)))))
    assert n == 10  # 5 failures x (account key + address key); the throttled one not recorded


def test_csrf_is_required_on_cookie_requests(client: TestClient) -> None:
    # Anonymous forms: no token, or a token without its cookie, is refused.
    r = client.post("/login", data={"email": "a@example.org", "password": PW})
    assert r.status_code == 403 and "CSRF" in r.text
    _signup(client)
    # Logged in by cookie: an API write without the session's token is refused ...
    r = client.post("/api/v1/tokens", json={"name": "ci"})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = client.post("/api/v1/tokens", json={"name": "ci"}, headers={"X-CSRF-Token": "nope"})
    assert r.status_code == 403
    # ... and accepted with it (header), as is the form field on pages.
    csrf = _csrf(client.get("/account").text)
    r = client.post("/api/v1/tokens", json={"name": "ci"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    r = client.post("/account/tokens", data={"name": "laptop"})
    assert r.status_code == 403
    r = client.post("/account/tokens", data={"name": "laptop", "csrf_token": csrf})
    assert r.status_code == 201
    # Logout is a POST that needs the token too.
    assert client.post("/logout", follow_redirects=False).status_code == 403
    r = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/api/v1/me").status_code == 401


def test_api_token_shown_once_then_revoked_gives_401(
    client: TestClient, catalogue: Catalogue
) -> None:
    _signup(client)
    csrf = _csrf(client.get("/account").text)
    r = client.post("/account/tokens", data={"name": "laptop", "csrf_token": csrf})
    plain = re.search(r'id="new-token" type="text" readonly value="(mda_[^"]+)"', r.text)
    assert plain and r.headers["cache-control"] == "no-store"
    token = plain.group(1)
    page = client.get("/account").text
    assert token not in page and token[:12] in page  # prefix listed, token never again
    listed = client.get("/api/v1/tokens").json()
    assert [t["name"] for t in listed] == ["laptop"] and "token" not in listed[0]
    with catalogue.session() as s:
        row = s.scalar(select(ApiToken))
        assert row is not None and token not in row.token_hash
    # A script uses the token without cookies; writes need no CSRF token.
    script = TestClient(client.app)
    bearer = {"Authorization": f"Bearer {token}"}
    assert script.get("/api/v1/me", headers=bearer).json()["email"] == "ana@example.org"
    made = script.post("/api/v1/tokens", json={"name": "second"}, headers=bearer)
    assert made.status_code == 201 and made.json()["token"].startswith("mda_")
    assert client.get("/api/v1/tokens").json()[1]["last_used_at"] is not None
    # Revoke the first through the API: the next request with it is 401 saying why.
    r = script.delete(f"/api/v1/tokens/{listed[0]['id']}", headers=bearer)
    assert r.status_code == 204
    r = script.get("/api/v1/me", headers=bearer)
    assert r.status_code == 401 and "was revoked" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    # A revoked token is a 401 even on a page anyone may see: it never silently degrades.
    assert script.get("/login", headers=bearer).status_code == 401
    # Someone else's token id is not found.
    other = made.json()["token"]
    assert (
        script.delete(
            "/api/v1/tokens/999999", headers={"Authorization": f"Bearer {other}"}
        ).status_code
        == 404
    )


def test_deactivated_user_gets_401_for_token_and_loses_sessions(
    client: TestClient, catalogue: Catalogue
) -> None:
    _signup(client)
    with catalogue.session() as s:
        user = require_user(s, "ana@example.org")
        _, token = create_token(s, user, "cli")
        s.commit()
        set_active(s, user, False)
        s.commit()
    r = TestClient(client.app).get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "deactivated" in r.json()["detail"]
    assert client.get("/api/v1/me").status_code == 401  # the browser session was ended
    r = client.get("/account", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/account"
    # And it cannot log in again.
    r = client.post("/api/v1/auth/login", json={"email": "ana@example.org", "password": PW})
    assert r.status_code == 401


def test_anonymous_and_malformed_credentials(client: TestClient) -> None:
    r = client.get("/api/v1/me")
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    r = client.get("/api/v1/me", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer <token>" in r.json()["detail"]
    r = client.get("/api/v1/me", headers={"Authorization": "Bearer mda_nope"})
    assert r.status_code == 401 and "unknown API token" in r.json()["detail"]
    client.cookies.set("medarena_session", "forged.value.here")
    assert client.get("/api/v1/me").status_code == 401
    # Login refuses non-JSON bodies (a cross-site form cannot send JSON).
    r = client.post(
        "/api/v1/auth/login",
        content='{"email": "a@example.org", "password": "x"}',
        headers={"content-type": "text/plain"},
    )
    assert r.status_code in (415, 422)
    # After login, next= can only lead to a local path.
    r = client.get("/login?next=//evil.example/x")
    assert 'name="next" value="/"' in r.text


def test_admin_and_optional_user_deps(catalogue: Catalogue) -> None:
    # Probe routes on a real app; annotations resolve from this module's imports.
    app = create_app(catalogue.settings, catalogue)

    @app.get("/api/v1/_probe/optional")
    def optional(user: OptionalUser) -> dict[str, str | None]:
        return {"email": user.email if user else None}

    @app.post("/api/v1/_probe/admin", dependencies=[Depends(verify_csrf)])
    def admin_only(user: AdminUser) -> dict[str, str]:
        return {"email": user.email}

    @app.get("/_probe/page", response_class=HTMLResponse)
    def page(request: Request) -> HTMLResponse:
        templates: Jinja2Templates = app.state.templates
        return templates.TemplateResponse(request, "base.html", {})

    with catalogue.session() as s:
        root = create_user(s, "root@example.org", PW, is_admin=True)
        bo = create_user(s, "bo@example.org", PW)
        _, root_token = create_token(s, root, "t")
        _, bo_token = create_token(s, bo, "t")
        s.commit()
    with TestClient(app) as c:
        assert c.get("/api/v1/_probe/optional").json() == {"email": None}
        r = c.get("/api/v1/_probe/optional", headers={"Authorization": f"Bearer {bo_token}"})
        assert r.json() == {"email": "bo@example.org"}
        assert c.post("/api/v1/_probe/admin").status_code == 401
        r = c.post("/api/v1/_probe/admin", headers={"Authorization": f"Bearer {bo_token}"})
        assert r.status_code == 403 and "platform admins" in r.json()["detail"]
        r = c.post("/api/v1/_probe/admin", headers={"Authorization": f"Bearer {root_token}"})
        assert r.status_code == 200 and r.json() == {"email": "root@example.org"}
        # A cookie session of the admin still needs the CSRF token for the same write.
        login = c.post("/api/v1/auth/login", json={"email": "root@example.org", "password": PW})
        csrf = login.json()["csrf_token"]
        assert c.post("/api/v1/_probe/admin").status_code == 403
        r = c.post("/api/v1/_probe/admin", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200
        # Pages resolve the caller, so the header names who is logged in ...
        nav = c.get("/datasets").text
        assert 'href="/account">root</a>' in nav and 'href="/signup"' not in nav
        # ... and a page whose route does not still offers the account link, not sign-up.
        nav = c.get("/_probe/page").text
        assert 'href="/account">Account</a>' in nav and 'href="/signup"' not in nav


def test_signup_errors_rerender_and_login_follows_next(
    client: TestClient, catalogue: Catalogue
) -> None:
    token = _csrf(client.get("/signup").text)
    base = {"csrf_token": token, "email": "dee@example.org", "display_name": "Dee"}
    r = client.post("/signup", data={**base, "password": PW, "password_repeat": PW + "!"})
    assert r.status_code == 400 and "the two passwords differ" in r.text
    assert 'value="dee@example.org"' in r.text  # the form keeps what was typed, not passwords
    assert PW not in r.text
    _signup(client, "dee@example.org")
    client.post("/logout", data={"csrf_token": _csrf(client.get("/account").text)})
    token = _csrf(client.get("/signup").text)
    r = client.post(
        "/signup", data={**base, "csrf_token": token, "password": PW, "password_repeat": PW}
    )
    assert r.status_code == 400 and "exists already" in r.text
    r = client.get("/account", follow_redirects=False)
    assert r.headers["location"] == "/login?next=/account"
    token = _csrf(client.get("/login?next=/account").text)
    r = client.post(
        "/login",
        data={"csrf_token": token, "email": "DEE@example.org", "password": PW, "next": "/account"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/account"
    with catalogue.session() as s:
        assert len(list(s.scalars(select(WebSession)))) == 1  # logout deleted the first

"""Typed FastAPI dependencies shared by routers (resources live on app.state)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote

import anyio
from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from medarena.accounts.errors import AuthError
from medarena.accounts.sessions import (
    load_web_session,
    read_anonymous_csrf,
    tokens_equal,
    unsign_session_id,
)
from medarena.accounts.tokens import authenticate_token
from medarena.config import Settings
from medarena.datasets.catalogue import Catalogue
from medarena.db.engine import POOL_CAPACITY
from medarena.db.platform_models import User, WebSession


def get_catalogue(request: Request) -> Catalogue:
    cat: Catalogue = request.app.state.catalogue
    return cat


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


# Requests that may hold database sessions at once. A request holds at most two
# connections (its own session and a catalogue session), so twice this stays below the
# engine's POOL_CAPACITY, with a few connections left for in-process job workers. Without
# the gate, requests parked between threads (a finished route waiting for a thread to
# serialise its response) can hold every connection while every thread waits for one:
# the server hangs. Waiting at the gate holds neither a thread nor a connection.
DB_REQUESTS = max(2, (POOL_CAPACITY - 6) // 2)


async def get_db(request: Request) -> AsyncIterator[Session]:
    """One database session per request, closed afterwards; see :data:`DB_REQUESTS`."""
    state = request.app.state
    gate: anyio.Semaphore | None = getattr(state, "db_gate", None)
    if gate is None:  # created on the event loop; one per app
        gate = state.db_gate = anyio.Semaphore(DB_REQUESTS)
    cat: Catalogue = state.catalogue
    await gate.acquire()
    session = cat.sessions()
    held = True

    def release() -> None:
        nonlocal held
        if held:
            held = False
            session.close()  # a rollback at most: returns the connection to the pool
            gate.release()

    request.state.release_db = release
    try:
        yield session
    finally:
        release()


def release_db(request: Request) -> None:
    """End the request's database session early, on the event loop (async routes only).

    For a route that then works for long without the database, such as streaming an
    upload, so that it holds neither a connection nor a place at the gate meanwhile.
    """
    release = getattr(request.state, "release_db", None)
    if release is not None:
        release()


CatalogueDep = Annotated[Catalogue, Depends(get_catalogue)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]
DbSession = Annotated[Session, Depends(get_db)]


# --- Who is asking: browser session cookie or API token (accounts) -------------------------

SESSION_COOKIE = "medarena_session"
ANON_CSRF_COOKIE = "medarena_csrf"
CSRF_FORM_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass
class Principal:
    """An authenticated caller and how it proved who it is."""

    user: User
    via: Literal["session", "token"]
    web_session: WebSession | None = None
    session_id: str | None = None  # the plain id, only to end the session at logout


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def get_principal(request: Request, db: DbSession, settings: SettingsDep) -> Principal | None:
    """The caller, from ``Authorization: Bearer`` or else the session cookie; None if anonymous.

    A presented but unusable token (unknown, revoked, deactivated account) is a 401 with
    the reason, never a silent fall back to anonymous: a script must learn its token died.
    A stale or forged cookie just means anonymous. The result is also put on
    ``request.state`` (``user``, ``csrf_token``) for templates (base.html's nav).
    """
    principal: Principal | None = None
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401,
                "the Authorization header must read 'Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            _, user = authenticate_token(db, token.strip())
        except AuthError as exc:
            raise HTTPException(
                401, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from None
        principal = Principal(user=user, via="token")
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        session_id = unsign_session_id(settings.secret, cookie) if cookie else None
        loaded = load_web_session(db, session_id) if session_id else None
        if loaded is not None:
            principal = Principal(
                user=loaded[1], via="session", web_session=loaded[0], session_id=session_id
            )
    request.state.user = principal.user if principal else None
    request.state.csrf_token = (
        principal.web_session.csrf_token if principal and principal.web_session else None
    )
    return principal


PrincipalDep = Annotated[Principal | None, Depends(get_principal)]


def optional_user(principal: PrincipalDep) -> User | None:
    return principal.user if principal else None


def current_user(request: Request, principal: PrincipalDep) -> User:
    """The logged-in user; else 401 for /api/ routes and a redirect to /login for pages."""
    if principal is not None:
        return principal.user
    if _is_api(request):
        raise HTTPException(
            401,
            "authentication required: send 'Authorization: Bearer <token>' "
            "(create a token on /account or with `medarena users token`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise HTTPException(303, "log in first", headers={"Location": f"/login?next={quote(target)}"})


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    """The logged-in user if a platform admin, else 403."""
    if not user.is_admin:
        raise HTTPException(403, "only platform admins may do this")
    return user


OptionalUser = Annotated[User | None, Depends(optional_user)]
CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]


async def _presented_csrf(request: Request) -> str | None:
    """The CSRF token from the X-CSRF-Token header, else from a url-encoded or multipart form.

    The form is only read when the body is a form; Starlette caches it, so the route's own
    Form()/File() parameters still work. A route that streams the raw body must have its
    clients send the header instead.
    """
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FORM_FIELD)
        return value if isinstance(value, str) else None
    return None


async def verify_csrf(request: Request, principal: PrincipalDep, settings: SettingsDep) -> None:
    """Refuse (403) an unsafe request whose CSRF token is missing or wrong.

    - bearer-token requests need none (browsers never add that header on their own);
    - cookie sessions must send the session's token (form field ``csrf_token`` or header
      ``X-CSRF-Token``);
    - anonymous page forms (login, signup) must send the token bound to the
      ``medarena_csrf`` cookie; anonymous /api/ requests pass (they carry no authority).
    Add it to every unsafe route: ``dependencies=[Depends(verify_csrf)]``.
    """
    if request.method in _SAFE_METHODS:
        return
    if principal is not None and principal.via == "token":
        return
    if principal is None and _is_api(request):
        # No cookie session means no ambient authority to abuse; the route's own
        # CurrentUser answers 401, which tells a script more than a CSRF refusal.
        return
    if principal is not None and principal.web_session is not None:
        expected: str | None = principal.web_session.csrf_token
    else:
        expected = read_anonymous_csrf(settings.secret, request.cookies.get(ANON_CSRF_COOKIE))
    if not tokens_equal(expected or "", await _presented_csrf(request)):
        raise HTTPException(
            403,
            "missing or wrong CSRF token: reload the page and submit the form again "
            f"(scripts: use an API token; browsers: send '{CSRF_FORM_FIELD}' or {CSRF_HEADER})",
        )


CsrfChecked = Depends(verify_csrf)

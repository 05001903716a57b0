"""Sign up, log in and out (pages and /api/v1/auth), and /api/v1/me.

Browser logins get a session cookie: the signed session id, HttpOnly, SameSite=Lax,
Secure when the request came over https. Scripts use API tokens (see routes.tokens);
/api/v1/auth/login exists for browser JavaScript and API tests, and takes JSON only, so
a cross-site form cannot post to it.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from medarena.accounts.errors import AuthError, LoginThrottled
from medarena.accounts.sessions import (
    SESSION_LIFETIME,
    create_web_session,
    end_web_session,
    new_anonymous_csrf,
    read_anonymous_csrf,
    sign_session_id,
)
from medarena.accounts.users import authenticate, create_user
from medarena.config import Settings
from medarena.db.platform_models import User
from medarena.errors import InputError
from medarena.web.deps import (
    ANON_CSRF_COOKIE,
    SESSION_COOKIE,
    CurrentUser,
    DbSession,
    PrincipalDep,
    SettingsDep,
    TemplatesDep,
    verify_csrf,
)

log = logging.getLogger(__name__)
router = APIRouter()


def client_address(request: Request) -> str:
    """The client's address as the server sees it (behind a proxy: run uvicorn with
    --proxy-headers so this is the forwarded address)."""
    return request.client.host if request.client else "unknown"


def safe_next(target: str | None) -> str:
    """A local path to go to after login; anything else (other sites, //host) becomes /."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def user_public(user: User) -> dict[str, Any]:
    """What the API shows of an account (never the hash or lockout counters)."""
    return {
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "is_admin": user.is_admin,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }


def set_session_cookie(
    response: Response, request: Request, settings: Settings, session_id: str
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        sign_session_id(settings.secret, session_id),
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def start_session(
    db: DbSession,
    request: Request,
    settings: Settings,
    user: User,
    principal: PrincipalDep,
    response: Response,
) -> str:
    """Start a fresh session (a new id at every login, so a planted id is useless)."""
    if principal is not None and principal.session_id:
        end_web_session(db, principal.session_id)
    row, session_id = create_web_session(db, user)
    db.commit()
    set_session_cookie(response, request, settings, session_id)
    return row.csrf_token


def anonymous_form(
    request: Request,
    templates: TemplatesDep,
    settings: Settings,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> HTMLResponse:
    """Render a pre-login form with a CSRF token bound to the medarena_csrf cookie."""
    token = read_anonymous_csrf(settings.secret, request.cookies.get(ANON_CSRF_COOKIE))
    cookie = None
    if token is None:
        token, cookie = new_anonymous_csrf(settings.secret)
    response = templates.TemplateResponse(
        request, name, {**context, "csrf_token": token}, status_code=status_code
    )
    if cookie:
        response.set_cookie(
            ANON_CSRF_COOKIE,
            cookie,
            max_age=86400,
            path="/",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(
    request: Request,
    templates: TemplatesDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    next: str = "/",
) -> Response:
    if principal is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return anonymous_form(request, templates, settings, "login.html", {"next": safe_next(next)})


@router.post("/login", include_in_schema=False, dependencies=[Depends(verify_csrf)])
def login_submit(
    request: Request,
    db: DbSession,
    templates: TemplatesDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> Response:
    try:
        user = authenticate(db, email, password, address=client_address(request))
    except AuthError as exc:
        status = exc.status_code
        response = anonymous_form(
            request,
            templates,
            settings,
            "login.html",
            {"next": safe_next(next), "error": str(exc), "email": email[:320]},
            status,
        )
        if isinstance(exc, LoginThrottled):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    redirect = RedirectResponse(safe_next(next), status_code=303)
    start_session(db, request, settings, user, principal, redirect)
    return redirect


@router.get("/signup", response_class=HTMLResponse, include_in_schema=False)
def signup_page(
    request: Request, templates: TemplatesDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    if principal is not None:
        return RedirectResponse("/account", status_code=303)
    return anonymous_form(request, templates, settings, "signup.html", {})


@router.post("/signup", include_in_schema=False, dependencies=[Depends(verify_csrf)])
def signup_submit(
    request: Request,
    db: DbSession,
    templates: TemplatesDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    password_repeat: Annotated[str, Form()],
    display_name: Annotated[str, Form()] = "",
) -> Response:
    context = {"email": email[:320], "display_name": display_name[:120]}
    try:
        if password != password_repeat:
            raise InputError("the two passwords differ", path="password_repeat")
        user = create_user(db, email, password, display_name=display_name)
        db.commit()
    except InputError as exc:
        db.rollback()
        return anonymous_form(
            request, templates, settings, "signup.html", {**context, "error": str(exc)}, 400
        )
    response = RedirectResponse("/account", status_code=303)
    start_session(db, request, settings, user, principal, response)
    return response


@router.get("/logout", response_class=HTMLResponse, include_in_schema=False)
def logout_page(request: Request, templates: TemplatesDep, principal: PrincipalDep) -> Response:
    """A confirmation form: logging out changes state, so it is a POST with a CSRF token."""
    if principal is None or principal.via != "session":
        return RedirectResponse("/", status_code=303)
    return templates.TemplateResponse(request, "logout.html", {})


@router.post("/logout", include_in_schema=False, dependencies=[Depends(verify_csrf)])
def logout_submit(db: DbSession, principal: PrincipalDep) -> Response:
    if principal is not None and principal.session_id:
        end_web_session(db, principal.session_id)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


class LoginIn(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


@router.post("/api/v1/auth/login", tags=["auth"])
def api_login(
    body: LoginIn,
    request: Request,
    response: Response,
    db: DbSession,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Log in with e-mail and password (JSON); sets the session cookie, returns the CSRF token.

    For browser code. Scripts should send a personal API token instead.
    """
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise HTTPException(415, "send the credentials as application/json")
    try:
        user = authenticate(db, body.email, body.password, address=client_address(request))
    except LoginThrottled as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    except AuthError as exc:
        raise HTTPException(401, str(exc)) from None
    csrf = start_session(db, request, settings, user, principal, response)
    return {"user": user_public(user), "csrf_token": csrf}


@router.post("/api/v1/auth/logout", tags=["auth"], dependencies=[Depends(verify_csrf)])
def api_logout(response: Response, db: DbSession, principal: PrincipalDep) -> dict[str, bool]:
    """End the browser session of this cookie (a no-op for token requests)."""
    if principal is not None and principal.session_id:
        end_web_session(db, principal.session_id)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"logged_out": True}


@router.get("/api/v1/me", tags=["auth"])
def api_me(user: CurrentUser) -> dict[str, Any]:
    """The account making the request."""
    return user_public(user)

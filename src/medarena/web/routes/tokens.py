"""The account page and /api/v1/tokens: personal API tokens, shown once, revocable."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from medarena.accounts.tokens import create_token, list_tokens, revoke_token
from medarena.db.platform_models import ApiToken
from medarena.errors import InputError, NotFoundError
from medarena.web.deps import CurrentUser, DbSession, TemplatesDep, verify_csrf

router = APIRouter()


def token_public(row: ApiToken) -> dict[str, Any]:
    """What is shown of a stored token: never its hash, only the prefix."""
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def _account_page(
    request: Request,
    templates: TemplatesDep,
    db: DbSession,
    user: CurrentUser,
    *,
    new_token: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        "account.html",
        {"user": user, "tokens": list_tokens(db, user.id), "new_token": new_token, "error": error},
        status_code=status_code,
    )
    # The page may hold a freshly created token: keep it out of every cache.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/account", response_class=HTMLResponse, include_in_schema=False)
def account_page(
    request: Request, templates: TemplatesDep, db: DbSession, user: CurrentUser
) -> HTMLResponse:
    return _account_page(request, templates, db, user)


@router.post("/account/tokens", include_in_schema=False, dependencies=[Depends(verify_csrf)])
def account_create_token(
    request: Request,
    templates: TemplatesDep,
    db: DbSession,
    user: CurrentUser,
    name: Annotated[str, Form()],
) -> HTMLResponse:
    """Create a token and show it in this response only (no redirect: never in a URL)."""
    try:
        _, plain = create_token(db, user, name)
        db.commit()
    except InputError as exc:
        db.rollback()
        return _account_page(request, templates, db, user, error=str(exc), status_code=400)
    return _account_page(request, templates, db, user, new_token=plain, status_code=201)


@router.post(
    "/account/tokens/{token_id}/revoke",
    include_in_schema=False,
    dependencies=[Depends(verify_csrf)],
)
def account_revoke_token(token_id: int, db: DbSession, user: CurrentUser) -> Response:
    try:
        revoke_token(db, user.id, token_id)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    db.commit()
    return RedirectResponse("/account", status_code=303)


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)


@router.get("/api/v1/tokens", tags=["tokens"])
def api_list_tokens(db: DbSession, user: CurrentUser) -> list[dict[str, Any]]:
    """Your API tokens, newest first (prefix only; revoked ones included)."""
    return [token_public(t) for t in list_tokens(db, user.id)]


@router.post(
    "/api/v1/tokens", tags=["tokens"], status_code=201, dependencies=[Depends(verify_csrf)]
)
def api_create_token(body: TokenIn, db: DbSession, user: CurrentUser) -> dict[str, Any]:
    """Create a token; ``token`` in this answer is the only time it is ever shown."""
    try:
        row, plain = create_token(db, user, body.name)
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None
    db.commit()
    return {**token_public(row), "token": plain}


@router.delete(
    "/api/v1/tokens/{token_id}",
    tags=["tokens"],
    status_code=204,
    dependencies=[Depends(verify_csrf)],
)
def api_revoke_token(token_id: int, db: DbSession, user: CurrentUser) -> Response:
    """Revoke one of your tokens; requests with it get 401 from now on."""
    try:
        revoke_token(db, user.id, token_id)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    db.commit()
    return Response(status_code=204)

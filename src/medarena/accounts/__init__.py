"""Accounts and access: users, password login with throttling, browser sessions with
CSRF tokens, personal API tokens, per-challenge roles and the audit log.

See docs/accounts.md for the rules; routes use them through medarena.web.deps.
"""

from medarena.accounts.audit import audit, list_audit
from medarena.accounts.errors import AuthError, LoginThrottled, PermissionDenied
from medarena.accounts.roles import (
    ROLES,
    can_organize,
    can_review,
    grant_role,
    has_role,
    require_organizer,
    revoke_role,
    roles_of,
)
from medarena.accounts.tokens import authenticate_token, create_token, list_tokens, revoke_token
from medarena.accounts.users import (
    authenticate,
    create_user,
    get_user_by_email,
    normalize_email,
    require_user,
    set_active,
    set_admin,
    set_password,
)

__all__ = [
    "ROLES",
    "AuthError",
    "LoginThrottled",
    "PermissionDenied",
    "audit",
    "authenticate",
    "authenticate_token",
    "can_organize",
    "can_review",
    "create_token",
    "create_user",
    "get_user_by_email",
    "grant_role",
    "has_role",
    "list_audit",
    "list_tokens",
    "normalize_email",
    "require_organizer",
    "require_user",
    "revoke_role",
    "revoke_token",
    "roles_of",
    "set_active",
    "set_admin",
    "set_password",
]

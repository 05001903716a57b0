"""Errors of authentication and authorization, kept apart from bad-input errors.

Each carries the HTTP status a web layer should answer with, so routes translate them
without guessing; the CLI shows the message as it is.
"""

from __future__ import annotations

from medarena.errors import MedarenaError


class AuthError(MedarenaError):
    """Who is asking could not be established (wrong password, revoked token ...)."""

    status_code = 401


class LoginThrottled(AuthError):
    """Too many failed logins for an account or from a client address."""

    status_code = 429

    def __init__(self, scope: str, retry_after: int) -> None:
        self.scope = scope
        self.retry_after = max(1, int(retry_after))
        super().__init__(
            f"too many failed login attempts {scope}; try again in {self.retry_after} s"
        )


class PermissionDenied(MedarenaError):
    """The caller is known but may not do this."""

    status_code = 403

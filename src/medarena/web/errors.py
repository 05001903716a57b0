"""The HTTP status a page or API route answers for an error of the platform's services."""

from __future__ import annotations

from medarena.challenges.service import PermissionDenied
from medarena.errors import MedarenaError, NotFoundError


def http_status(exc: MedarenaError) -> int:
    """403 for a refused permission, 404 for something that does not exist, else 400."""
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    return 400

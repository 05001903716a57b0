"""The audit log: organizer and admin actions, and every read of hidden data.

An event joins the caller's transaction, so it is stored exactly when the action is:
call :func:`audit` before committing the change it describes.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medarena.db.platform_models import AuditEvent

log = logging.getLogger(__name__)


def audit(
    session: Session,
    actor_id: int | None,
    action: str,
    *,
    challenge_id: int | None = None,
    target: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event to ``session`` (flushed, not committed: the caller commits).

    ``actor_id`` is None for actions taken from the command line without a user.
    ``action`` is a short dotted verb such as ``user.deactivate`` or ``data.hidden_read``;
    ``detail`` must be JSON-serialisable and must not hold patient identifiers.
    """
    if not action or len(action) > 64:
        raise ValueError(f"audit action must be 1-64 characters, got {action!r}")
    event = AuditEvent(
        actor_user_id=actor_id,
        action=action,
        challenge_id=challenge_id,
        target=target[:255],
        detail=dict(detail or {}),
    )
    session.add(event)
    session.flush()
    log.info("audit %s by user %s (challenge %s)", action, actor_id, challenge_id)
    return event


def list_audit(
    session: Session, *, challenge_id: int | None = None, limit: int = 200
) -> list[AuditEvent]:
    """The newest audit events, optionally of one challenge only."""
    stmt = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if challenge_id is not None:
        stmt = stmt.where(AuditEvent.challenge_id == challenge_id)
    return list(session.scalars(stmt))

"""Per-challenge roles (organizer, reviewer, participant) and the platform admin flag.

Checks are plain functions over a Session so that services, routes and the CLI share
them. A platform admin may do whatever an organizer may (:func:`can_organize`), but
``has_role`` answers only about roles actually granted.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from medarena.accounts.errors import PermissionDenied
from medarena.db.platform_models import ChallengeRole, User
from medarena.errors import InputError

Role = Literal["organizer", "reviewer", "participant"]
ROLES: tuple[str, ...] = ("organizer", "reviewer", "participant")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InputError(f"a challenge role is one of {', '.join(ROLES)}", path="role", value=role)


def has_role(session: Session, user_id: int, challenge_id: int, role: str) -> bool:
    """True when ``user_id`` holds ``role`` in challenge ``challenge_id``."""
    _check_role(role)
    return (
        session.scalar(
            select(ChallengeRole.id).where(
                ChallengeRole.user_id == user_id,
                ChallengeRole.challenge_id == challenge_id,
                ChallengeRole.role == role,
            )
        )
        is not None
    )


def roles_of(session: Session, user_id: int, challenge_id: int) -> set[str]:
    """Every role the user holds in the challenge."""
    return set(
        session.scalars(
            select(ChallengeRole.role).where(
                ChallengeRole.user_id == user_id, ChallengeRole.challenge_id == challenge_id
            )
        )
    )


def grant_role(session: Session, user_id: int, challenge_id: int, role: str) -> bool:
    """Give a role (flushed); False when it was held already."""
    if has_role(session, user_id, challenge_id, role):
        return False
    session.add(ChallengeRole(user_id=user_id, challenge_id=challenge_id, role=role))
    session.flush()
    return True


def revoke_role(session: Session, user_id: int, challenge_id: int, role: str) -> bool:
    """Take a role away (flushed); False when it was not held."""
    _check_role(role)
    result = session.execute(
        delete(ChallengeRole).where(
            ChallengeRole.user_id == user_id,
            ChallengeRole.challenge_id == challenge_id,
            ChallengeRole.role == role,
        )
    )
    session.flush()
    return bool(result.rowcount) if isinstance(result, CursorResult) else False


def can_organize(session: Session, user: User | None, challenge_id: int) -> bool:
    """True for platform admins and the challenge's organizers."""
    if user is None or not user.is_active:
        return False
    return user.is_admin or has_role(session, user.id, challenge_id, "organizer")


def can_review(session: Session, user: User | None, challenge_id: int) -> bool:
    """True for those who may see all results of a challenge: organizers, reviewers, admins."""
    if user is None or not user.is_active:
        return False
    return can_organize(session, user, challenge_id) or has_role(
        session, user.id, challenge_id, "reviewer"
    )


def require_organizer(session: Session, user: User | None, challenge_id: int) -> None:
    """Raise PermissionDenied unless the user may organize the challenge."""
    if not can_organize(session, user, challenge_id):
        raise PermissionDenied("only the organizers of this challenge may do this")

"""Teams of a challenge: create, invite by token link, accept, leave, captain, size cap.

A user is in at most one team per challenge; the database enforces it (TeamMember's
unique (challenge_id, user_id)) and these functions check it first to give a clear message.
Submission limits are per team, so a member may not leave a team that has submitted
(that would let one person spend several teams' limits); an organizer can remove them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medarena.accounts.audit import audit
from medarena.challenges.service import (
    PermissionDenied,
    load_spec,
    lock_challenge,
    require_organizer,
    require_participant,
)
from medarena.db.platform_models import (
    Challenge,
    Submission,
    Team,
    TeamInvitation,
    TeamMember,
    User,
)
from medarena.errors import InputError, NotFoundError

INVITATION_DAYS = 14


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _utc(t: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they are stored in UTC.
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def team_of(session: Session, challenge_id: int, user_id: int) -> Team | None:
    """The user's team in the challenge, or None."""
    return session.scalars(
        select(Team)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .where(TeamMember.challenge_id == challenge_id, TeamMember.user_id == user_id)
    ).one_or_none()


def get_team(session: Session, challenge: Challenge, team_id: int) -> Team:
    """The team ``team_id`` of ``challenge``; NotFoundError otherwise."""
    team = session.get(Team, team_id)
    if team is None or team.challenge_id != challenge.id:
        raise NotFoundError(f"no team {team_id} in challenge {challenge.slug!r}")
    return team


def list_teams(session: Session, challenge_id: int) -> list[Team]:
    """Teams of the challenge by name."""
    return list(
        session.scalars(select(Team).where(Team.challenge_id == challenge_id).order_by(Team.name))
    )


@dataclass(frozen=True)
class MemberView:
    """A team member as pages show it (no e-mail address: members see display names)."""

    user_id: int
    display_name: str
    is_captain: bool
    joined_at: dt.datetime


def members(session: Session, team_id: int) -> list[MemberView]:
    """Members of a team, captain first."""
    rows = session.execute(
        select(TeamMember, User.display_name)
        .join(User, User.id == TeamMember.user_id)
        .where(TeamMember.team_id == team_id)
        .order_by(TeamMember.is_captain.desc(), TeamMember.joined_at, TeamMember.id)
    ).all()
    return [MemberView(m.user_id, name, m.is_captain, m.joined_at) for m, name in rows]


def _size(session: Session, team_id: int) -> int:
    n = session.scalar(
        select(func.count()).select_from(TeamMember).where(TeamMember.team_id == team_id)
    )
    return int(n or 0)


def _membership(session: Session, team: Team, user_id: int) -> TeamMember | None:
    return session.scalars(
        select(TeamMember).where(TeamMember.team_id == team.id, TeamMember.user_id == user_id)
    ).one_or_none()


def _require_captain(session: Session, team: Team, user_id: int) -> None:
    m = _membership(session, team, user_id)
    if m is None or not m.is_captain:
        raise PermissionDenied(f"only the captain of team {team.name!r} may do this")


def _require_free(session: Session, challenge: Challenge, user_id: int) -> None:
    current = team_of(session, challenge.id, user_id)
    if current is not None:
        raise InputError(
            f"you are already in team {current.name!r} of this challenge (one team per "
            "person per challenge)",
            hint="leave it first",
        )


def create_team(session: Session, challenge: Challenge, user: User, name: str) -> Team:
    """Create a team with ``user`` as its captain."""
    require_participant(session, challenge, user)
    name = " ".join(name.split())
    if not 1 <= len(name) <= 120:
        raise InputError("a team name has 1 to 120 characters", value=name)
    lock_challenge(session, challenge.id)
    _require_free(session, challenge, user.id)
    taken = session.scalars(
        select(Team.id).where(
            Team.challenge_id == challenge.id, func.lower(Team.name) == name.lower()
        )
    ).first()
    if taken is not None:
        raise InputError("a team with this name exists in the challenge", value=name)
    team = Team(challenge_id=challenge.id, name=name, created_by=user.id)
    session.add(team)
    session.flush()
    session.add(
        TeamMember(team_id=team.id, challenge_id=challenge.id, user_id=user.id, is_captain=True)
    )
    session.flush()
    return team


def invite(
    session: Session, challenge: Challenge, team: Team, actor: User, email: str
) -> tuple[TeamInvitation, str]:
    """Invite ``email`` into ``team`` (captain only); returns the invitation and its token.

    The token is shown once (as a link); only its sha256 is stored.
    """
    _require_captain(session, team, actor.id)
    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise InputError("not an e-mail address", value=email)
    cap = load_spec(challenge).team_size_max
    if _size(session, team.id) >= cap:
        raise InputError(f"team {team.name!r} is full: the challenge allows {cap} members")
    token = secrets.token_urlsafe(32)
    inv = TeamInvitation(team_id=team.id, email=email, token_hash=_hash(token), invited_by=actor.id)
    session.add(inv)
    session.flush()
    return inv, token


def pending_invitations(session: Session, team_id: int) -> list[TeamInvitation]:
    """Invitations of a team neither accepted nor revoked."""
    return list(
        session.scalars(
            select(TeamInvitation).where(
                TeamInvitation.team_id == team_id,
                TeamInvitation.accepted_at.is_(None),
                TeamInvitation.revoked_at.is_(None),
            )
        )
    )


def find_invitation(session: Session, token: str) -> TeamInvitation:
    """The usable invitation of ``token``; NotFoundError for unknown, used or expired ones."""
    inv = session.scalars(
        select(TeamInvitation).where(TeamInvitation.token_hash == _hash(token))
    ).one_or_none()
    # One message for every unusable case, so a guessed token learns nothing.
    unusable = NotFoundError("this invitation link is unknown, used, revoked or expired")
    if inv is None or inv.accepted_at is not None or inv.revoked_at is not None:
        raise unusable
    if dt.datetime.now(dt.UTC) - _utc(inv.created_at) > dt.timedelta(days=INVITATION_DAYS):
        raise unusable
    return inv


def accept_invitation(session: Session, token: str, user: User) -> Team:
    """Join the invitation's team: the invitation must be addressed to ``user``'s e-mail."""
    inv = find_invitation(session, token)
    team = session.get(Team, inv.team_id)
    challenge = session.get(Challenge, team.challenge_id) if team else None
    if team is None or challenge is None:
        raise NotFoundError("this invitation's team no longer exists")
    if user.email.strip().lower() != inv.email:
        raise PermissionDenied("this invitation was sent to another e-mail address")
    require_participant(session, challenge, user)
    lock_challenge(session, challenge.id)  # two invitees must not both take the last place
    _require_free(session, challenge, user.id)
    cap = load_spec(challenge).team_size_max
    if _size(session, team.id) >= cap:
        raise InputError(f"team {team.name!r} is full: the challenge allows {cap} members")
    session.add(TeamMember(team_id=team.id, challenge_id=challenge.id, user_id=user.id))
    inv.accepted_at = dt.datetime.now(dt.UTC)
    session.flush()
    return team


def revoke_invitation(session: Session, team: Team, actor: User, invitation_id: int) -> None:
    """Withdraw a pending invitation (captain only)."""
    _require_captain(session, team, actor.id)
    inv = session.get(TeamInvitation, invitation_id)
    if inv is None or inv.team_id != team.id:
        raise NotFoundError(f"no invitation {invitation_id} for team {team.name!r}")
    if inv.revoked_at is None and inv.accepted_at is None:
        inv.revoked_at = dt.datetime.now(dt.UTC)
        session.flush()


def _has_submissions(session: Session, team_id: int) -> bool:
    return (
        session.scalars(select(Submission.id).where(Submission.team_id == team_id)).first()
        is not None
    )


def _drop_member(session: Session, team: Team, member: TeamMember) -> None:
    was_captain = member.is_captain
    session.delete(member)
    session.flush()
    rest = session.scalars(
        select(TeamMember)
        .where(TeamMember.team_id == team.id)
        .order_by(TeamMember.joined_at, TeamMember.id)
    ).all()
    if not rest:
        if not _has_submissions(session, team.id):
            session.delete(team)
    elif was_captain:
        rest[0].is_captain = True  # the longest-standing member takes over
    session.flush()


def leave_team(session: Session, challenge: Challenge, user: User) -> None:
    """Leave one's team; refused once the team has submitted (ask an organizer)."""
    team = team_of(session, challenge.id, user.id)
    if team is None:
        raise InputError("you are not in a team of this challenge")
    if _has_submissions(session, team.id):
        raise InputError(
            f"team {team.name!r} has submissions, so members cannot leave it on their own "
            "(submission limits are per team)",
            hint="ask an organizer to remove you",
        )
    member = _membership(session, team, user.id)
    assert member is not None
    _drop_member(session, team, member)


def remove_member(
    session: Session, challenge: Challenge, team: Team, user_id: int, *, actor: User
) -> None:
    """Organizer: take a member out of a team (also after it submitted). Audited."""
    require_organizer(session, challenge, actor)
    member = _membership(session, team, user_id)
    if member is None:
        raise NotFoundError(f"user {user_id} is not in team {team.name!r}")
    audit(
        session,
        actor.id,
        "team.remove_member",
        challenge_id=challenge.id,
        target=f"team:{team.id}",
        detail={"user_id": user_id},
    )
    _drop_member(session, team, member)


def make_captain(session: Session, team: Team, actor: User, user_id: int) -> None:
    """Hand the captaincy to another member (captain only)."""
    _require_captain(session, team, actor.id)
    target = _membership(session, team, user_id)
    if target is None:
        raise NotFoundError(f"user {user_id} is not in team {team.name!r}")
    for m in session.scalars(select(TeamMember).where(TeamMember.team_id == team.id)):
        m.is_captain = m.user_id == user_id
    session.flush()

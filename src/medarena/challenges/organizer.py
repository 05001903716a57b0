"""What the organizer pages read and change: participants, roles, phase dates, audit, exports.

Queries over one challenge for its organizers (all in this module), and two actions that
go through the challenge service so that they are stored as any other change is: a role
given or taken (:func:`change_role`) and a phase's dates moved (:func:`set_phase_dates`,
a new spec revision). Like the service, nothing here commits: the caller does.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medarena.accounts.audit import audit
from medarena.accounts.roles import roles_of
from medarena.challenges import service
from medarena.challenges.spec import ChallengeSpec
from medarena.db.platform_models import (
    AuditEvent,
    Challenge,
    ChallengeRole,
    RulesAcceptance,
    Submission,
    Team,
    TeamMember,
    User,
)
from medarena.errors import InputError, NotFoundError

# Roles an organizer gives or takes on the participants page; "participant" is a user's
# own act (accepting the rules), never granted by someone else.
GRANTABLE_ROLES: tuple[str, ...] = ("reviewer", "organizer")
STATUSES: tuple[str, ...] = ("queued", "running", "scored", "failed", "cancelled")
AUDIT_PAGE_SIZE = 50
AUDIT_MAX_LIMIT = 500


# ---------------------------------------------------------------------------- participants


@dataclass
class ParticipantRow:
    """A user of a challenge: someone with a role, a team or an acceptance of its rules."""

    user_id: int
    display_name: str
    email: str
    active: bool
    team_id: int | None = None
    team: str | None = None
    captain: bool = False
    roles: list[str] = field(default_factory=list)
    accepted_revision: int | None = None
    accepted_at: dt.datetime | None = None
    submissions: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "display_name": self.display_name,
            "email": self.email,
            "active": self.active,
            "team": {"id": self.team_id, "name": self.team} if self.team_id else None,
            "captain": self.captain,
            "roles": self.roles,
            "rules_accepted": self.accepted_revision is not None,
            "rules_revision": self.accepted_revision,
            "rules_accepted_at": _iso(self.accepted_at),
            "submissions": self.submissions,
        }


@dataclass
class TeamRow:
    """A team with its members' names and its submissions by status."""

    id: int
    name: str
    members: list[str]
    submissions: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.submissions.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "members": self.members,
            "submissions": self.submissions,
            "total": self.total,
        }


def _iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).isoformat()


def challenge_user_ids(session: Session, challenge_id: int) -> set[int]:
    """Ids of the users of a challenge: any role, team membership or rules acceptance."""
    ids: set[int] = set()
    for col, where in (
        (ChallengeRole.user_id, ChallengeRole.challenge_id),
        (TeamMember.user_id, TeamMember.challenge_id),
        (RulesAcceptance.user_id, RulesAcceptance.challenge_id),
    ):
        ids.update(session.scalars(select(col).where(where == challenge_id)))
    return ids


def participants(session: Session, challenge_id: int) -> list[ParticipantRow]:
    """Every user of the challenge with team, roles, rules acceptance and submission count."""
    ids = challenge_user_ids(session, challenge_id)
    if not ids:
        return []
    users = session.scalars(select(User).where(User.id.in_(ids))).all()
    rows = {u.id: ParticipantRow(u.id, u.display_name, u.email, bool(u.is_active)) for u in users}
    for uid, role in session.execute(
        select(ChallengeRole.user_id, ChallengeRole.role).where(
            ChallengeRole.challenge_id == challenge_id
        )
    ):
        rows[uid].roles.append(role)
    for uid, tid, name, captain in session.execute(
        select(TeamMember.user_id, Team.id, Team.name, TeamMember.is_captain)
        .join(Team, Team.id == TeamMember.team_id)
        .where(TeamMember.challenge_id == challenge_id)
    ):
        rows[uid].team_id, rows[uid].team, rows[uid].captain = tid, name, bool(captain)
    for uid, rev, at in session.execute(
        select(
            RulesAcceptance.user_id, RulesAcceptance.spec_revision, RulesAcceptance.accepted_at
        ).where(RulesAcceptance.challenge_id == challenge_id)
    ):
        rows[uid].accepted_revision, rows[uid].accepted_at = rev, at
    for submitter, n in session.execute(
        select(Submission.user_id, func.count())
        .where(Submission.challenge_id == challenge_id, Submission.user_id.is_not(None))
        .group_by(Submission.user_id)
    ):
        if submitter is not None and submitter in rows:
            rows[submitter].submissions = int(n)
    for r in rows.values():
        r.roles.sort(key=lambda x: ("organizer", "reviewer", "participant").index(x))
    return sorted(rows.values(), key=lambda r: (r.team or "\uffff", r.display_name.lower()))


def team_rows(session: Session, challenge_id: int) -> list[TeamRow]:
    """The challenge's teams by name, with members and submission counts by status."""
    teams = {
        t.id: TeamRow(t.id, t.name, [], {})
        for t in session.scalars(
            select(Team).where(Team.challenge_id == challenge_id).order_by(Team.name)
        )
    }
    for tid, name in session.execute(
        select(TeamMember.team_id, User.display_name)
        .join(User, User.id == TeamMember.user_id)
        .where(TeamMember.challenge_id == challenge_id)
        .order_by(User.display_name)
    ):
        teams[tid].members.append(name)
    for tid, status, n in session.execute(
        select(Submission.team_id, Submission.status, func.count())
        .where(Submission.challenge_id == challenge_id)
        .group_by(Submission.team_id, Submission.status)
    ):
        if tid in teams:
            teams[tid].submissions[status] = int(n)
    return list(teams.values())


def submission_counts(session: Session, challenge_id: int) -> dict[str, dict[str, int]]:
    """Submissions per phase slug and status, e.g. ``{"prelim": {"scored": 3}}``."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for phase, status, n in session.execute(
        select(Submission.phase_slug, Submission.status, func.count())
        .where(Submission.challenge_id == challenge_id)
        .group_by(Submission.phase_slug, Submission.status)
    ):
        out[phase][status] = int(n)
    return dict(out)


def _find_user(session: Session, challenge_id: int, user_id: int | None, email: str) -> User:
    if email.strip():
        from medarena.accounts.users import get_user_by_email

        user = get_user_by_email(session, email)
        if user is None:
            raise InputError("no account has this e-mail address", path="email", value=email)
        return user
    if user_id is None:
        raise InputError("name the user: a user id of the challenge or an e-mail", path="user_id")
    if user_id not in challenge_user_ids(session, challenge_id):
        raise NotFoundError(f"no user {user_id} in this challenge")
    found = session.get(User, user_id)
    if found is None:
        raise NotFoundError(f"no user {user_id} in this challenge")
    return found


def change_role(
    session: Session,
    challenge: Challenge,
    *,
    role: str,
    grant: bool,
    actor_id: int,
    user_id: int | None = None,
    email: str = "",
) -> User:
    """Give or take the reviewer or organizer role of a user (by id, or by e-mail). Audited.

    By id the user must already belong to the challenge; by e-mail any existing account
    may be made a reviewer or organizer (an outside judge, say). The service keeps the
    last organizer; taking a role that is not held is refused, so the log stays truthful.
    """
    if role not in GRANTABLE_ROLES:
        raise InputError(
            f"organizers give or take the roles {' and '.join(GRANTABLE_ROLES)}",
            path="role",
            value=role,
        )
    user = _find_user(session, challenge.id, user_id, email)
    held = role in roles_of(session, user.id, challenge.id)
    if grant:
        if held:
            raise InputError(f"{user.display_name} is already {role}", path="role", value=role)
        if not user.is_active:
            raise InputError("this account is deactivated", path="user", value=user.id)
        service.grant_role(session, challenge, user.id, role, actor_id=actor_id)
    else:
        if not held:
            raise InputError(f"{user.display_name} is not {role}", path="role", value=role)
        service.revoke_role(session, challenge, user.id, role, actor_id=actor_id)
    return user


# ---------------------------------------------------------------------------- phase dates


def _form_time(text: str, field_name: str) -> dt.datetime:
    """A date and time from a form: ISO 8601; without an offset it is read as UTC."""
    value = text.strip()
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            "must be a date and time such as 2026-03-01T12:00 (UTC unless an offset is given)",
            path=field_name,
            value=text,
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def form_value(t: dt.datetime) -> str:
    """How a phase time is shown in a ``datetime-local`` input: UTC, to the minute."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")


def display_time(t: dt.datetime) -> str:
    """A phase time for reading: UTC, to the minute."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _keep_unchanged(new: dt.datetime, old: dt.datetime) -> dt.datetime:
    # The form shows times to the minute: a value sent back as shown is the stored one,
    # not a change that drops its seconds.
    return old if form_value(new) == form_value(old) and new.second == 0 else new


def set_phase_dates(
    session: Session,
    challenge: Challenge,
    phase_slug: str,
    *,
    opens: str,
    closes: str,
    actor_id: int,
) -> bool:
    """Move a phase's open and close times: a new spec revision, audited. False if unchanged.

    Bad input is an InputError naming the field (``phases[i].opens`` or ``.closes``), the
    value and the rule; the spec's own checks apply (closes after opens, a phase opens
    after the phase it requires), and nothing is stored when one fails.
    """
    spec = service.load_spec(challenge)
    index = next((i for i, p in enumerate(spec.phases) if p.slug == phase_slug), None)
    if index is None:
        raise NotFoundError(f"challenge {challenge.slug!r} has no phase {phase_slug!r}")
    old = spec.phases[index]
    prefix = f"phases[{index}]"
    new_opens = _keep_unchanged(_form_time(opens, f"{prefix}.opens"), old.opens)
    new_closes = _keep_unchanged(_form_time(closes, f"{prefix}.closes"), old.closes)
    if new_opens == old.opens and new_closes == old.closes:
        return False
    data = spec.model_dump(mode="json")
    data["phases"][index]["opens"] = new_opens.isoformat()
    data["phases"][index]["closes"] = new_closes.isoformat()
    try:
        new_spec = ChallengeSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        where = loc.replace(f"phases.{index}.", f"{prefix}.") if loc else prefix
        raise InputError(
            err["msg"].removeprefix("Value error, "),
            path=where,
            value=(new_closes if where.endswith("closes") else new_opens).isoformat(),
        ) from None
    service.update_challenge(session, challenge.slug, new_spec, actor_id=actor_id)
    audit(
        session,
        actor_id,
        "challenge.phase_dates",
        challenge_id=challenge.id,
        target=f"phase:{phase_slug}",
        detail={
            "revision": challenge.spec_revision,
            "opens": [old.opens.isoformat(), new_opens.isoformat()],
            "closes": [old.closes.isoformat(), new_closes.isoformat()],
        },
    )
    return True


# ---------------------------------------------------------------------------- audit log


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: dt.datetime
    actor: str
    actor_id: int | None
    action: str
    target: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "actor": self.actor,
            "actor_id": self.actor_id,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


def audit_actions(session: Session, challenge_id: int) -> list[str]:
    """The distinct actions in a challenge's audit log (for the filter)."""
    return sorted(
        session.scalars(
            select(AuditEvent.action).where(AuditEvent.challenge_id == challenge_id).distinct()
        )
    )


def audit_events(
    session: Session,
    challenge_id: int,
    *,
    action: str | None = None,
    limit: int = AUDIT_PAGE_SIZE,
    offset: int = 0,
) -> tuple[int, list[AuditRow]]:
    """(total matching, one page of them newest first) of a challenge's audit events."""
    if not 1 <= limit <= AUDIT_MAX_LIMIT:
        raise InputError(f"must be between 1 and {AUDIT_MAX_LIMIT}", path="limit", value=limit)
    if offset < 0:
        raise InputError("must not be negative", path="offset", value=offset)
    where = [AuditEvent.challenge_id == challenge_id]
    if action:
        where.append(AuditEvent.action == action)
    total = int(session.scalar(select(func.count()).select_from(AuditEvent).where(*where)) or 0)
    stmt = (
        select(AuditEvent, User.display_name)
        .outerjoin(User, User.id == AuditEvent.actor_user_id)
        .where(*where)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = [
        AuditRow(
            e.id,
            e.at,
            name or ("command line" if e.actor_user_id is None else f"user {e.actor_user_id}"),
            e.actor_user_id,
            e.action,
            e.target,
            dict(e.detail or {}),
        )
        for e, name in session.execute(stmt)
    ]
    return total, rows


# ---------------------------------------------------------------------------- export


def _text_cell(value: str) -> str:
    # A team name such as "=HYPERLINK(...)" must not become a formula in a spreadsheet.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _num(v: Any) -> str:
    if v is None:
        return ""
    f = float(v)
    return repr(f) if math.isfinite(f) else str(f)


def submissions_csv(session: Session, challenge: Challenge) -> tuple[str, int]:
    """(CSV text, row count) of every submission of a challenge, oldest first.

    Columns: id, team, submitter, track, phase, status, created_at, scored_at,
    primary_score, error, then one ``score:<metric>`` column per metric seen.
    """
    rows = session.execute(
        select(Submission, Team.name, User.display_name)
        .join(Team, Team.id == Submission.team_id)
        .outerjoin(User, User.id == Submission.user_id)
        .where(Submission.challenge_id == challenge.id)
        .order_by(Submission.created_at, Submission.id)
    ).all()
    metrics = sorted({m for sub, _, _ in rows for m in (sub.scores or {})})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "submission_id",
            "team",
            "submitter",
            "track",
            "phase",
            "status",
            "created_at",
            "scored_at",
            "primary_score",
            "error",
            *(f"score:{m}" for m in metrics),
        ]
    )
    for sub, team, submitter in rows:
        w.writerow(
            [
                sub.id,
                _text_cell(team),
                _text_cell(submitter or ""),
                sub.track_slug,
                sub.phase_slug,
                sub.status,
                _iso(sub.created_at),
                _iso(sub.scored_at) or "",
                _num(sub.primary_score),
                _text_cell(sub.error or ""),
                *(_num((sub.scores or {}).get(m)) for m in metrics),
            ]
        )
    return buf.getvalue(), len(rows)

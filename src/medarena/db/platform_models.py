"""Tables of the challenge platform: accounts, challenges, teams, submissions, jobs, audit.

Kept beside the research-data tables (models.py) on the same declarative Base, so one
Alembic chain migrates both.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column

from medarena.db.models import Base, UTCDateTime, utcnow

_TS = UTCDateTime()

_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class ScoreMap(TypeDecorator[dict[str, Any]]):
    """JSON of metric name -> float that keeps inf, -inf and NaN on every backend.

    Aggregate means may be infinite (PSNR of a perfect prediction) or NaN (no case defines
    the metric). PostgreSQL's json type refuses the Infinity/NaN tokens Python writes, so
    they are stored as the strings "inf", "-inf" and "nan" and read back as floats.
    """

    impl = JSON
    cache_ok = True

    def process_bind_param(
        self, value: dict[str, Any] | None, dialect: Dialect
    ) -> dict[str, Any] | None:
        if value is None:
            return None
        return {
            k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in value.items()
        }

    def process_result_value(
        self, value: dict[str, Any] | None, dialect: Dialect
    ) -> dict[str, Any] | None:
        if value is None:
            return None
        return {k: _NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in value.items()}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)


class ApiToken(Base):
    """A personal token for scripts: shown once, stored as a sha256 hash, revocable."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)


class WebSession(Base):
    """A browser session; the cookie carries the signed id, the CSRF token lives here."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(_TS)


class LoginAttempt(Base):
    """Failed and successful logins by account and by client address (throttling)."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(400))
    at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    success: Mapped[bool] = mapped_column(Boolean, default=False)


class Challenge(Base):
    __tablename__ = "challenges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the validated YAML spec, as JSON
    spec_revision: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)


class ChallengeRole(Base):
    """Per-challenge role of a user: organizer, reviewer or participant."""

    __tablename__ = "challenge_roles"
    __table_args__ = (UniqueConstraint("challenge_id", "user_id", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenge_id: Mapped[int] = mapped_column(
        ForeignKey("challenges.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)


class RulesAcceptance(Base):
    __tablename__ = "rules_acceptances"
    __table_args__ = (UniqueConstraint("challenge_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    spec_revision: Mapped[int] = mapped_column(Integer)
    accepted_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("challenge_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenge_id: Mapped[int] = mapped_column(
        ForeignKey("challenges.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(120))
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)


class TeamMember(Base):
    """Membership; (challenge_id, user_id) is unique: one team per user per challenge."""

    __tablename__ = "team_members"
    __table_args__ = (UniqueConstraint("challenge_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("challenges.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    is_captain: Mapped[bool] = mapped_column(Boolean, default=False)
    joined_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)


class TeamInvitation(Base):
    __tablename__ = "team_invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (
        Index("ix_submissions_phase_track_team", "phase_slug", "track_slug", "team_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenge_id: Mapped[int] = mapped_column(
        ForeignKey("challenges.id", ondelete="CASCADE"), index=True
    )
    track_slug: Mapped[str] = mapped_column(String(64))
    phase_slug: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(16), default="predictions")  # | model
    filename: Mapped[str] = mapped_column(String(255))
    archive_digest: Mapped[str] = mapped_column(String(64))
    archive_size: Mapped[int] = mapped_column(BigInteger)
    # queued | running | scored | failed | cancelled
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # shown to the team
    counts_toward_limit: Mapped[bool] = mapped_column(Boolean, default=True)
    result_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    primary_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    scores: Mapped[dict[str, Any]] = mapped_column(ScoreMap, default=dict)  # aggregate means
    score_revision: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow, index=True)
    scored_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)


class Job(Base):
    """A durable unit of background work, claimed under a lease.

    A worker that dies leaves its lease to expire; the job is then claimed again.
    ``attempts`` counts claims; a job whose failure is the user's input is not retried.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "state", "run_after"),
        UniqueConstraint("kind", "dedupe_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # queued | running | done | failed
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(120), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(_TS, nullable=True)


class AuditEvent(Base):
    """Organizer and admin actions, and every read of hidden data."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(_TS, default=utcnow, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    action: Mapped[str] = mapped_column(String(64))
    challenge_id: Mapped[int | None] = mapped_column(
        ForeignKey("challenges.id", ondelete="SET NULL"), nullable=True, index=True
    )
    target: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

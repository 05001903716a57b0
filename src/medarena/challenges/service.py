"""Challenges as stored objects: create and update from a spec, roles, rules acceptance.

Every function takes the caller's SQLAlchemy Session and leaves committing to the caller
(route, CLI command or test), so an action and its audit event land in one transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from medarena.accounts.audit import audit
from medarena.accounts.errors import PermissionDenied
from medarena.accounts.roles import can_organize, roles_of
from medarena.challenges.spec import ChallengeSpec, Phase, Track
from medarena.db.models import Case, Dataset, Split, SplitAssignment
from medarena.db.platform_models import (
    Challenge,
    ChallengeRole,
    RulesAcceptance,
    Submission,
    User,
)
from medarena.errors import InputError, NotFoundError
from medarena.evaluation.tasks import ImageConfig

log = logging.getLogger(__name__)


Role = Literal["organizer", "reviewer", "participant"]
ROLES: tuple[Role, ...] = ("organizer", "reviewer", "participant")


# ---------------------------------------------------------------------------- lookup


def get_challenge(session: Session, slug: str) -> Challenge:
    """The challenge named ``slug``; NotFoundError otherwise."""
    ch = session.scalars(select(Challenge).where(Challenge.slug == slug)).one_or_none()
    if ch is None:
        raise NotFoundError(f"no challenge named {slug!r}")
    return ch


def load_spec(challenge: Challenge) -> ChallengeSpec:
    """The validated spec of a stored challenge."""
    return ChallengeSpec.model_validate(challenge.spec)


def list_challenges(session: Session) -> list[Challenge]:
    """All challenges, newest first."""
    return list(session.scalars(select(Challenge).order_by(Challenge.created_at.desc())))


def find_track_phase(spec: ChallengeSpec, track_slug: str, phase_slug: str) -> tuple[Track, Phase]:
    """The (track, phase) pair, checking that the track takes part in the phase."""
    track, phase = spec.track(track_slug), spec.phase(phase_slug)
    spec.scored_subset(track, phase)  # raises when the track is not in the phase
    return track, phase


# ---------------------------------------------------------------------------- data checks


@dataclass(frozen=True)
class SubsetInfo:
    """A subset of a dataset split: how many cases, and whether it is hidden."""

    n_cases: int
    hidden: bool


def subset_info(session: Session, dataset: str, split: str, subset: str) -> SubsetInfo:
    """Size and hidden flag of a subset; InputError naming what is missing otherwise."""
    ds = session.scalars(select(Dataset).where(Dataset.name == dataset)).one_or_none()
    if ds is None:
        raise InputError("no such dataset in the catalogue", value=dataset)
    sp = session.scalars(
        select(Split).where(Split.dataset_id == ds.id, Split.name == split)
    ).one_or_none()
    if sp is None:
        known = session.scalars(
            select(Split.name).where(Split.dataset_id == ds.id).order_by(Split.name)
        ).all()
        raise InputError(
            f"dataset {dataset!r} has no such split; splits: {', '.join(known) or '(none)'}",
            value=split,
        )
    n = session.scalar(
        select(func.count())
        .select_from(SplitAssignment)
        .where(SplitAssignment.split_id == sp.id, SplitAssignment.subset == subset)
    )
    if not n:
        raise InputError(f"split {dataset}/{split} has no case in subset", value=subset)
    return SubsetInfo(int(n), subset in (sp.hidden_subsets or []))


# Side of the window of medarena.evaluation.image.ssim (skimage's default, 7x7 pixels).
SSIM_WINDOW = 7


def _ssim_problem(session: Session, t: Track, subset: str) -> str | None:
    """Why an image-to-image track cannot score ``subset``: slices smaller than SSIM's window.

    The engine computes every image metric of a case together and refuses SSIM on slices
    under 7x7 pixels, so such a case would fail on every metric (docs/metrics-tasks.md).
    Uses the shapes the catalogue recorded at ingest; cases without one are not judged here.
    """
    if t.task != "image-to-image":
        return None
    axis = ImageConfig.model_validate(t.task_config).slice_axis
    rows = session.execute(
        select(Case.case_key, Case.shape)
        .join(SplitAssignment, SplitAssignment.case_id == Case.id)
        .join(Split, Split.id == SplitAssignment.split_id)
        .join(Dataset, Dataset.id == Split.dataset_id)
        .where(Dataset.name == t.dataset, Split.name == t.split, SplitAssignment.subset == subset)
        .order_by(Case.case_key)
    ).all()
    small: list[str] = []
    for key, shape in rows:
        dims = [int(d) for d in shape or []]
        if len(dims) == 3 and -3 <= axis < 3:
            del dims[axis]
        if len(dims) == 2 and min(dims) < SSIM_WINDOW:
            small.append(f"{key} {dims[0]}x{dims[1]}")
    if not small:
        return None
    shown = ", ".join(small[:5]) + (f" and {len(small) - 5} more" if len(small) > 5 else "")
    return (
        f"track {t.slug}: SSIM needs 2-D slices of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels "
        f"(skimage's default window); {len(small)} case(s) of subset {subset!r} have smaller "
        f"slices along slice_axis {axis} ({shown}), so every metric of those cases would "
        "fail; use larger images or another task_config.slice_axis"
    )


def check_data(session: Session, spec: ChallengeSpec) -> list[str]:
    """Problems of the spec against the catalogue (datasets, splits, subsets); empty if none.

    A training subset must not be hidden (its labels are downloadable). An image-to-image
    track's scored subsets must have slices SSIM can score (see :func:`_ssim_problem`).
    """
    problems: list[str] = []
    for t in spec.tracks:
        subsets = {t.train_subset, t.reference_subset}
        scored = {t.reference_subset}
        for p in spec.phases:
            if p.tracks is None or t.slug in p.tracks:
                subsets.add(p.scored_subset or t.reference_subset)
                scored.add(p.scored_subset or t.reference_subset)
        for subset in sorted(subsets):
            try:
                info = subset_info(session, t.dataset, t.split, subset)
            except InputError as exc:
                # A missing dataset or split fails every subset alike: report it once.
                problem = f"track {t.slug}: {exc}"
                if problem not in problems:
                    problems.append(problem)
                continue
            if subset == t.train_subset and info.hidden:
                problems.append(
                    f"track {t.slug}: train_subset {subset!r} is hidden in split "
                    f"{t.dataset}/{t.split}; hidden labels are never downloadable"
                )
            if subset in scored and (too_small := _ssim_problem(session, t, subset)):
                problems.append(too_small)
    return problems


# ---------------------------------------------------------------------------- create / update


def _require_data(session: Session, spec: ChallengeSpec) -> None:
    problems = check_data(session, spec)
    if problems:
        raise InputError("the spec's data does not match the catalogue: " + "; ".join(problems))


def create_challenge(session: Session, spec: ChallengeSpec, *, actor_id: int | None) -> Challenge:
    """Store a new challenge; the actor (if any) becomes its organizer. Audited."""
    if session.scalars(select(Challenge.id).where(Challenge.slug == spec.slug)).first():
        raise InputError(
            "a challenge with this slug exists", value=spec.slug, hint="use update instead"
        )
    _require_data(session, spec)
    ch = Challenge(
        slug=spec.slug,
        title=spec.title,
        spec=spec.model_dump(mode="json"),
        spec_revision=1,
        created_by=actor_id,
    )
    session.add(ch)
    session.flush()
    if actor_id is not None:
        session.add(ChallengeRole(challenge_id=ch.id, user_id=actor_id, role="organizer"))
    audit(session, actor_id, "challenge.create", challenge_id=ch.id, target=spec.slug)
    log.info("challenge %s created", spec.slug)
    return ch


def update_challenge(
    session: Session, slug: str, spec: ChallengeSpec, *, actor_id: int | None
) -> Challenge:
    """Replace a challenge's spec (new revision). Audited.

    Refused when it would orphan stored work: a track or phase that has submissions may not
    be removed. Changed rules void earlier acceptances, so participants accept them again.
    """
    ch = get_challenge(session, slug)
    if spec.slug != slug:
        raise InputError(
            f"the spec's slug differs from the challenge being updated ({slug!r})",
            value=spec.slug,
        )
    _require_data(session, spec)
    old = load_spec(ch)
    used = session.execute(
        select(Submission.track_slug, Submission.phase_slug)
        .where(Submission.challenge_id == ch.id)
        .distinct()
    ).all()
    tracks, phases = {t.slug for t in spec.tracks}, {p.slug for p in spec.phases}
    orphaned = sorted({f"track {t}" for t, _ in used if t not in tracks})
    orphaned += sorted({f"phase {p}" for _, p in used if p not in phases})
    if orphaned:
        raise InputError(
            f"the update removes {', '.join(orphaned)}, which already hold submissions",
            hint="keep them in the spec (a phase can be closed by its dates)",
        )
    rules_changed = old.rules != spec.rules
    ch.spec = spec.model_dump(mode="json")
    ch.title = spec.title
    ch.spec_revision += 1
    ch.updated_at = dt.datetime.now(dt.UTC)
    if rules_changed:
        session.execute(delete(RulesAcceptance).where(RulesAcceptance.challenge_id == ch.id))
    changed = sorted(k for k in ch.spec if old.model_dump(mode="json").get(k) != ch.spec[k])
    audit(
        session,
        actor_id,
        "challenge.update",
        challenge_id=ch.id,
        target=slug,
        detail={"revision": ch.spec_revision, "changed": changed, "rules_changed": rules_changed},
    )
    session.flush()
    return ch


# ---------------------------------------------------------------------------- roles


def require_organizer(session: Session, challenge: Challenge, user: User | None) -> None:
    """PermissionDenied unless ``user`` organizes ``challenge``."""
    if not can_organize(session, user, challenge.id):
        raise PermissionDenied(f"only organizers of {challenge.slug!r} may do this")


def grant_role(
    session: Session, challenge: Challenge, user_id: int, role: str, *, actor_id: int | None
) -> None:
    """Give ``user_id`` a role in the challenge (no-op when held). Audited."""
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}", value=role)
    if role in roles_of(session, user_id, challenge.id):
        return
    session.add(ChallengeRole(challenge_id=challenge.id, user_id=user_id, role=role))
    if role != "participant":  # joining is a participant's own act, not an admin action
        audit(
            session,
            actor_id,
            "challenge.role_grant",
            challenge_id=challenge.id,
            target=f"user:{user_id}",
            detail={"role": role},
        )
    session.flush()


def revoke_role(
    session: Session, challenge: Challenge, user_id: int, role: str, *, actor_id: int | None
) -> None:
    """Remove a role. Audited. The last organizer cannot be removed."""
    if role == "organizer":
        n = session.scalar(
            select(func.count())
            .select_from(ChallengeRole)
            .where(ChallengeRole.challenge_id == challenge.id, ChallengeRole.role == "organizer")
        )
        if n == 1 and "organizer" in roles_of(session, user_id, challenge.id):
            raise InputError("a challenge keeps at least one organizer", value=user_id)
    session.execute(
        delete(ChallengeRole).where(
            ChallengeRole.challenge_id == challenge.id,
            ChallengeRole.user_id == user_id,
            ChallengeRole.role == role,
        )
    )
    audit(
        session,
        actor_id,
        "challenge.role_revoke",
        challenge_id=challenge.id,
        target=f"user:{user_id}",
        detail={"role": role},
    )
    session.flush()


# ---------------------------------------------------------------------------- joining


def has_accepted_rules(session: Session, challenge: Challenge, user_id: int) -> bool:
    """Whether the user accepted the challenge's current rules."""
    return (
        session.scalars(
            select(RulesAcceptance.id).where(
                RulesAcceptance.challenge_id == challenge.id, RulesAcceptance.user_id == user_id
            )
        ).first()
        is not None
    )


def lock_challenge(session: Session, challenge_id: int) -> None:
    """Serialise changes of one challenge's participants and teams until the transaction ends.

    Their checks hold only under a lock: two joins of one person at once would both insert
    the acceptance (a unique violation); 'Alpha' and 'alpha' created at once would both pass
    the case-blind name check (the database's constraint is case-sensitive); two invitees
    accepting the last place at once would both join.
    """
    if session.get_bind().dialect.name == "sqlite":
        # SQLite has one write lock for the whole file: a no-op write takes it (waiting up
        # to the busy timeout), also after this transaction has read.
        session.execute(text("UPDATE challenges SET id = id WHERE id = :id"), {"id": challenge_id})
    else:
        session.execute(select(Challenge.id).where(Challenge.id == challenge_id).with_for_update())


def join_challenge(session: Session, challenge: Challenge, user: User) -> None:
    """Accept the current rules and become a participant (idempotent)."""
    if not user.is_active:
        raise PermissionDenied("this account is deactivated")
    lock_challenge(session, challenge.id)
    if not has_accepted_rules(session, challenge, user.id):
        session.add(
            RulesAcceptance(
                challenge_id=challenge.id, user_id=user.id, spec_revision=challenge.spec_revision
            )
        )
    grant_role(session, challenge, user.id, "participant", actor_id=user.id)
    session.flush()


def require_participant(session: Session, challenge: Challenge, user: User | None) -> None:
    """PermissionDenied unless ``user`` joined the challenge and accepted its current rules."""
    if user is None or not user.is_active:
        raise PermissionDenied("log in to take part")
    if not has_accepted_rules(session, challenge, user.id):
        raise PermissionDenied(f"accept the rules of {challenge.slug!r} first (join the challenge)")

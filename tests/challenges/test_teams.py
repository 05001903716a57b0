"""Teams: create, invite by token, accept, cap, one team per person, leave, captain."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from medarena.challenges import service, teams
from medarena.challenges.spec import ChallengeSpec
from medarena.datasets.catalogue import Catalogue
from medarena.db.platform_models import (
    AuditEvent,
    Challenge,
    Submission,
    Team,
    TeamInvitation,
    TeamMember,
    User,
)
from medarena.errors import InputError, NotFoundError


@pytest.fixture
def challenge(session: Session, spec: ChallengeSpec, make_user) -> Challenge:
    org = make_user("org@example.org")
    return service.create_challenge(session, spec, actor_id=org.id)


@pytest.fixture
def people(session: Session, challenge: Challenge, make_user) -> dict[str, User]:
    out = {n: make_user(f"{n}@example.org") for n in ("ann", "ben", "cat", "dan")}
    for u in out.values():
        service.join_challenge(session, challenge, u)
    return out


def test_create_team_makes_captain_and_names_are_unique(
    session: Session, challenge: Challenge, people: dict[str, User], make_user
) -> None:
    ann, ben = people["ann"], people["ben"]
    team = teams.create_team(session, challenge, ann, "  Deep   Lesions ")
    assert team.name == "Deep Lesions"
    assert teams.team_of(session, challenge.id, ann.id) == team
    assert [(m.display_name, m.is_captain) for m in teams.members(session, team.id)] == [
        ("ann", True)
    ]
    with pytest.raises(InputError, match="already in team 'Deep Lesions'"):
        teams.create_team(session, challenge, ann, "Another")
    with pytest.raises(InputError, match="team with this name exists"):
        teams.create_team(session, challenge, ben, "deep lesions")
    outsider = make_user("eve@example.org")
    with pytest.raises(service.PermissionDenied, match="accept the rules"):
        teams.create_team(session, challenge, outsider, "Eve")


def test_invite_accept_and_cap(
    session: Session, challenge: Challenge, people: dict[str, User]
) -> None:
    ann, ben, cat = people["ann"], people["ben"], people["cat"]
    team = teams.create_team(session, challenge, ann, "A")
    inv, token = teams.invite(session, challenge, team, ann, "Ben@Example.org")
    assert (
        inv.token_hash == hashlib.sha256(token.encode()).hexdigest() and token not in inv.token_hash
    )
    with pytest.raises(service.PermissionDenied, match="only the captain"):
        teams.invite(session, challenge, team, ben, "cat@example.org")
    _, cat_token = teams.invite(session, challenge, team, ann, "cat@example.org")
    # The link only works for the address it was sent to.
    with pytest.raises(service.PermissionDenied, match="another e-mail"):
        teams.accept_invitation(session, token, cat)
    assert teams.accept_invitation(session, token, ben) == team
    with pytest.raises(NotFoundError, match="unknown, used"):
        teams.accept_invitation(session, token, ben)
    # team_size_max is 2 in the spec: the third member is refused at accept time...
    with pytest.raises(InputError, match="is full: the challenge allows 2 members"):
        teams.accept_invitation(session, cat_token, cat)
    # ...and no new invitation can be sent.
    with pytest.raises(InputError, match="is full"):
        teams.invite(session, challenge, team, ann, "dan@example.org")
    assert {m.user_id for m in teams.members(session, team.id)} == {ann.id, ben.id}


def test_invitation_expires_and_revokes(
    session: Session, challenge: Challenge, people: dict[str, User]
) -> None:
    ann, ben, cat = people["ann"], people["ben"], people["cat"]
    team = teams.create_team(session, challenge, ann, "A")
    inv, token = teams.invite(session, challenge, team, ann, "ben@example.org")
    inv.created_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=teams.INVITATION_DAYS, hours=1)
    session.flush()
    with pytest.raises(NotFoundError, match="expired"):
        teams.accept_invitation(session, token, ben)
    inv2, token2 = teams.invite(session, challenge, team, ann, "cat@example.org")
    assert [i.id for i in teams.pending_invitations(session, team.id)] == [inv.id, inv2.id]
    teams.revoke_invitation(session, team, ann, inv2.id)
    with pytest.raises(NotFoundError):
        teams.accept_invitation(session, token2, cat)
    with pytest.raises(NotFoundError):
        teams.accept_invitation(session, "not-a-token", cat)


def test_one_team_per_person_also_in_the_database(
    session: Session, challenge: Challenge, people: dict[str, User]
) -> None:
    ann, ben = people["ann"], people["ben"]
    teams.create_team(session, challenge, ann, "A")
    b = teams.create_team(session, challenge, ben, "B")
    _, token = teams.invite(session, challenge, b, ben, "ann@example.org")
    with pytest.raises(InputError, match="already in team 'A'"):
        teams.accept_invitation(session, token, ann)
    session.commit()
    # The unique constraint holds even for a writer that skips the service checks.
    session.add(TeamMember(team_id=b.id, challenge_id=challenge.id, user_id=ann.id))
    with pytest.raises(DbIntegrityError):
        session.flush()
    session.rollback()


def test_leave_passes_captaincy_and_deletes_empty_team(
    session: Session, challenge: Challenge, people: dict[str, User]
) -> None:
    ann, ben = people["ann"], people["ben"]
    team = teams.create_team(session, challenge, ann, "A")
    _, token = teams.invite(session, challenge, team, ann, "ben@example.org")
    teams.accept_invitation(session, token, ben)
    teams.leave_team(session, challenge, ann)
    assert [(m.user_id, m.is_captain) for m in teams.members(session, team.id)] == [(ben.id, True)]
    team_id = team.id
    teams.leave_team(session, challenge, ben)
    session.commit()
    assert session.get(Team, team_id) is None
    with pytest.raises(InputError, match="not in a team"):
        teams.leave_team(session, challenge, ben)


def test_team_with_submissions_cannot_be_left_but_organizer_removes(
    session: Session, challenge: Challenge, people: dict[str, User]
) -> None:
    ann, ben = people["ann"], people["ben"]
    org = session.scalars(select(User).where(User.email == "org@example.org")).one()
    team = teams.create_team(session, challenge, ann, "A")
    _, token = teams.invite(session, challenge, team, ann, "ben@example.org")
    teams.accept_invitation(session, token, ben)
    session.add(
        Submission(
            challenge_id=challenge.id,
            track_slug="seg",
            phase_slug="preliminary",
            team_id=team.id,
            filename="p.zip",
            archive_digest="0" * 64,
            archive_size=1,
        )
    )
    session.flush()
    with pytest.raises(InputError, match="has submissions"):
        teams.leave_team(session, challenge, ben)
    with pytest.raises(service.PermissionDenied):
        teams.remove_member(session, challenge, team, ben.id, actor=ann)
    teams.remove_member(session, challenge, team, ann.id, actor=org)
    assert [(m.user_id, m.is_captain) for m in teams.members(session, team.id)] == [(ben.id, True)]
    teams.remove_member(session, challenge, team, ben.id, actor=org)
    session.commit()
    # The last member gone, the team stays: its submissions still belong to it.
    assert session.get(Team, team.id) is not None
    assert session.scalars(select(AuditEvent.action)).all()[-2:] == [
        "team.remove_member",
        "team.remove_member",
    ]


def test_make_captain(session: Session, challenge: Challenge, people: dict[str, User]) -> None:
    ann, ben = people["ann"], people["ben"]
    team = teams.create_team(session, challenge, ann, "A")
    _, token = teams.invite(session, challenge, team, ann, "ben@example.org")
    teams.accept_invitation(session, token, ben)
    teams.make_captain(session, team, ann, ben.id)
    assert [(m.user_id, m.is_captain) for m in teams.members(session, team.id)] == [
        (ben.id, True),
        (ann.id, False),
    ]
    with pytest.raises(service.PermissionDenied):
        teams.make_captain(session, team, ann, ann.id)
    assert [t.name for t in teams.list_teams(session, challenge.id)] == ["A"]
    assert session.scalars(select(TeamInvitation.accepted_at)).one() is not None


def test_concurrent_names_differing_in_case_make_one_team(
    session: Session, challenge: Challenge, people: dict[str, User], catalogue: Catalogue
) -> None:
    """The case-blind name check holds when two people create 'Alpha' and 'alpha' at once."""
    session.commit()
    cid, racers = challenge.id, (people["ann"].id, people["ben"].id)

    def create(i: int, name: str, barrier: threading.Barrier, outcomes: list[str]) -> None:
        with catalogue.sessions() as s:
            ch, user = s.get(Challenge, cid), s.get(User, racers[i])
            assert ch is not None and user is not None
            barrier.wait()
            try:
                teams.create_team(s, ch, user, name)
                s.commit()
                outcomes.append("ok")
            except InputError as exc:
                outcomes.append(str(exc))

    for round_ in range(3):
        barrier = threading.Barrier(2)
        outcomes: list[str] = []
        names = (f"Alpha {round_}", f"alpha {round_}")
        threads = [
            threading.Thread(target=create, args=(i, n, barrier, outcomes))
            for i, n in enumerate(names)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        refused = [o for o in outcomes if o != "ok"]
        assert len(outcomes) == 2 and len(refused) == 1, outcomes
        assert "a team with this name exists" in refused[0]
        with catalogue.sessions() as s, s.begin():
            ch = s.get(Challenge, cid)
            assert ch is not None
            made = [t for t in teams.list_teams(s, cid) if t.name.lower() == names[1]]
            assert len(made) == 1, [t.name for t in made]
            for uid in racers:
                user = s.get(User, uid)
                assert user is not None
                if teams.team_of(s, cid, uid) is not None:
                    teams.leave_team(s, ch, user)


def test_two_invitees_accepting_at_once_respect_the_cap(
    session: Session, challenge: Challenge, people: dict[str, User], catalogue: Catalogue
) -> None:
    """team_size_max 2: the captain and one invitee; the other is refused, not let in."""
    ann, ben, cat = people["ann"], people["ben"], people["cat"]
    team = teams.create_team(session, challenge, ann, "A")
    tokens = [teams.invite(session, challenge, team, ann, u.email)[1] for u in (ben, cat)]
    session.commit()
    invitees = (ben.id, cat.id)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def accept(i: int) -> None:
        with catalogue.sessions() as s:
            user = s.get(User, invitees[i])
            assert user is not None
            barrier.wait()
            try:
                teams.accept_invitation(s, tokens[i], user)
                s.commit()
                outcomes.append("ok")
            except InputError as exc:
                outcomes.append(str(exc))

    threads = [threading.Thread(target=accept, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    refused = [o for o in outcomes if o != "ok"]
    assert len(outcomes) == 2 and len(refused) == 1, outcomes
    assert "is full: the challenge allows 2 members" in refused[0]
    with catalogue.sessions() as s:
        assert len(teams.members(s, team.id)) == 2

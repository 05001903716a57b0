"""A duplicate insert that races past a service's pre-check: 409, nothing stored changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from medarena.accounts.tokens import create_token
from medarena.challenges import service
from medarena.challenges.spec import ChallengeSpec
from medarena.datasets.catalogue import Catalogue
from medarena.db.platform_models import AuditEvent, Challenge, ChallengeRole
from medarena.web.app import CONFLICT_DETAIL, create_app


@pytest.fixture
def client(catalogue: Catalogue) -> Iterator[TestClient]:
    with TestClient(create_app(catalogue.settings, catalogue)) as c:
        yield c


def test_challenge_created_meanwhile_gives_409_and_changes_nothing(
    client: TestClient,
    catalogue: Catalogue,
    session: Session,
    spec: ChallengeSpec,
    spec_yaml: str,
    make_user,
) -> None:
    """Another writer stores the same slug between the request's pre-check and its insert."""
    admin = make_user("admin@example.org", admin=True)
    _, plain = create_token(session, admin, "test")
    session.commit()
    staged: list[bool] = []  # set first: the other writer's own pre-check must not recurse
    raced: list[int] = []

    def other_writer_commits(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Right after the request has checked that the slug is free (its SELECT on
        # challenges.slug), a second connection creates the same challenge and commits.
        if staged or "FROM challenges" not in statement or "challenges.slug" not in statement:
            return
        staged.append(True)
        with catalogue.sessions() as other:
            raced.append(service.create_challenge(other, spec, actor_id=None).id)
            other.commit()

    event.listen(catalogue.engine, "after_cursor_execute", other_writer_commits)
    try:
        r = client.post(
            "/api/v1/challenges",
            content=spec_yaml,
            headers={"Authorization": f"Bearer {plain}", "Content-Type": "application/yaml"},
        )
    finally:
        event.remove(catalogue.engine, "after_cursor_execute", other_writer_commits)
    assert raced, "the concurrent writer did not run: the race was not staged"
    assert r.status_code == 409, r.text
    assert r.json() == {"detail": CONFLICT_DETAIL}
    # Neither SQL nor the driver's message nor the values reach the client.
    leaks = ("insert into", "unique constraint", "duplicate key", "integrityerror", "brain-2025")
    for leak in leaks:
        assert leak.lower() not in r.text.lower()
    # Only the other writer's challenge is stored; the refused request left no trace.
    with catalogue.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Challenge)) == 1
        stored = s.scalars(select(Challenge)).one()
        assert stored.id == raced[0] and stored.created_by is None
        assert s.scalars(select(ChallengeRole)).all() == []
        creates = select(AuditEvent.actor_user_id).where(AuditEvent.action == "challenge.create")
        assert s.scalars(creates).all() == [None]
    # The server keeps serving, and a plain second create is refused as before (400).
    assert client.get("/api/v1/challenges/brain-2025").status_code == 200
    r = client.post(
        "/api/v1/challenges",
        content=spec_yaml,
        headers={"Authorization": f"Bearer {plain}", "Content-Type": "application/yaml"},
    )
    assert r.status_code == 400 and "exists" in r.text

"""Challenge routes over HTTP: API with bearer tokens, pages, downloads, errors as statuses."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from medarena.accounts.tokens import create_token
from medarena.datasets.catalogue import Catalogue, case_records
from medarena.db.platform_models import AuditEvent
from medarena.web.app import create_app


@pytest.fixture
def client(catalogue: Catalogue) -> Iterator[TestClient]:
    with TestClient(create_app(catalogue.settings, catalogue)) as c:
        yield c


@pytest.fixture
def tokens(session: Session, make_user) -> dict[str, dict[str, str]]:
    """Bearer headers of an admin and two participants."""
    out = {}
    for name, admin in (("admin", True), ("ann", False), ("ben", False)):
        user = make_user(f"{name}@example.org", admin=admin)
        _, plain = create_token(session, user, "test")
        out[name] = {"Authorization": f"Bearer {plain}"}
    session.commit()
    return out


def test_api_create_get_update_join_team_flow(
    client: TestClient, tokens: dict[str, dict[str, str]], spec_yaml: str, catalogue: Catalogue
) -> None:
    yaml_headers = {"Content-Type": "application/yaml"}
    r = client.post(
        "/api/v1/challenges", content=spec_yaml, headers={**tokens["ann"], **yaml_headers}
    )
    assert r.status_code == 403
    # Anonymous: refused (401 unauthenticated, or 403 when the CSRF check answers first).
    assert client.post("/api/v1/challenges", content=spec_yaml).status_code in (401, 403)
    bad = spec_yaml.replace("team_size_max: 2", "team_size_max: many")
    r = client.post("/api/v1/challenges", content=bad, headers={**tokens["admin"], **yaml_headers})
    assert r.status_code == 400
    line = spec_yaml.splitlines().index("team_size_max: 2") + 1
    assert r.json()["detail"]["problems"][0] == {
        "line": line,
        "field": "team_size_max",
        "message": "Input should be a valid integer, unable to parse string as an integer",
    }
    r = client.post(
        "/api/v1/challenges", content=spec_yaml, headers={**tokens["admin"], **yaml_headers}
    )
    assert r.status_code == 201 and r.json()["me"]["roles"] == ["organizer"]
    assert [c["slug"] for c in client.get("/api/v1/challenges").json()] == ["brain-2025"]
    anon = client.get("/api/v1/challenges/brain-2025").json()
    assert anon["me"] is None and [p["state"] for p in anon["phases"]] == ["open", "open"]
    assert client.get("/api/v1/challenges/nope").status_code == 404
    # Organizer-only spec read and update.
    assert (
        client.get("/api/v1/challenges/brain-2025/spec", headers=tokens["ann"]).status_code == 403
    )
    r = client.put(
        "/api/v1/challenges/brain-2025",
        content=spec_yaml.replace("team_size_max: 2", "team_size_max: 3"),
        headers={**tokens["ann"], **yaml_headers},
    )
    assert r.status_code == 403
    r = client.put(
        "/api/v1/challenges/brain-2025",
        content=spec_yaml.replace("team_size_max: 2", "team_size_max: 3"),
        headers={**tokens["admin"], **yaml_headers},
    )
    assert r.status_code == 200 and r.json()["revision"] == 2 and r.json()["team_size_max"] == 3
    # Teams need the rules accepted first.
    r = client.post(
        "/api/v1/challenges/brain-2025/teams", json={"name": "A"}, headers=tokens["ann"]
    )
    assert r.status_code == 403 and "accept the rules" in r.json()["detail"]
    for who in ("ann", "ben"):
        assert (
            client.post("/api/v1/challenges/brain-2025/join", headers=tokens[who]).status_code
            == 200
        )
    r = client.post(
        "/api/v1/challenges/brain-2025/teams", json={"name": "A"}, headers=tokens["ann"]
    )
    assert r.status_code == 201
    r = client.post(
        "/api/v1/challenges/brain-2025/team/invitations",
        json={"email": "ben@example.org"},
        headers=tokens["ann"],
    )
    assert r.status_code == 201
    token = r.json()["link"].rsplit("/", 1)[1]
    r = client.post(f"/api/v1/invitations/{token}/accept", headers=tokens["ben"])
    assert r.status_code == 200
    assert [m["display_name"] for m in r.json()["members"]] == ["ann", "ben"]
    mine = client.get("/api/v1/challenges/brain-2025/team", headers=tokens["ben"]).json()
    assert mine["name"] == "A"
    # Downloads: training works for a participant, reference of hidden test does not.
    r = client.get(
        "/api/v1/challenges/brain-2025/data/training",
        params={"track": "seg"},
        headers=tokens["ben"],
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    train = {
        c["case_key"]
        for c in case_records(catalogue, "brain")
        if c["splits"]["challenge"] == "train"
    }
    assert {n.split("/")[1].removesuffix(".nii.gz") for n in names if "/" in n} == train
    r = client.get(
        "/api/v1/challenges/brain-2025/data/reference",
        params={"track": "seg", "phase": "final"},
        headers=tokens["ben"],
    )
    assert r.status_code == 403 and "organizers and reviewers only" in r.text
    r = client.get(
        "/api/v1/challenges/brain-2025/data/reference",
        params={"track": "seg", "phase": "final"},
        headers=tokens["admin"],
    )
    assert r.status_code == 200
    with catalogue.session() as s:
        assert s.scalars(
            select(AuditEvent.action).where(AuditEvent.action == "data.hidden_read")
        ).all()


def test_pages_render_and_forms_work(
    client: TestClient, tokens: dict[str, dict[str, str]], spec_yaml: str
) -> None:
    r = client.post("/challenges-new", data={"spec_text": "slug: [x"}, headers=tokens["admin"])
    assert r.status_code == 400 and "YAML syntax" in r.text
    r = client.post(
        "/challenges-new",
        files={"spec_file": ("spec.yaml", spec_yaml.encode(), "application/yaml")},
        headers=tokens["admin"],
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/challenges/brain-2025"
    page = client.get("/challenges/brain-2025")
    assert page.status_code == 200
    assert "<strong>fair</strong>" in page.text and "data-countdown" in page.text
    assert "Log in" in page.text and "/data/training" not in page.text
    assert "Brain challenge 2025" in client.get("/challenges").text
    r = client.post("/challenges/brain-2025/join", headers=tokens["ann"], follow_redirects=False)
    assert r.status_code == 303
    page = client.get("/challenges/brain-2025", headers=tokens["ann"])
    assert "/data/training?track=seg" in page.text and "/data/reference" not in page.text
    r = client.post(
        "/challenges/brain-2025/team",
        data={"action": "create", "name": "Team Ann"},
        headers=tokens["ann"],
        follow_redirects=False,
    )
    assert r.status_code == 303
    r = client.post(
        "/challenges/brain-2025/team",
        data={"action": "invite", "email": "ben@example.org"},
        headers=tokens["ann"],
    )
    assert r.status_code == 201 and "/invitations/" in r.text
    team_page = client.get("/challenges/brain-2025/team", headers=tokens["ann"]).text
    assert "Team Ann" in team_page and "Revoke invitation to ben@example.org" in team_page
    edit = client.get("/challenges/brain-2025/edit", headers=tokens["ann"])
    assert edit.status_code == 403
    edit = client.get("/challenges/brain-2025/edit", headers=tokens["admin"])
    assert edit.status_code == 200 and "slug: brain-2025" in edit.text
    r = client.post(
        "/challenges/brain-2025/edit",
        data={"spec_text": spec_yaml.replace("primary_metric: abs_error", "primary_metric: vibes")},
        headers=tokens["admin"],
    )
    assert r.status_code == 400 and "tracks[1].primary_metric" in r.text


def test_cookie_session_form_without_csrf_is_refused(client: TestClient) -> None:
    # An unsafe request from a browser (no bearer token) must carry a CSRF token.
    r = client.post("/challenges/brain-2025/join", follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text

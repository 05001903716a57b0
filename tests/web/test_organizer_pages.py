"""Organizer pages and their API: who may see them, and what their forms store and audit.

Each test runs on SQLite and on PostgreSQL (``db_url``) against the real app with real
browser sessions (signed cookie, CSRF token from the session row).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medarena.accounts.roles import roles_of
from medarena.accounts.sessions import create_web_session, sign_session_id
from medarena.challenges.submissions import SCORE_JOB_KIND
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue
from medarena.db.engine import create_engine_for
from medarena.db.platform_models import (
    AuditEvent,
    Challenge,
    ChallengeRole,
    Job,
    RulesAcceptance,
    Submission,
    User,
)
from medarena.storage import open_store
from medarena.web.app import create_app

sys.path.insert(0, str(Path(__file__).parents[1] / "challenges"))
from platform_fixtures import Platform, add_scored, add_table_dataset, make_platform, spec_dict

PAGES = ("", "/participants", "/phases", "/rescore", "/exports", "/audit")
APIS = ("/participants", "/audit", "/export/submissions.csv")


@dataclass
class Browser:
    """A TestClient logged in through a real web session, and that session's CSRF token."""

    client: TestClient
    csrf: str
    user_id: int


@dataclass
class World:
    p: Platform
    org: Browser
    ada: Browser  # a participant
    anon: TestClient
    subs: dict[str, int]  # name -> submission id


def _age_cases(value: float) -> dict[str, dict[str, float]]:
    return {c: {"abs_error": value + i} for i, c in enumerate(("c3", "c5", "c7"))}


def _submit(p: Platform, team: str, value: float, phase: str = "prelim") -> int:
    return add_scored(
        p,
        team,
        _age_cases(value),
        track="age",
        phase=phase,
        primary="abs_error",
        task="regression",
    )


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    p = make_platform(db_url, tmp_path, spec_dict(), ["ada", "bob", "=cmd"])
    add_table_dataset(p, {f"c{i}": 40.0 + i for i in range(1, 9)})
    settings = get_settings(data_dir=tmp_path, database_url=db_url, secret_key="s" * 48)
    p.store = open_store(settings)
    cat = Catalogue(settings, create_engine_for(db_url), p.sessions, p.store)
    subs = {
        "ada": _submit(p, "ada", 2.0),
        "bob": _submit(p, "bob", 5.0),
        "cmd": _submit(p, "=cmd", 9.0),
        "ada_final": _submit(p, "ada", 3.0, phase="final"),  # final scores the hidden subset
    }
    with p.sessions() as s, s.begin():
        failed = s.get(Submission, subs["cmd"])
        assert failed is not None
        failed.status, failed.error = "failed", "case c3: no prediction"
        org = User(email="org@example.org", display_name="Olga Organizer", password_hash="x")
        s.add(org)
        s.flush()
        s.add(ChallengeRole(challenge_id=p.challenge_id, user_id=org.id, role="organizer"))
        for team in ("ada", "bob"):
            s.add(
                ChallengeRole(
                    challenge_id=p.challenge_id, user_id=p.users[team], role="participant"
                )
            )
        sessions = {}
        for name, uid in (("org", org.id), ("ada", p.users["ada"])):
            user = s.get(User, uid)
            assert user is not None
            row, sid = create_web_session(s, user)
            sessions[name] = (sign_session_id(settings.secret, sid), row.csrf_token, uid)
    app = create_app(settings, cat)
    browsers = {}
    for name, (cookie, csrf, uid) in sessions.items():
        client = TestClient(app, follow_redirects=False)
        client.cookies.set("medarena_session", cookie)
        browsers[name] = Browser(client, csrf, uid)
    yield World(p, browsers["org"], browsers["ada"], TestClient(app, follow_redirects=False), subs)
    cat.close()


def _login(w: World, user_id: int) -> Browser:
    """A new browser logged in as ``user_id`` on the world's app."""
    app = w.org.client.app
    with w.p.sessions() as s, s.begin():
        user = s.get(User, user_id)
        assert user is not None
        row, sid = create_web_session(s, user)
        csrf = row.csrf_token
    client = TestClient(app, follow_redirects=False)
    client.cookies.set("medarena_session", sign_session_id(app.state.settings.secret, sid))
    return Browser(client, csrf, user_id)


def _row(html: str, attr: str) -> str:
    """The <tr ...> element carrying ``attr`` (e.g. ``data-phase="prelim"``)."""
    match = re.search(rf"<tr {attr}>(.*?)</tr>", html, re.S)
    assert match, f"no row {attr}"
    return match.group(1)


def _audit(w: World, action: str) -> list[AuditEvent]:
    with w.p.sessions() as s:
        return list(
            s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id))
        )


def test_pages_render_the_challenge_for_its_organizer(world: World) -> None:
    org = world.org.client
    page = org.get("/challenges/demo")
    assert 'href="/challenges/demo/organize"' in page.text
    assert 'href="/challenges/demo/organize"' not in world.ada.client.get("/challenges/demo").text
    dash = org.get("/challenges/demo/organize")
    assert dash.status_code == 200
    prelim = _row(dash.text, 'data-phase="prelim"')
    opens = world.p.spec.phase("prelim").opens.astimezone(dt.UTC)
    assert opens.strftime("%Y-%m-%d %H:%M UTC") in prelim
    assert 'data-status="scored">2<' in prelim and 'data-status="failed">1<' in prelim
    final = _row(dash.text, 'data-phase="final"')
    assert 'data-status="scored">1<' in final and 'data-status="queued">0<' in final
    for href in PAGES[1:]:
        assert f'href="/challenges/demo/organize{href}"' in dash.text
    people = org.get("/challenges/demo/organize/participants")
    assert people.status_code == 200 and people.headers["cache-control"] == "no-store"
    ada = _row(people.text, f'data-user="{world.p.users["ada"]}"')
    assert "ada@example.org" in ada and "participant" in ada and "revision 1" in ada
    assert re.search(r'class="score">2</td>', ada)  # one prelim and one final submission
    assert 'name="csrf_token" value="' + world.org.csrf in people.text
    team_bob = re.search(r"<tr><td>bob</td><td>bob</td>\s*<td>scored 1</td>", people.text)
    assert team_bob, "team bob with its member and one scored submission"
    phases = org.get("/challenges/demo/organize/phases").text
    opens = world.p.spec.phase("prelim").opens.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")
    assert f'value="{opens}"' in phases and 'type="datetime-local"' in phases
    assert '<label for="prelim-closes">Closes (UTC)</label>' in phases
    rescore = org.get("/challenges/demo/organize/rescore").text
    assert "Re-score Preliminary, Brain age" in rescore and "Re-score all of Final" in rescore
    exports = org.get("/challenges/demo/organize/exports").text
    for board in ("prelim/age", "prelim/seg", "final/age", "final/seg"):
        for fmt in ("csv", "json"):
            assert f"/api/v1/challenges/demo/leaderboards/{board}?format={fmt}" in exports
    assert "/api/v1/challenges/demo/export/submissions.csv" in exports
    assert org.get("/challenges/demo/organize/audit").status_code == 200
    api = org.get("/api/v1/challenges/demo/participants").json()
    assert {t["name"]: t["total"] for t in api["teams"]} == {"=cmd": 1, "ada": 2, "bob": 1}
    by_name = {u["display_name"]: u for u in api["users"]}
    assert by_name["Olga Organizer"]["roles"] == ["organizer"]
    assert by_name["ada"]["rules_accepted"] and by_name["ada"]["team"]["name"] == "ada"
    assert org.get("/challenges/nope/organize").status_code == 404


def test_participants_and_anonymous_are_refused(world: World) -> None:
    ada, anon = world.ada, world.anon
    for page in PAGES:
        assert ada.client.get(f"/challenges/demo/organize{page}").status_code == 403
        r = anon.get(f"/challenges/demo/organize{page}")
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    for api in APIS:
        assert ada.client.get(f"/api/v1/challenges/demo{api}").status_code == 403
        assert anon.get(f"/api/v1/challenges/demo{api}").status_code == 401
    forms = {
        "participants": {"action": "grant", "role": "organizer", "user_id": ada.user_id},
        "phases": {"phase": "prelim", "opens": "2020-01-01T00:00", "closes": "2030-01-01T00:00"},
        "rescore": {"phase": "prelim"},
    }
    for name, form in forms.items():
        r = ada.client.post(
            f"/challenges/demo/organize/{name}", data={**form, "csrf_token": ada.csrf}
        )
        assert r.status_code == 403, name
        assert anon.post(f"/challenges/demo/organize/{name}", data=form).status_code == 403
    with world.p.sessions() as s:
        ch = s.get(Challenge, world.p.challenge_id)
        assert ch is not None and ch.spec_revision == 1
        assert roles_of(s, ada.user_id, ch.id) == {"participant"}
        assert s.scalar(select(Job.id)) is None
        assert s.scalar(select(AuditEvent.id)) is None


def test_role_change_is_stored_and_audited(world: World) -> None:
    org, bob = world.org, world.p.users["bob"]
    url = "/challenges/demo/organize/participants"
    form = {"action": "grant", "role": "reviewer", "user_id": bob}
    assert org.client.post(url, data=form).status_code == 403  # no CSRF token
    r = org.client.post(url, data={**form, "csrf_token": org.csrf})
    assert r.status_code == 200 and "bob is now reviewer." in r.text
    with world.p.sessions() as s:
        assert roles_of(s, bob, world.p.challenge_id) == {"participant", "reviewer"}
    (grant,) = _audit(world, "challenge.role_grant")
    assert (grant.actor_user_id, grant.target, grant.detail) == (
        org.user_id,
        f"user:{bob}",
        {"role": "reviewer"},
    )
    # A reviewer reads the pages but gets no form, and a change is refused.
    reviewer = _login(world, bob)
    people = reviewer.client.get(url)
    assert people.status_code == 200 and "changes are for its organizers" in people.text
    assert 'action="/challenges/demo/organize/participants"' not in people.text
    assert 'name="phase"' not in reviewer.client.get("/challenges/demo/organize/phases").text
    refused = reviewer.client.post(
        url,
        data={"action": "grant", "role": "organizer", "user_id": bob, "csrf_token": reviewer.csrf},
    )
    assert refused.status_code == 403
    users = org.client.get("/api/v1/challenges/demo/participants").json()["users"]
    assert next(u for u in users if u["user_id"] == bob)["roles"] == ["reviewer", "participant"]
    # Refusals name the field and value; nothing changes.
    bad = org.client.post(url, data={**form, "role": "participant", "csrf_token": org.csrf})
    assert bad.status_code == 400 and "role: invalid value &#39;participant&#39;" in bad.text
    again = org.client.post(url, data={**form, "csrf_token": org.csrf})
    assert again.status_code == 400 and "already reviewer" in again.text
    stranger = org.client.post(url, data={**form, "user_id": 99999, "csrf_token": org.csrf})
    assert stranger.status_code == 404
    nobody = org.client.post(
        url, data={"action": "grant", "role": "reviewer", "csrf_token": org.csrf}
    )
    assert nobody.status_code == 400 and "user_id: name the user" in nobody.text
    last = {"action": "revoke", "role": "organizer", "user_id": org.user_id}
    kept = org.client.post(url, data={**last, "csrf_token": org.csrf})
    assert kept.status_code == 400 and "at least one organizer" in kept.text
    # By e-mail: an account outside the challenge becomes organizer.
    with world.p.sessions() as s, s.begin():
        s.add(User(email="judge@example.org", display_name="judge", password_hash="x"))
    r = org.client.post(
        url,
        data={
            "action": "grant",
            "role": "organizer",
            "email": "judge@example.org",
            "csrf_token": org.csrf,
        },
    )
    assert r.status_code == 200 and "judge is now organizer." in r.text
    r = org.client.post(
        url, data={"action": "revoke", "role": "reviewer", "user_id": bob, "csrf_token": org.csrf}
    )
    assert r.status_code == 200 and "bob is no longer reviewer." in r.text
    with world.p.sessions() as s:
        assert roles_of(s, bob, world.p.challenge_id) == {"participant"}
    (revoke,) = _audit(world, "challenge.role_revoke")
    assert revoke.target == f"user:{bob}" and revoke.detail == {"role": "reviewer"}
    assert len(_audit(world, "challenge.role_grant")) == 2


def test_phase_dates_change_and_rescore(world: World) -> None:
    org = world.org
    url = "/challenges/demo/organize/phases"
    prelim = world.p.spec.phase("prelim")
    opens = prelim.opens.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")
    new_closes = (
        (prelim.closes + dt.timedelta(days=7)).astimezone(dt.UTC).replace(second=0, microsecond=0)
    )
    form = {"phase": "prelim", "opens": opens, "closes": new_closes.strftime("%Y-%m-%dT%H:%M")}
    r = org.client.post(url, data={**form, "csrf_token": org.csrf})
    assert r.status_code == 303 and r.headers["location"].endswith("?saved=prelim")
    assert "new dates saved (spec revision 2)" in org.client.get(r.headers["location"]).text
    with world.p.sessions() as s:
        ch = s.get(Challenge, world.p.challenge_id)
        assert ch is not None and ch.spec_revision == 2
        stored = ch.spec["phases"][0]
        # opens was sent back as shown (to the minute): the stored value keeps its seconds
        assert dt.datetime.fromisoformat(stored["opens"]) == prelim.opens
        assert dt.datetime.fromisoformat(stored["closes"]) == new_closes
        # the rules did not change: acceptances stand
        assert s.scalar(select(RulesAcceptance.id)) is not None
    (event,) = _audit(world, "challenge.phase_dates")
    assert event.target == "phase:prelim" and event.actor_user_id == org.user_id
    assert event.detail["closes"] == [prelim.closes.isoformat(), new_closes.isoformat()]
    assert _audit(world, "challenge.update")[0].detail["changed"] == ["phases"]
    # Bad dates: refused naming the field, nothing stored.
    bad = org.client.post(url, data={**form, "closes": "2001-01-01T00:00", "csrf_token": org.csrf})
    assert bad.status_code == 400 and "phases[0].closes" in bad.text
    assert "must be after opens" in bad.text
    assert re.search(
        r'id="prelim-closes"[^>]*value="2001-01-01T00:00"\s*aria-invalid="true"', bad.text
    )
    garbled = org.client.post(
        url,
        data={
            "phase": "final",
            "opens": "next tuesday",
            "closes": "2030-01-01T00:00",
            "csrf_token": org.csrf,
        },
    )
    assert garbled.status_code == 400
    assert "phases[1].opens: invalid value &#39;next tuesday&#39;" in garbled.text
    before = org.client.post(  # final may not open before prelim, which it requires
        url,
        data={
            "phase": "final",
            "opens": "2001-01-01T00:00",
            "closes": "2030-01-01T00:00",
            "csrf_token": org.csrf,
        },
    )
    assert before.status_code == 400 and "opens before the phase it requires" in before.text
    unknown = org.client.post(url, data={**form, "phase": "semi", "csrf_token": org.csrf})
    assert unknown.status_code == 404
    with world.p.sessions() as s:
        ch = s.get(Challenge, world.p.challenge_id)
        assert ch is not None and ch.spec_revision == 2
    assert len(_audit(world, "challenge.phase_dates")) == 1
    # Re-score: one button per phase and per track; jobs carry the new revision.
    rescore = "/challenges/demo/organize/rescore"
    r = org.client.post(rescore, data={"phase": "prelim", "track": "age", "csrf_token": org.csrf})
    assert r.status_code == 200
    assert "phase prelim, track age: 2 scoring jobs queued." in r.text
    with world.p.sessions() as s:
        jobs = s.scalars(select(Job).where(Job.kind == SCORE_JOB_KIND)).all()
    assert sorted(j.payload["submission_id"] for j in jobs) == sorted(
        [world.subs["ada"], world.subs["bob"]]
    )
    assert {j.state for j in jobs} == {"queued"} and {j.payload["spec_revision"] for j in jobs} == {
        2
    }
    r = org.client.post(rescore, data={"phase": "prelim", "csrf_token": org.csrf})
    assert "phase prelim: 0 scoring jobs queued." in r.text  # already queued at revision 2
    r = org.client.post(rescore, data={"phase": "nope", "csrf_token": org.csrf})
    assert r.status_code == 400 and "nope" in r.text
    assert [e.detail["jobs"] for e in _audit(world, "submissions.rescore")] == [2, 0]


def test_export_csv_and_audit_log_with_a_hidden_read(world: World) -> None:
    org = world.org.client
    r = org.get("/api/v1/challenges/demo/export/submissions.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 4
    by_id = {int(row["submission_id"]): row for row in rows}
    ada = by_id[world.subs["ada"]]
    assert (ada["team"], ada["submitter"], ada["track"], ada["phase"], ada["status"]) == (
        "ada",
        "ada",
        "age",
        "prelim",
        "scored",
    )
    assert float(ada["score:abs_error"]) == 3.0 and float(ada["primary_score"]) == 3.0
    failed = by_id[world.subs["cmd"]]
    # a team name that looks like a formula is exported as text
    assert failed["team"] == "'=cmd" and failed["status"] == "failed"
    assert failed["error"] == "case c3: no prediction"
    (export,) = _audit(world, "submissions.export")
    assert export.detail == {"rows": 4}
    # The organizer reads per-case results of the hidden subset scored in the final.
    sid = world.subs["ada_final"]
    detail = org.get(f"/api/v1/submissions/{sid}/result").json()
    assert detail["subset_hidden"] and detail["cases"]["c3"]["abs_error"] == 3.0
    page = org.get("/challenges/demo/organize/audit", params={"action": "data.hidden_read"})
    assert page.status_code == 200 and "1 event of action data.hidden_read" in page.text
    row = _row(page.text, 'data-action="data.hidden_read"')
    assert "Olga Organizer" in row and f"submission:{sid}" in row and "per-case results" in row
    assert '<option value="submissions.export">' in page.text
    everything = org.get("/challenges/demo/organize/audit").text
    assert "2 events;" in everything and 'data-action="submissions.export"' in everything
    api = org.get("/api/v1/challenges/demo/audit", params={"limit": 1}).json()
    assert api["total"] == 2 and [e["action"] for e in api["events"]] == ["data.hidden_read"]
    older = org.get("/api/v1/challenges/demo/audit", params={"limit": 1, "offset": 1}).json()
    assert [e["action"] for e in older["events"]] == ["submissions.export"]
    assert org.get("/api/v1/challenges/demo/audit", params={"limit": 0}).status_code == 422
    only = org.get("/api/v1/challenges/demo/audit", params={"action": "submissions.export"})
    assert [e["actor"] for e in only.json()["events"]] == ["Olga Organizer"]

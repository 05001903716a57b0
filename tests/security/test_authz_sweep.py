"""Authorization sweep: every route and page as anonymous, the organizer of another
challenge (D), a participant in no team (C), team B, team A and the organizer.

Reads: no response (headers, body, zip/tar/gzip members, PNG slices) carries hidden-split
labels or per-case results of the hidden split to a participant or anonymous caller, nor
one team's private results (archives, per-case results, private-board scores) to the
other team or to anonymous. The organizer, and team A on its own submissions, do see
them: the check can fail. Writes: no POST/PUT/DELETE by anonymous or by a team changes a
stored row it does not own. See docs/challenges.md, "Security".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from authz_sweep import (
    Call,
    app_routes,
    foreign_changes,
    found,
    hidden_labels,
    route_calls,
    send,
    snapshot,
)
from authz_world import SLUG, World, build_world
from fastapi import FastAPI

from medarena.datasets.catalogue import Catalogue

PARTICIPANTS = ("anonymous", "D", "C", "B", "A")


@pytest.fixture
def world(catalogue: Catalogue, spec_yaml: str, tmp_path: Path) -> Iterator[World]:
    w = build_world(catalogue, spec_yaml, tmp_path / "world")
    yield w
    w.client.close()


def _app(w: World) -> FastAPI:
    app = w.client.app
    assert isinstance(app, FastAPI)
    return app


def test_sweep_covers_every_route_of_the_schema_and_every_page(world: World) -> None:
    app = _app(world)
    calls = route_calls(app, world)
    swept = {(c.method, c.template) for c in calls}
    schema = {
        (method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops
    }
    assert schema and schema <= swept, sorted(schema - swept)
    pages = {(m, r.path) for r in app_routes(app) if not r.in_schema for m in r.methods}
    assert pages <= swept, sorted(pages - swept)
    assert ("GET", "/submissions/{submission_id}/cases/{case_key}/slice.png") in swept
    assert len(pages) > 20  # pages are most of the UI: a sweep of the API alone is not one


def test_no_read_leaks_hidden_labels_or_other_teams_results(world: World) -> None:
    start = time.monotonic()
    reads = [c for c in route_calls(_app(world), world) if c.method in ("GET", "HEAD")]
    seen: dict[str, dict[str, Call]] = {}
    leaks: list[str] = []
    errors: list[str] = []
    for name, caller in world.callers.items():
        forbidden = set(world.forbidden(name).values())
        if name != "organizer":
            forbidden |= hidden_labels(world)
        before = snapshot(world)
        mine = seen.setdefault(name, {})
        for call in reads:
            r = send(world, caller, call)
            if r.status_code >= 500:
                errors.append(f"{name}: {call} -> {r.status_code}")
            hits = found(world, r)
            for label in hits:
                mine.setdefault(label, call)
            leaks += [f"{name} got {x} from {call} ({r.status_code})" for x in hits & forbidden]
        changed = foreign_changes(world.callers["anonymous"], before, snapshot(world))
        assert not changed, f"reads as {name} changed stored rows: {changed}"
    assert not leaks, "\n".join(sorted(leaks))
    assert not errors, "\n".join(errors)

    # Positive controls: the same checks find the secrets where they are allowed.
    org = seen["organizer"]
    must_org = [
        label
        for label in world.hidden.items.values()
        if label.startswith(("hidden label grade", "hidden label file bytes", "per-case"))
    ]
    must_org += [
        label
        for label in world.private["A"].items.values()
        if label.startswith(("per-case", "private-board score"))
    ]
    must_org = [label for label in must_org if "(%.4g)" not in label]  # pages may use repr
    assert sorted(set(must_org) - set(org)) == []
    assert set(world.hidden_pngs.values()) & set(org), "organizer saw no hidden reference slice"
    own = [
        label
        for label in world.private["A"].items.values()
        if label.startswith(("per-case", "private-board score")) and "(%.4g)" not in label
    ]
    assert own and sorted(set(own) - set(seen["A"])) == []
    overlays = {x for x in world.private["A"].items.values() if "prediction overlay" in x}
    assert overlays & set(seen["A"]), "team A saw none of its own prediction overlays"
    elapsed = time.monotonic() - start
    print(f"read sweep: {len(reads)} requests x {len(world.callers)} callers in {elapsed:.1f} s")


def test_no_write_by_anonymous_or_a_team_changes_others_rows(world: World) -> None:
    start = time.monotonic()
    writes = [c for c in route_calls(_app(world), world) if c.method not in ("GET", "HEAD")]
    assert any(c.method == "PUT" for c in writes) and any(c.method == "DELETE" for c in writes)
    problems: list[str] = []
    for name in PARTICIPANTS:
        caller = world.callers[name]
        forbidden = set(world.forbidden(name).values()) | hidden_labels(world)
        before = snapshot(world)
        for call in writes:
            r = send(world, caller, call)
            after = snapshot(world)
            changed = foreign_changes(caller, before, after)
            before = after
            if changed:
                problems.append(f"{name}: {call} ({r.status_code}) changed {changed}")
            if r.status_code >= 500:
                problems.append(f"{name}: {call} -> {r.status_code}")
            problems += [f"{name} got {x} from {call}" for x in found(world, r) & forbidden]
    assert not problems, "\n".join(problems)

    # Positive controls: an organizer's spec update is a change the check reports, and a
    # team's action on its own rows is one it lets pass.
    spec = world.spec_yaml.replace("leaderboard: private_until_close", "leaderboard: public")
    before = snapshot(world)
    r = send(
        world,
        world.callers["organizer"],
        Call(
            "PUT",
            "/api/v1/challenges/{slug}",
            f"/api/v1/challenges/{SLUG}",
            body={"content": spec, "headers": {"Content-Type": "application/yaml"}},
        ),
    )
    assert r.status_code == 200, r.text
    assert foreign_changes(world.callers["B"], before, snapshot(world))
    # ... and with the final board now public, anonymous reads find team A's score there
    board = f"/api/v1/challenges/{SLUG}/leaderboards/final/grade"
    r = send(world, world.callers["anonymous"], Call("GET", board, board))
    assert any(x.startswith("private-board score of team A") for x in found(world, r)), r.text
    before = snapshot(world)
    r = send(
        world,
        world.callers["A"],
        Call(
            "POST",
            "/challenges/{slug}/team",
            f"/challenges/{SLUG}/team",
            body={"data": {"action": "invite", "email": "new-member@example.org"}},
        ),
    )
    after = snapshot(world)
    assert r.status_code == 201 and before != after
    assert foreign_changes(world.callers["A"], before, after) == []
    elapsed = time.monotonic() - start
    print(f"write sweep: {len(writes)} requests x {len(PARTICIPANTS)} callers in {elapsed:.1f} s")

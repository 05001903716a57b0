"""A whole challenge in the browser, from the organizer's spec to the revealed private board.

One scenario, in order, because each step needs the previous one: the organizer creates the
challenge from YAML; a participant signs up, joins, creates a team, downloads the training data
and the inputs of the hidden test subset, submits a broken archive (refused with its problems)
and a good one (scored, status updated live), and sees the leaderboard; a second team appears on
it; a phase whose leaderboard is private until close shows nothing to participants until the
organizer moves its close a few seconds ahead and it passes, then shows the teams.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from browser.conftest import ORGANIZER_EMAIL, Server
from browser.helpers import (
    broken_archive,
    case_ids,
    download,
    drop_file,
    join_and_create_team,
    login,
    nifti_archive,
    page_fits,
    shifted,
    signup,
)

ROOT = Path(__file__).resolve().parents[2]
TITLE = "Browser brain challenge"
SLUG = "browser-brain"
SPEC = f"""\
slug: {SLUG}
title: {TITLE}
summary: Tumour segmentation on a tiny MRI cohort.
rules: |
  Be **fair**. One team per person.
team_size_max: 2
data:
  training: true
  evaluation_inputs: true
tracks:
  - slug: seg
    title: Tumour segmentation
    task: segmentation
    task_config:
      labels: {{tumour: 1}}
      metrics: [dice]
    metrics: [tumour/dice]
    primary_metric: tumour/dice
    ranking: {{bootstrap: 100, seed: 0}}
    dataset: brain
    split: challenge
phases:
  - slug: preliminary
    title: Preliminary
    opens: 2020-01-01T00:00:00Z
    closes: 2099-01-01T00:00:00Z
    scored_subset: validation
    leaderboard: public
    submissions_per_day: 5
  - slug: final
    title: Final
    opens: 2020-01-01T00:00:00Z
    closes: FINAL_CLOSES
    scored_subset: test
    leaderboard: private_until_close
    requires_phase: preliminary
"""
SCORE_TIMEOUT = 45_000  # ms: queued -> scored by the server's one in-process worker


def _shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def _submit(page: Page, target: str, archive: Path, *, drop: bool = False) -> None:
    """Choose the phase/track and the archive on the submit page and press Submit."""
    page.goto(f"/challenges/{SLUG}")
    page.get_by_role("link", name="Submit", exact=True).click()
    page.get_by_label("Phase and track").select_option(target)
    if drop:
        drop_file(page, "#drop", archive)
    else:
        page.get_by_label("Archive (drop it here or choose it)").set_input_files(archive)
    page.get_by_role("button", name="Submit", exact=True).click()


def _wait_scored(page: Page, filename: str, seen: list[str]) -> float:
    """On 'My submissions', wait until ``filename`` is scored, without reloading: the page
    polls the status. Appends the status the server rendered first to ``seen``."""
    row = page.locator("tbody tr", has_text=filename).first
    seen.append(row.get_attribute("data-status") or "")
    page.evaluate("() => { window.__notReloaded = true; }")
    expect(row.locator(".status")).to_have_text("scored", timeout=SCORE_TIMEOUT)
    assert page.evaluate("() => window.__notReloaded === true"), "the page was reloaded"
    return float(row.locator(".score").inner_text())


def _board_rows(page: Page) -> list[tuple[str, str]]:
    """(rank, team) of each row of the leaderboard table on the page."""
    rows = page.locator("#board tbody tr")
    return [
        (rows.nth(i).locator("td").first.inner_text(), rows.nth(i).locator("th").inner_text())
        for i in range(rows.count())
    ]


@pytest.mark.browser
def test_challenge_end_to_end(
    server: Server, new_page: Any, artifacts: Path, tmp_path: Path
) -> None:
    first_seen: list[str] = []  # status of each good submission when its page was rendered
    # -- the organizer creates the challenge from YAML in the browser
    org = new_page()
    login(org, ORGANIZER_EMAIL, "Organizer")
    org.goto("/challenges")
    org.get_by_role("link", name="Create a challenge from a YAML spec").click()
    org.get_by_label("Spec (YAML)").fill("slug: x\ntracks: nope\n")
    org.get_by_role("button", name="Create challenge").click()
    expect(org.get_by_role("alert")).to_contain_text("not saved")
    org.get_by_label("Spec (YAML)").fill(SPEC.replace("FINAL_CLOSES", "2099-01-01T00:00:00Z"))
    _shot(org, artifacts, "01-organizer-new-challenge")
    org.get_by_role("button", name="Create challenge").click()
    expect(org.get_by_role("heading", name=TITLE, level=1)).to_be_visible()
    _shot(org, artifacts, "02-challenge-page")

    # -- participant A: sign up, join, create a team
    alice = new_page()
    signup(alice, "alice@example.org", "Alice")
    join_and_create_team(alice, TITLE, "Team A")
    _shot(alice, artifacts, "03-team-page")

    # -- downloads: training images and labels; inputs of the hidden test subset, no labels
    alice.goto(f"/challenges/{SLUG}")
    train = download(
        alice, "Tumour segmentation: training images and labels (zip)", tmp_path / "t.zip"
    )
    train_ids = case_ids(train, "images")
    assert len(train_ids) == 6 and case_ids(train, "labels") == train_ids
    val = download(
        alice,
        "Tumour segmentation, Preliminary: input images to predict (zip, no labels)",
        tmp_path / "v.zip",
    )
    test = download(
        alice,
        "Tumour segmentation, Final: input images to predict (zip, no labels)",
        tmp_path / "f.zip",
    )
    val_ids, test_ids = case_ids(val, "images"), case_ids(test, "images")
    assert len(val_ids) == 2 and len(test_ids) == 2
    assert not set(val_ids) & set(train_ids) and not set(test_ids) & (set(train_ids) | set(val_ids))
    assert not [n for n in test.namelist() if not n.startswith("images/")], test.namelist()
    assert not [n for n in val.namelist() if not n.startswith("images/")], val.namelist()

    # -- a broken archive, dropped onto the drop zone: refused at once with its problems
    bad = broken_archive(tmp_path / "broken.zip", val_ids)
    _submit(alice, "preliminary/seg", bad, drop=True)
    outcome = alice.locator("#outcome")
    expect(outcome).to_contain_text("Refused", timeout=15_000)
    expect(outcome).to_contain_text("nosuchcase")
    expect(outcome.locator("li")).not_to_have_count(0)
    _shot(alice, artifacts, "04-submit-refused")

    # -- a good archive through the file input: queued, then scored while the page watches
    good = nifti_archive(tmp_path / "alice-prelim.zip", val_ids)
    _submit(alice, "preliminary/seg", good)
    alice.wait_for_url(re.compile(rf"/challenges/{SLUG}/submissions$"))
    assert _wait_scored(alice, "alice-prelim.zip", first_seen) == pytest.approx(1.0)
    _shot(alice, artifacts, "05-my-submissions-scored")

    # -- participant B (another user, another team) submits a worse prediction
    bob = new_page()
    signup(bob, "bob@example.org", "Bob")
    join_and_create_team(bob, TITLE, "Team B")
    _submit(bob, "preliminary/seg", nifti_archive(tmp_path / "bob-prelim.zip", val_ids, shifted))
    bob.wait_for_url(re.compile(rf"/challenges/{SLUG}/submissions$"))
    assert _wait_scored(bob, "bob-prelim.zip", first_seen) < 1.0

    # -- the public leaderboard ranks both teams
    alice.goto(f"/challenges/{SLUG}")
    alice.get_by_role("link", name="Preliminary — Tumour segmentation").click()
    expect(alice.locator("#board")).to_be_visible()
    assert _board_rows(alice) == [("1", "Team A"), ("2", "Team B")]
    _shot(alice, artifacts, "06-leaderboard")
    png = ROOT / "docs" / "leaderboard.png"
    alice.screenshot(path=str(png), full_page=True)
    assert png.stat().st_size < 300_000
    alice.set_viewport_size({"width": 390, "height": 844})
    assert page_fits(alice), "the leaderboard is wider than a phone screen"
    _shot(alice, artifacts, "06-leaderboard-390")
    alice.set_viewport_size({"width": 1280, "height": 900})

    # -- final phase: private until close
    _submit(alice, "final/seg", nifti_archive(tmp_path / "alice-final.zip", test_ids))
    alice.wait_for_url(re.compile(rf"/challenges/{SLUG}/submissions$"))
    _wait_scored(alice, "alice-final.zip", first_seen)
    board_url = f"/challenges/{SLUG}/leaderboard/final/seg"
    alice.goto(f"/challenges/{SLUG}")
    expect(alice.locator("#leaderboards")).to_contain_text(
        "Final — Tumour segmentation: shown when the phase closes"
    )
    resp = alice.goto(board_url)
    assert resp is not None and resp.status == 404
    assert "Team A" not in alice.content()
    resp = org.goto(board_url)  # organizers always see it
    assert resp is not None and resp.status == 200
    expect(org.locator("#board")).to_contain_text("Team A")

    # the organizer moves the close a few seconds ahead in the spec editor
    closes = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=4)
    org.goto(f"/challenges/{SLUG}")
    org.get_by_role("link", name="Edit spec").click()
    org.get_by_label("Spec (YAML)").fill(SPEC.replace("FINAL_CLOSES", closes.isoformat()))
    org.get_by_role("button", name="Save new revision").click()
    expect(org.get_by_role("heading", name=TITLE, level=1)).to_be_visible()
    resp = alice.goto(board_url)
    if dt.datetime.now(dt.UTC) < closes:
        assert resp is not None and resp.status == 404
    time.sleep(max(0.0, (closes - dt.datetime.now(dt.UTC)).total_seconds()) + 0.5)
    alice.goto(f"/challenges/{SLUG}")
    alice.get_by_role("link", name=re.compile("^Final — Tumour segmentation")).click()
    expect(alice.locator("#board")).to_contain_text("Team A")
    assert _board_rows(alice) == [("1", "Team A")]
    _shot(alice, artifacts, "07-private-board-revealed")
    # the live update was seen at least once (a worker may finish before a page renders)
    assert {"queued", "running"} & set(first_seen), first_seen

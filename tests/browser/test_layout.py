"""The pages at 1280 px and at phone width (390 px), and the forms used by keyboard alone.

A page "fits" when the document is no wider than the viewport (wide tables scroll inside
their own wrapper instead of widening the page). A form is keyboard-usable when every visible
control has a label and Tab, pressed from the top of the page, reaches its submit button.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from browser.conftest import ORGANIZER_EMAIL, Server
from browser.dataset import PASSWORD
from browser.helpers import join_and_create_team, login, page_fits, signup

SLUG = "layout-demo"
TITLE = "Layout demo challenge"
SPEC = f"""\
slug: {SLUG}
title: {TITLE}
summary: A challenge whose pages are looked at, at two widths.
rules: |
  Be **fair**.
tracks:
  - slug: seg
    title: Tumour segmentation
    task: segmentation
    task_config: {{labels: {{tumour: 1}}, metrics: [dice]}}
    metrics: [tumour/dice]
    primary_metric: tumour/dice
    dataset: brain
    split: challenge
phases:
  - slug: preliminary
    title: Preliminary
    opens: 2020-01-01T00:00:00Z
    closes: 2099-01-01T00:00:00Z
    scored_subset: validation
"""

# (who, path): the pages a visitor, a participant and an organizer use.
PAGES = [
    ("anonymous", "/challenges"),
    ("anonymous", f"/challenges/{SLUG}"),
    ("anonymous", "/login"),
    ("anonymous", "/signup"),
    ("participant", f"/challenges/{SLUG}"),
    ("participant", f"/challenges/{SLUG}/team"),
    ("participant", f"/challenges/{SLUG}/submit"),
    ("participant", f"/challenges/{SLUG}/submissions"),
    ("participant", f"/challenges/{SLUG}/leaderboard/preliminary/seg"),
    ("organizer", f"/challenges/{SLUG}/edit"),
    *(
        ("organizer", f"/challenges/{SLUG}/organize{sub}")
        for sub in ("", "/participants", "/phases", "/rescore", "/exports", "/audit")
    ),
]

UNLABELLED_JS = """() => Array.from(document.querySelectorAll("input, select, textarea"))
  .filter((el) => el.type !== "hidden" && el.offsetParent !== null)
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
                  && !el.getAttribute("aria-labelledby"))
  .map((el) => el.outerHTML)"""


@pytest.fixture(scope="module")
def states(browser: Any, server: Server) -> Iterator[dict[str, Any]]:
    """Storage states (cookies) of an organizer who created the challenge and of a
    participant who joined it and made a team; anonymous has none."""
    out: dict[str, Any] = {"anonymous": None}
    for who in ("organizer", "participant"):
        ctx = browser.new_context(base_url=server.url)
        ctx.set_default_timeout(15_000)
        page = ctx.new_page()
        if who == "organizer":
            login(page, ORGANIZER_EMAIL, "Organizer")
            page.goto("/challenges-new")
            page.get_by_label("Spec (YAML)").fill(SPEC)
            page.get_by_role("button", name="Create challenge").click()
            expect(page.get_by_role("heading", name=TITLE, level=1)).to_be_visible()
        else:
            signup(page, "layout@example.org", "Layla")
            join_and_create_team(page, TITLE, "Layout team")
        out[who] = ctx.storage_state()
        ctx.close()
    yield out


@pytest.mark.browser
@pytest.mark.parametrize("width", [1280, 390], ids=["desktop-1280", "phone-390"])
def test_pages_fit_the_width(
    browser: Any, server: Server, states: dict[str, Any], artifacts: Path, width: int
) -> None:
    contexts = {
        who: browser.new_context(
            base_url=server.url,
            viewport={"width": width, "height": 844 if width < 600 else 900},
            storage_state=state,
        )
        for who, state in states.items()
    }
    try:
        wide: list[str] = []
        for who, path in PAGES:
            page = contexts[who].new_page()
            resp = page.goto(path)
            assert resp is not None and resp.status == 200, f"{who} {path}: {resp and resp.status}"
            expect(page.locator("h1")).to_be_visible()
            if not page_fits(page):
                wide.append(f"{who} {path} at {width} px")
            assert page.evaluate(UNLABELLED_JS) == [], f"{who} {path}: unlabelled controls"
            name = f"{width}-{who}-{path.strip('/').replace('/', '_') or 'home'}.png"
            page.screenshot(path=str(artifacts / name), full_page=True)
            page.close()
        assert not wide, "pages wider than the viewport:\n" + "\n".join(wide)
    finally:
        for ctx in contexts.values():
            ctx.close()


def _tab_to(page: Page, selector: str, limit: int = 60) -> int:
    """Press Tab (from where the focus is: the top after a page load) until ``selector`` has
    the focus; returns the presses."""
    target = page.locator(selector)
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if target.evaluate("(el) => el === document.activeElement"):
            return presses
    raise AssertionError(f"{selector} not reached by {limit} presses of Tab on {page.url}")


def _type_into(page: Page, selector: str, text: str) -> None:
    _tab_to(page, selector)
    page.keyboard.type(text)


@pytest.mark.browser
def test_forms_by_keyboard_alone(
    new_page: Any, server: Server, states: dict[str, Any], artifacts: Path
) -> None:
    page = new_page(width=390, height=844)
    # sign up: type into each labelled field, reach the button with Tab, press Enter
    page.goto("/signup")
    assert page.evaluate(UNLABELLED_JS) == []
    _type_into(page, "#email", "keys@example.org")
    _type_into(page, "#display_name", "Keys")
    _type_into(page, "#password", PASSWORD)
    _type_into(page, "#password_repeat", PASSWORD)
    _tab_to(page, "form[action='/signup'] button[type=submit]")
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="Keys")).to_be_visible()

    # join: tick the rules box with Space, then the button
    page.goto(f"/challenges/{SLUG}")
    _tab_to(page, "input[name=accept]")
    page.keyboard.press("Space")
    _tab_to(page, f"form[action='/challenges/{SLUG}/join'] button[type=submit]")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Team name")).to_be_visible()

    # create a team
    _type_into(page, "#team-name", "Keyboard team")
    _tab_to(page, "form:has(#team-name) button[type=submit]")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Keyboard team")).to_be_visible()

    # the submit form: every control labelled; Tab reaches the select, the file input, Submit
    page.goto(f"/challenges/{SLUG}/submit")
    assert page.evaluate(UNLABELLED_JS) == []
    _tab_to(page, "#target")
    _tab_to(page, "#archive")
    _tab_to(page, "#submit-form button[type=submit]")
    page.screenshot(path=str(artifacts / "keyboard-submit-focus.png"), full_page=True)

    # log in, and the organizer's spec editor
    org = new_page()
    org.goto("/login")
    _type_into(org, "#email", ORGANIZER_EMAIL)
    _type_into(org, "#password", PASSWORD)
    _tab_to(org, "form[action='/login'] button[type=submit]")
    org.keyboard.press("Enter")
    expect(org.get_by_role("link", name="Organizer")).to_be_visible()
    org.goto(f"/challenges/{SLUG}/edit")
    assert org.evaluate(UNLABELLED_JS) == []
    _tab_to(org, "#spec-text")
    # Tab inside a textarea moves the focus on (it does not insert a tab character)
    _tab_to(org, "form:has(#spec-text) button[type=submit]")

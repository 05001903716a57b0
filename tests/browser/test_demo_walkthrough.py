"""`medarena demo` walked in the browser as a new user would, after the README's one command.

`medarena demo --size tiny --no-serve` builds two tracks into a fresh data dir and prints the
accounts; a real `medarena serve` then serves that data dir. In Chromium the Team Alpha captain
logs in with the printed password, opens the demo challenge and the brain-age track's
preliminary leaderboard (the two baseline teams; this page is saved as the README's
docs/demo-leaderboard.png), downloads the inputs to predict, submits a regression CSV (the
generator's exact ages: the demo's ground truth is known because the generator made it), sees
it scored on "My submissions", and sees the leaderboard take it into account for Team Alpha.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from browser.conftest import _medarena, running_server
from browser.helpers import download, login
from medarena.demo.lab_models import LAB_TEAM
from medarena.demo.runner import CHALLENGE_SLUG, ORGANIZER, TEAMS, cache_dir

ROOT = Path(__file__).resolve().parents[2]
DOCS_PNG = ROOT / "docs" / "demo-leaderboard.png"
TRACKS = "brain_age,dose"
TRACK_SLUG = "brain-age"
TRACK_TITLE = "Brain-age regression"
CHALLENGE_TITLE = "medarena demo challenge"
SCORE_TIMEOUT = 30_000  # ms: queued -> scored by the server's one in-process worker


def _passwords(stdout: str) -> dict[str, str]:
    """E-mail -> password of the accounts the demo printed (console lines may be wrapped)."""
    text = " ".join(stdout.split())
    return dict(re.findall(r"(\S+@demo\.medarena\.example) password (\S+)", text))


def _board(page: Page) -> list[tuple[str, str, float]]:
    """(rank, team, score) of each row of the leaderboard table on the page."""
    rows = page.locator("#board tbody tr")
    out = []
    for i in range(rows.count()):
        row = rows.nth(i)
        cells = row.locator("td")
        out.append(
            (
                cells.nth(0).inner_text(),
                row.locator("th").inner_text(),
                float(cells.nth(2).inner_text()),
            )
        )
    return out


def save_docs_screenshot(page: Page, dest: Path) -> int:
    """The page's content (header and main, no empty margin) as a small palette PNG; its size."""
    box = page.evaluate(
        """() => {
            const r = document.querySelector("main").getBoundingClientRect();
            return {height: Math.ceil(r.bottom + window.scrollY) + 16};
        }"""
    )
    width = page.viewport_size["width"] if page.viewport_size else 1280
    raw = page.screenshot(
        full_page=True, clip={"x": 0, "y": 0, "width": width, "height": box["height"]}
    )
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)
    return dest.stat().st_size


@pytest.mark.browser
def test_demo_walkthrough(browser: Any, artifacts: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDARENA_")}
    env["MEDARENA_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"
    out = _medarena(env, "demo", "--size", "tiny", "--no-serve", "--tracks", TRACKS)
    passwords = _passwords(out)
    assert set(passwords) == {ORGANIZER[0], LAB_TEAM[1], *(e for _t, e, _d in TEAMS)}, out
    team, email, display = TEAMS[0]
    other_team = TEAMS[1][0]
    truth_csv = cache_dir(data_dir, "brain_age", 0, "tiny") / "data" / "targets.csv"
    with truth_csv.open(newline="") as f:
        ages = {r["case_id"]: r["chronological_age"] for r in csv.DictReader(f)}

    with running_server(env, data_dir, artifacts / "demo-server.log") as srv:
        ctx = browser.new_context(base_url=srv.url, viewport={"width": 1280, "height": 800})
        ctx.set_default_timeout(15_000)
        try:
            page = ctx.new_page()
            # -- log in with the password the demo printed; open the challenge and a track
            login(page, email, display, passwords[email])
            page.goto("/challenges")
            page.get_by_role("link", name=CHALLENGE_TITLE).click()
            expect(page.get_by_role("heading", name=CHALLENGE_TITLE, level=1)).to_be_visible()
            expect(page.locator("#tracks")).to_contain_text(TRACK_TITLE)
            expect(page.locator("#tracks")).to_contain_text("Radiotherapy dose prediction")
            expect(page.locator("#rules")).to_contain_text("synthetic")
            page.screenshot(path=str(artifacts / "demo-01-challenge.png"), full_page=True)

            page.get_by_role("link", name=f"Preliminary — {TRACK_TITLE}").click()
            expect(page.locator("#board")).to_be_visible()
            before = {t: (rank, score) for rank, t, score in _board(page)}
            assert set(before) == {team, other_team, LAB_TEAM[0]}  # Team Lab: an ONNX model
            assert before[team][1] > 0  # the baseline (training mean age) is not exact
            assert save_docs_screenshot(page, DOCS_PNG) < 200_000
            assert Image.open(DOCS_PNG).width == 1280
            page.screenshot(
                path=str(artifacts / "demo-02-leaderboard-baselines.png"), full_page=True
            )

            # -- the inputs to predict: case ids, no ages (the target) in the download
            page.goto(f"/challenges/{CHALLENGE_SLUG}")
            zf = download(
                page,
                f"{TRACK_TITLE}, Preliminary: input images to predict (zip, no labels)",
                tmp_path / "inputs.zip",
            )
            names = zf.namelist()
            cases = sorted(
                {
                    re.sub(r"(_\d{4})?\.nii\.gz$", "", Path(n).name)
                    for n in names
                    if n.endswith(".nii.gz")
                }
            )
            assert cases and set(cases) <= set(ages), names
            for n in names:
                if n.endswith(".csv"):
                    assert "age" not in zf.read(n).decode().splitlines()[0], (n, names)

            # -- submit a regression CSV in a zip; it is scored on "My submissions"
            archive = tmp_path / "alpha-exact-ages.zip"
            with zipfile.ZipFile(archive, "w") as out_zf:
                rows = "".join(f"{c},{ages[c]}\n" for c in cases)
                out_zf.writestr("predictions.csv", "case_id,chronological_age\n" + rows)
            page.get_by_role("link", name="Submit", exact=True).click()
            page.get_by_label("Phase and track").select_option(f"preliminary/{TRACK_SLUG}")
            page.get_by_label("Archive (drop it here or choose it)").set_input_files(archive)
            page.get_by_role("button", name="Submit", exact=True).click()
            page.wait_for_url(re.compile(rf"/challenges/{CHALLENGE_SLUG}/submissions$"))
            row = page.locator("tbody tr", has_text=archive.name).first
            expect(row.locator(".status")).to_have_text("scored", timeout=SCORE_TIMEOUT)
            assert float(row.locator(".score").inner_text()) == pytest.approx(0.0)
            mine = page.locator("tbody tr", has_text=TRACK_SLUG).filter(has_text="preliminary")
            expect(mine).to_have_count(2)  # the team's baseline and the new submission
            page.screenshot(path=str(artifacts / "demo-03-my-submissions.png"), full_page=True)

            # -- the leaderboard counts it for Team Alpha: its best MAE is now 0, first place
            page.goto(f"/challenges/{CHALLENGE_SLUG}")
            page.get_by_role("link", name=f"Preliminary — {TRACK_TITLE}").click()
            after = _board(page)
            assert after[0][:2] == ("1", team), after
            assert after[0][2] == pytest.approx(0.0)
            others = {t: score for _r, t, score in after[1:]}
            assert others == pytest.approx({t: before[t][1] for t in others})
            assert set(others) == {other_team, LAB_TEAM[0]}
            page.screenshot(path=str(artifacts / "demo-04-leaderboard-after.png"), full_page=True)
        finally:
            ctx.close()

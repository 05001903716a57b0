"""A lab run in Chromium: paste a recipe, see a problem by its line, launch, watch the live
chart get points while the run trains in `medarena serve`'s worker, until it succeeds.

The data is the browser server's 'brain' dataset (tiny 3D volumes with label maps, split
'challenge' with a hidden 'test' subset). Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from browser.conftest import ORGANIZER_EMAIL
from browser.helpers import login, page_fits

RECIPE = """\
name: browser-brain-unet
dataset: {name: brain, split: challenge}
task: {type: segmentation, spatial_dims: 3, num_classes: 2}
preprocess:
  - block: zscore
  - block: rand_crop_by_label
network:
  block: unet
  params: {channels: [4, 8], strides: [2], num_res_units: 0}
loss: {block: dice_ce}
optimizer: {block: adam, params: {lr: 0.01}}
trainer: {epochs: 20, batch_size: 1, patch_size: [4, 4, 4], seed: 1, val_every: 5}
export: {onnx: false}
"""

# the chart has drawn loss points while the run is still training
LIVE_JS = """() => {
  const run = document.getElementById("run");
  const loss = document.getElementById("loss-chart");
  return run.dataset.status === "running" && Number(loss.dataset.points) > 0;
}"""


def _shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


@pytest.mark.browser
def test_launch_a_run_and_watch_its_live_chart(new_page: Any, artifacts: Path) -> None:
    page = new_page()
    login(page, ORGANIZER_EMAIL, "Organizer")
    page.get_by_role("navigation", name="main").get_by_role("link", name="Lab").click()
    expect(page).to_have_url(re.compile(r"/lab$"))
    expect(page.get_by_role("link", name="Visual builder")).to_be_visible()
    page.get_by_role("link", name="New run").click()

    # a misspelt network block: the problem names its line and the nearest valid name
    page.get_by_label("Recipe (YAML)").fill(RECIPE.replace("block: unet", "block: unett"))
    page.get_by_role("button", name="Validate").click()
    problems = page.locator("#problems")
    expect(problems).to_contain_text("line 8, field network.block")
    expect(problems).to_contain_text("did you mean 'unet'")
    # validating on the hidden test subset is refused
    page.get_by_label("Recipe (YAML)").fill(
        RECIPE.replace("split: challenge}", "split: challenge, validation: test}")
    )
    page.get_by_role("button", name="Launch").click()
    expect(problems).to_contain_text("field dataset.validation")
    expect(problems).to_contain_text("hidden")
    _shot(page, artifacts, "lab-01-recipe-problems")

    page.get_by_label("Recipe (YAML)").fill(RECIPE)
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#valid")).to_contain_text("The recipe is valid")
    page.get_by_role("button", name="Launch").click()
    expect(page).to_have_url(re.compile(r"/lab/runs/\d+$"))
    run_id = page.url.rsplit("/", 1)[1]

    page.wait_for_function(LIVE_JS, timeout=90_000)
    assert page_fits(page)
    _shot(page, artifacts, "lab-02-run-live-chart")
    # the Lab page, opened while the run trains, follows it without a reload
    index = page.context.new_page()
    index.goto("/lab")
    row = index.locator(f"#runs tr[data-id='{run_id}']")
    expect(row).to_be_visible()
    run = page.locator("#run")
    expect(run).to_have_attribute("data-status", "succeeded", timeout=180_000)
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("#bar")).to_have_js_property("value", 1)
    # 6 training cases, batch 1, 20 epochs; dice validated every 5 epochs
    expect(page.locator("#loss-chart")).to_have_attribute("data-points", "120")
    expect(page.locator("#metric-chart")).to_have_attribute("data-points", "4")
    expect(page.locator("#metric")).to_contain_text("dice")
    model = page.locator("#model a")
    expect(model).to_have_attribute("href", "/lab/models/browser-brain-unet:1")
    expect(page.locator("#cancel-form")).to_be_hidden()
    _shot(page, artifacts, "lab-03-run-succeeded")

    expect(row).to_have_attribute("data-status", "succeeded")
    expect(row.get_by_role("link", name="browser-brain-unet:1")).to_be_visible()
    expect(row.locator(".progress")).to_contain_text("100%")

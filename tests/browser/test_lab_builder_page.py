"""The recipe builder in Chromium: assemble a recipe, see the YAML follow, fix a problem
the server points at, validate, launch, and land on the run's page.

The data is the browser server's 'brain' dataset (tiny 3D volumes with label maps, split
'challenge' with a hidden 'test' subset). Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from browser.conftest import ORGANIZER_EMAIL, Server
from browser.helpers import login, page_fits
from medarena.config import get_settings
from medarena.datasets.catalogue import make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.imaging.image import Image
from medarena.imaging.nifti import write_nifti

# Every visible form control without a label (same check as test_layout.py).
UNLABELLED_JS = """() => Array.from(document.querySelectorAll("input, select, textarea"))
  .filter((el) => el.type !== "hidden" && el.offsetParent !== null)
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
                  && !el.getAttribute("aria-labelledby"))
  .map((el) => el.outerHTML)"""


def _open_builder(page: Page) -> None:
    login(page, ORGANIZER_EMAIL, "Organizer")
    page.goto("/lab/builder")
    expect(page.locator("#builder[data-ready=true]")).to_be_attached()


def _yaml(page: Page) -> Any:
    return expect(page.locator("#yaml-lines"))


@pytest.mark.browser
def test_build_validate_and_launch_a_recipe(new_page: Any, artifacts: Path) -> None:
    page = new_page()
    _open_builder(page)

    page.get_by_label("Recipe name").fill("builder-unet")
    page.get_by_label("Dataset").select_option("brain")
    page.get_by_label("Split").select_option("challenge")
    expect(page.get_by_label("Train on (subset)").locator("option")).to_have_text(
        [re.compile(r"^train \("), re.compile(r"^validation \(")]
    )  # the hidden test subset is not offered
    expect(page.locator("#hidden-note")).to_contain_text("test")
    page.get_by_label("Train on (subset)").select_option("train")
    page.get_by_label("Validate on (subset)").select_option("validation")
    page.get_by_label("type", exact=True).select_option("segmentation")
    page.get_by_label("spatial dims").select_option("3")
    _yaml(page).to_contain_text("name: brain")
    _yaml(page).to_contain_text("type: segmentation")

    # the network menu offers only blocks of the task; a classifier is not among them
    network = page.get_by_label("Network block")
    expect(network.locator("option", has_text="densenet")).to_have_count(0)
    network.select_option("unet")
    _yaml(page).to_contain_text("block: unet")
    page.get_by_label("channels", exact=True).fill("4, 8")
    _yaml(page).to_contain_text("channels: [4, 8]")
    page.get_by_label("strides", exact=True).fill("2")
    _yaml(page).to_contain_text("strides: [2]")

    # add two augmentation blocks, then put the second first
    add_name = "Augmentation block to add"
    page.get_by_label(add_name).select_option("flip")
    page.get_by_role("button", name="Add a augmentation block").click()
    page.get_by_label(add_name).select_option("gaussian_noise")
    page.get_by_role("button", name="Add a augmentation block").click()
    page.get_by_role("button", name="Move gaussian_noise (Augmentation 2) up").click()
    text = page.locator("#yaml-lines").inner_text()
    assert text.index("block: gaussian_noise") < text.index("block: flip"), text
    page.get_by_role("button", name="Remove flip (Augmentation 2)").click()
    _yaml(page).not_to_contain_text("block: flip")

    page.get_by_label("patch size").fill("4, 4, 4")
    _yaml(page).to_contain_text("patch_size: [4, 4, 4]")
    page.get_by_label("epochs").fill("1")

    # a mistake: the server points at its line, under the line
    page.get_by_label("dropout", exact=True).fill("1.5")
    _yaml(page).to_contain_text("dropout: 1.5")
    page.get_by_role("button", name="Validate").click()
    bad = page.locator("#yaml-lines li.has-problem")
    expect(bad).to_have_count(1)
    expect(bad.locator("code")).to_have_text(re.compile(r"^\s*dropout: 1\.5$"))
    expect(bad.locator(".line-problem")).to_contain_text("network.params.dropout")
    expect(bad.locator(".line-problem")).to_contain_text("less than 1")
    page.screenshot(path=str(artifacts / "lab-builder-problem.png"), full_page=True)

    page.get_by_label("dropout", exact=True).fill("0.1")
    expect(page.locator("#yaml-lines li.has-problem")).to_have_count(0)  # stale problems go

    # by hand: a misspelt block name gets the nearest valid one; back to the form drops it
    page.get_by_role("button", name="Edit the YAML by hand").click()
    area = page.get_by_label("Recipe YAML (editable)")
    expect(area).to_have_value(re.compile(r"block: unet\n"))
    expect(page.get_by_label("channels", exact=True)).to_be_disabled()
    area.fill(area.input_value().replace("block: unet", "block: unett"))
    page.get_by_role("button", name="Validate").click()
    bad = page.locator("#yaml-lines li.has-problem")
    expect(bad.locator("code")).to_have_text(re.compile(r"block: unett$"))
    expect(bad.locator(".line-problem")).to_contain_text("Suggestion: unet")
    area.fill(area.input_value().replace("block: dice_ce", "block: dice_cee"))
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#yaml-lines li.has-problem")).to_have_count(2)
    page.get_by_role("button", name="use dice_ce instead of dice_cee").click()
    expect(area).to_have_value(re.compile(r"block: dice_ce\n"))
    expect(page.locator("#yaml-lines li.has-problem")).to_have_count(0)
    page.get_by_role("button", name="Back to the form (drop hand edits)").click()
    expect(page.get_by_label("Recipe YAML (editable)")).to_be_hidden()
    _yaml(page).to_contain_text("block: unet")
    _yaml(page).not_to_contain_text("unett")

    # by hand again, a valid change is loaded into the forms
    page.get_by_role("button", name="Edit the YAML by hand").click()
    area.fill(area.input_value().replace("channels: [4, 8]", "channels: [4, 16]"))
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#outcome")).to_contain_text("Valid")
    page.get_by_role("button", name="Load into the form").click()
    expect(page.get_by_label("Recipe YAML (editable)")).to_be_hidden()
    expect(page.get_by_label("channels", exact=True)).to_have_value("4, 16")
    expect(page.get_by_label("channels", exact=True)).to_be_enabled()
    expect(page.get_by_label("dropout", exact=True)).to_have_value("0.1")
    _yaml(page).to_contain_text("channels: [4, 16]")
    _yaml(page).not_to_contain_text("num_res_units")  # defaults are not written
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#outcome")).to_contain_text("Valid")
    assert page.evaluate(UNLABELLED_JS) == []
    assert page_fits(page)
    page.screenshot(path=str(artifacts / "lab-builder.png"), full_page=True)

    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r"/lab/runs/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("builder-unet")


def _tab_to(page: Page, selector: str, limit: int = 150) -> int:
    """Press Tab until ``selector`` has the focus; returns the presses."""
    target = page.locator(selector)
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if target.evaluate("(el) => el === document.activeElement"):
            return presses
    raise AssertionError(f"{selector} not reached by {limit} presses of Tab")


@pytest.mark.browser
def test_builder_fits_a_phone_and_works_by_keyboard(new_page: Any, artifacts: Path) -> None:
    page = new_page(390, 844)
    _open_builder(page)
    # from the top, Tab passes every form control and reaches Validate; Enter validates
    page.locator("body").focus()
    _tab_to(page, "#validate")
    page.keyboard.press("Enter")
    expect(page.locator("#outcome")).to_contain_text("Valid")
    page.get_by_label("Preprocessing block to add").select_option("spacing")
    page.get_by_role("button", name="Add a preprocessing block").click()
    page.get_by_label("pixdim").fill("1, 1, 2")
    _yaml(page).to_contain_text("pixdim: [1, 1, 2]")
    assert page_fits(page)
    assert page.evaluate(UNLABELLED_JS) == []
    page.screenshot(path=str(artifacts / "lab-builder-390.png"), full_page=True)


@pytest.mark.browser
def test_classification_takes_its_classes_from_the_target(
    new_page: Any, server: Server, tmp_path: Path
) -> None:
    """A 2D dataset with a case label: the builder presets 2D from the images, lists only
    image-level networks, offers the label as the target and counts its classes."""
    src = tmp_path / "grades"
    (src / "images").mkdir(parents=True)
    rows = []
    for i in range(8):
        image = Image(np.full((8, 8), float(i), np.float32), (1.0, 1.0))
        write_nifti(image, src / "images" / f"g{i}.nii.gz")
        rows.append({"case_id": f"g{i}", "grade": ["low", "mid", "high"][i % 3]})
    with open(src / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["case_id", "grade"])
        writer.writeheader()
        writer.writerows(rows)
    # in this process, not by `medarena` subprocesses: their start-up is most of the time
    cat = open_catalogue(get_settings(data_dir=server.data_dir), migrate=False)
    try:
        assert ingest(cat, src, "builder-grades").cases_added == 8
        spec = SplitSpec(name="lab", ratios=(0.5, 0.25, 0.25), group_by=None, hidden=("test",))
        make_split(cat, "builder-grades", spec)
    finally:
        cat.close()

    page = new_page()
    _open_builder(page)
    page.get_by_label("Dataset").select_option("builder-grades")
    expect(page.get_by_label("spatial dims")).to_have_value("2")  # from the images
    page.get_by_label("type", exact=True).select_option("classification")
    network = page.get_by_label("Network block")
    expect(network.locator("option", has_text="unet")).to_have_count(0)
    network.select_option("resnet")
    target = page.get_by_label("Target (case label to learn)")
    expect(target).to_be_visible()
    target.select_option("grade")
    expect(page.get_by_label("num classes")).to_have_value(re.compile(r"^[23]$"))
    page.get_by_label("patch size").fill("8, 8")
    _yaml(page).to_contain_text("target: grade")
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#outcome")).to_contain_text("Valid")

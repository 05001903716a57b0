"""An explanation in Chromium: a participant submits an ONNX segmentation model, the
server's worker scores it and stores its probability maps, and the case viewer shows the
heat map layer with its legend; the toggle hides and shows it, the slider sets its opacity.

The data is the browser server's 'brain' dataset (split 'challenge', 'validation' public).
Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from playwright.sync_api import Page, expect

from browser.conftest import ORGANIZER_EMAIL, Server
from browser.helpers import join_and_create_team, signup

TITLE = "Browser explanation challenge"
SLUG = "browser-explain"
SPEC = f"""\
slug: {SLUG}
title: {TITLE}
summary: Tumour segmentation by ONNX models.
rules: Be fair.
tracks:
  - slug: seg
    title: Tumour segmentation
    task: segmentation
    task_config:
      labels: {{tumour: 1}}
      metrics: [dice]
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
    submission_kinds: [predictions, model]
"""
MANIFEST = """\
inputs:
  channels: [MR]
  normalisation: [{block: zscore}]
  patch_size: [4, 4, 4]
outputs: {kind: argmax, names: [tumour]}
"""
WAIT_S = 60  # queued -> scored -> explained by the server's one in-process worker


def _model_zip(path: Path) -> Path:
    conv = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():  # tumour where the z-scored intensity is above 0
        conv.weight.copy_(torch.tensor([0.0, 2.0]).reshape(2, 1, 1, 1, 1))
        conv.bias.zero_()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            conv.eval(),
            (torch.zeros(1, 1, 4, 4, 4),),
            buf,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}},
            dynamo=False,
        )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.onnx", buf.getvalue())
        zf.writestr("manifest.yaml", MANIFEST)
    return path


def _loaded(page: Page, selector: str) -> bool:
    return bool(
        page.evaluate(
            "(s) => { const i = document.querySelector(s); return !!i && i.complete"
            " && i.naturalWidth > 0; }",
            selector,
        )
    )


@pytest.mark.browser
def test_heat_map_layer_toggles_and_fades(
    new_page: Any, server: Server, tmp_path: Path, artifacts: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    server.cli("challenge", "create", str(spec), "--organizer", ORGANIZER_EMAIL)
    page = new_page()
    signup(page, "explainer@example.org", "Explainer")
    join_and_create_team(page, TITLE, "Team Explain")
    page.goto(f"/challenges/{SLUG}")
    page.get_by_role("link", name="Submit", exact=True).click()
    page.get_by_label("Phase and track").select_option("preliminary/seg")
    archive = _model_zip(tmp_path / "explain-model.zip")
    page.get_by_label("Archive (drop it here or choose it)").set_input_files(archive)
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(rf"/challenges/{SLUG}/submissions$"))
    row = page.locator("tbody tr", has_text="explain-model.zip").first
    expect(row.locator(".status")).to_have_text("scored", timeout=WAIT_S * 1000)
    href = row.locator("a[href^='/submissions/']").first.get_attribute("href")
    assert href is not None
    sid = re.search(r"/submissions/(\d+)", href)
    assert sid is not None
    page.goto(f"/submissions/{sid.group(1)}/viewer")
    page.locator(f"a[href^='/submissions/{sid.group(1)}/cases/']").first.click()
    case_url = page.url
    # the explanation job runs after the scoring: reload until its layer is there
    heat = page.locator("#layer-explanation")
    for _ in range(WAIT_S):
        if heat.count():
            break
        expect(page.locator("#no-explanation")).to_be_visible()
        page.wait_for_timeout(1000)
        page.goto(case_url)
    expect(heat).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.getElementById('layer-explanation');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    legend = page.locator("#explanation-legend")
    expect(legend).to_contain_text("Probability map")
    expect(legend).to_contain_text("tumour")
    page.screenshot(path=str(artifacts / "explain-01-heat-map.png"), full_page=True)

    toggle = page.get_by_label("Explanation (heat map)")
    expect(toggle).to_be_checked()
    toggle.uncheck()
    expect(heat).to_be_hidden()
    toggle.check()
    expect(heat).to_be_visible()
    page.get_by_label("Opacity").fill("30")
    assert page.evaluate("() => document.getElementById('layer-explanation').style.opacity") in (
        "0.3",
        ".3",
    )
    # moving through slices keeps the layer in step with the image
    page.locator("#slice").fill("0")
    expect(heat).to_have_attribute("src", re.compile(r"index=0&layer=explanation&map=0"))
    page.wait_for_function(
        "() => { const i = document.getElementById('layer-explanation');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    assert _loaded(page, "#layer-image")
    page.screenshot(path=str(artifacts / "explain-02-faded.png"), full_page=True)

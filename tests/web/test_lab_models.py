"""Registry models for users: pages, API, download, one-click submission (web and CLI).

A real lab run (a tiny 3D DenseNet regressor, one epoch on the small brain dataset)
registers the model; a lab_runs row makes ada its owner. Ada sees and submits it; bob
(another user) gets 404 everywhere; an admin sees every model. The one-click submission
goes through the normal submission service and a real worker scores it. SQLite: the
authorization sweep (tests/security) covers these routes on both backends.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medarena.accounts.sessions import create_web_session, sign_session_id
from medarena.accounts.tokens import create_token
from medarena.challenges.scoring import HANDLERS
from medarena.challenges.spec import ChallengeSpec, Track, parse_spec
from medarena.cli.main import app as cli_app
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.db.lab_models import LabRun
from medarena.db.platform_models import Challenge, Submission, User
from medarena.errors import InputError
from medarena.jobs import Worker
from medarena.lab.recipe import parse_recipe
from medarena.lab.registry import ModelInfo
from medarena.lab.submit import manifest_for
from medarena.lab.trainer import train
from medarena.web.app import create_app

sys.path.insert(0, str(Path(__file__).parents[1] / "challenges"))
from track_helpers import add_team_member

RECIPE = """\
name: brain-grade
dataset: {name: brain, split: challenge, target: grade}
task: {type: regression, spatial_dims: 3}
preprocess:
  - block: zscore
network:
  block: densenet
  params: {init_features: 4, growth_rate: 4, block_config: [1, 1]}
loss: {block: l1}
trainer: {epochs: 2, batch_size: 3, patch_size: [8, 8, 8]}
"""


def _write_brain(root: Path, n: int = 10) -> None:
    root.mkdir(parents=True)
    rows = ["case_id,grade"]
    for i in range(n):
        img = np.random.default_rng(i).normal(100, 10, (6, 5, 4)).astype(np.float32)
        nib.save(nib.Nifti1Image(img, np.diag([1.0, 1.0, 2.0, 1.0])), root / f"case{i:02d}.nii.gz")
        rows.append(f"case{i:02d},{i % 4}")
    (root / "grades.csv").write_text("\n".join(rows) + "\n")


@dataclass
class World:
    cat: Catalogue
    ref: str
    app: object
    users: dict[str, int]
    tokens: dict[str, str]
    web: dict[str, tuple[str, str]]  # name -> (session cookie, csrf token)

    def api(self, name: str) -> TestClient:
        c = TestClient(self.app, follow_redirects=False)  # type: ignore[arg-type]
        c.headers["Authorization"] = f"Bearer {self.tokens[name]}"
        return c

    def browser(self, name: str) -> tuple[TestClient, str]:
        c = TestClient(self.app, follow_redirects=False)  # type: ignore[arg-type]
        cookie, csrf = self.web[name]
        c.cookies.set("medarena_session", cookie)
        return c, csrf


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One trained model for the module (training is the slow part); the only test that
    submits runs last."""
    tmp_path = tmp_path_factory.mktemp("lab-models")
    url = f"sqlite:///{tmp_path / 'test.db'}"
    settings = get_settings(data_dir=tmp_path / "data", database_url=url, secret_key="k" * 48)
    cat = open_catalogue(settings)
    _write_brain(tmp_path / "src")
    ingest(cat, tmp_path / "src", "brain")
    make_split(
        cat,
        "brain",
        SplitSpec(name="challenge", ratios=(0.6, 0.2, 0.2), group_by=None, hidden=("test",)),
    )
    ref = str(train(parse_recipe(RECIPE), cat, tmp_path / "run").model)
    spec_text = (Path(__file__).parents[1] / "challenges" / "spec_small.yaml").read_text()
    data = parse_spec(spec_text).model_dump(mode="json")
    data["phases"][0].update(submission_kinds=["predictions", "model"], submissions_per_day=None)
    users, tokens, web = {}, {}, {}
    with cat.sessions() as s, s.begin():
        spec = ChallengeSpec.model_validate(data)
        ch = Challenge(slug=spec.slug, title=spec.title, spec=spec.model_dump(mode="json"))
        s.add(ch)
        s.flush()
        users["ada"] = add_team_member(s, ch, "ada@example.org", "ada-team")
        users["bob"] = add_team_member(s, ch, "bob@example.org", "bob-team")
        admin = User(
            email="root@example.org", display_name="root", password_hash="x", is_admin=True
        )
        s.add(admin)
        s.flush()
        users["admin"] = admin.id
        s.add(
            LabRun(
                owner_id=users["ada"],
                name="brain-grade",
                recipe_yaml=RECIPE,
                recipe_digest="0" * 64,
                status="succeeded",
                out_dir=str(tmp_path / "run"),
                model_ref=ref,
            )
        )
        for name, uid in users.items():
            user = s.get(User, uid)
            assert user is not None
            tokens[name] = create_token(s, user, "t")[1]
            row, sid = create_web_session(s, user)
            web[name] = (sign_session_id(settings.secret, sid), row.csrf_token)
    yield World(cat, ref, create_app(settings, cat), users, tokens, web)
    cat.close()


def _submissions(cat: Catalogue) -> list[Submission]:
    with cat.sessions() as s:
        rows = list(s.query(Submission).order_by(Submission.id))
        for r in rows:
            s.expunge(r)
    return rows


def test_model_pages_api_and_who_sees_them(world: World) -> None:
    ada, bob, admin = world.api("ada"), world.api("bob"), world.api("admin")
    assert [m["model"] for m in ada.get("/api/v1/lab/models").json()] == [world.ref]
    assert bob.get("/api/v1/lab/models").json() == []
    assert [m["model"] for m in admin.get("/api/v1/lab/models").json()] == [world.ref]
    detail = ada.get(f"/api/v1/lab/models/{world.ref}").json()
    assert detail["task"] == "regression" and "mae" in detail["metrics"]
    assert detail["model_card"]["intended_use"]
    assert len(detail["curves"]) == 2
    assert [d["value"] for d in detail["destinations"]] == ["brain-2025/grade/preliminary"]
    for path in (
        f"/api/v1/lab/models/{world.ref}",
        f"/api/v1/lab/models/{world.ref}/download",
        f"/lab/models/{world.ref}",
        f"/lab/models/{world.ref}/download",
        "/api/v1/lab/models/brain-grade",  # the latest version, by name
    ):
        r = bob.get(path)
        assert r.status_code == 404, path
        assert "brain-grade" not in r.text or "that you may see" in r.text  # no other names
    assert (
        bob.post(
            f"/api/v1/lab/models/{world.ref}/submit",
            json={"challenge": "brain-2025", "track": "grade", "phase": "preliminary"},
        ).status_code
        == 404
    )
    assert ada.get("/api/v1/lab/models/nope:1").status_code == 404
    # the pages: list, card, metrics, curves as SVG, the submit form with the one phase
    page = ada.get("/lab/models")
    assert page.status_code == 200 and f'href="/lab/models/{world.ref}"' in page.text
    page = ada.get(f"/lab/models/{world.ref}").text
    assert "Model card" in page and "Limitations" in page
    assert 'data-series="loss"' in page and "<polyline" in page
    assert 'data-series="mae"' in page
    assert '<option value="brain-2025/grade/preliminary">' in page
    assert f'href="/lab/models/{world.ref}/download"' in page
    assert admin.get(f"/lab/models/{world.ref}").status_code == 200
    assert "No model yet" in bob.get("/lab/models").text


def test_download_holds_the_onnx_card_and_recipe(world: World, tmp_path: Path) -> None:
    r = world.api("ada").get(f"/lab/models/{world.ref}/download")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert 'filename="brain-grade-v1.zip"' in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert sorted(zf.namelist()) == ["model.onnx", "model_card.json", "recipe.yaml"]
        onnx_bytes = zf.read("model.onnx")
        card = json.loads(zf.read("model_card.json"))
        recipe = yaml.safe_load(zf.read("recipe.yaml"))
    run_dir = Path(str(world.cat.settings.data_dir)).parent / "run"
    assert onnx_bytes == (run_dir / "model.onnx").read_bytes()
    assert card["training_data"]["dataset"] == "brain" and recipe["name"] == "brain-grade"
    # the CLI writes the same three files into a folder
    out = tmp_path / "dl"
    result = CliRunner().invoke(
        cli_app, ["lab", "models", "download", world.ref, "--out", str(out)], env=_env(world)
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model_card.json", "recipe.yaml"]
    assert (out / "model.onnx").read_bytes() == onnx_bytes


def _env(w: World) -> dict[str, str]:
    s = w.cat.settings
    return {
        "MEDARENA_DATA_DIR": str(s.data_dir),
        "MEDARENA_DATABASE_URL": str(s.database_url),
        "MEDARENA_SECRET_KEY": "k" * 48,
    }


def test_one_click_submission_from_the_web_form_and_the_cli(world: World) -> None:
    browser, csrf = world.browser("ada")
    # without the CSRF token the form is refused; with it, submitted and redirected
    refused = browser.post(
        f"/lab/models/{world.ref}/submit", data={"target": "brain-2025/grade/preliminary"}
    )
    assert refused.status_code == 403
    r = browser.post(
        f"/lab/models/{world.ref}/submit",
        data={"target": "brain-2025/grade/preliminary", "csrf_token": csrf},
    )
    assert r.status_code == 303 and r.headers["location"] == "/challenges/brain-2025/submissions"
    # a phase that takes no model: the same check as an upload, shown on a page
    bad = browser.post(
        f"/lab/models/{world.ref}/submit",
        data={"target": "brain-2025/seg/preliminary", "csrf_token": csrf},
    )
    assert bad.status_code == 400 and "does not fit a segmentation track" in bad.text
    # the CLI: the model's owner (ada) by default
    result = CliRunner().invoke(
        cli_app,
        [
            "lab",
            "models",
            "submit",
            world.ref,
            "--challenge",
            "brain-2025",
            "--track",
            "grade",
            "--phase",
            "preliminary",
        ],
        env=_env(world),
    )
    assert result.exit_code == 0, result.output
    assert "submitted as ada@example.org" in result.output
    subs = _submissions(world.cat)
    assert [(x.kind, x.track_slug, x.status) for x in subs] == [("model", "grade", "queued")] * 2
    assert Worker(world.cat.sessions, HANDLERS, settings=world.cat.settings).run_until_idle() == 2
    scored = _submissions(world.cat)
    assert [x.status for x in scored] == ["scored", "scored"], [x.error for x in scored]
    assert scored[0].scores == scored[1].scores and "abs_error" in scored[0].scores
    # the manifest derived from the recipe: zscore, patch size as the image-level size
    archive = world.cat.store.get_bytes(scored[0].archive_digest)
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        manifest = yaml.safe_load(zf.read("manifest.yaml"))
    assert manifest["inputs"]["normalisation"][0]["block"] == "zscore"
    assert manifest["inputs"]["size"] == [8, 8, 8]
    assert manifest["outputs"] == {"kind": "value", "names": ["grade"]}
    # the CLI names the submitting user; an unknown one is refused by name
    result = CliRunner().invoke(
        cli_app,
        [
            "lab",
            "models",
            "submit",
            world.ref,
            "--user",
            "nobody@example.org",
            "--challenge",
            "brain-2025",
            "--track",
            "grade",
            "--phase",
            "preliminary",
        ],
        env=_env(world),
    )
    assert result.exit_code != 0 and "no user with email 'nobody@example.org'" in result.output
    # --team: as the team's captain (bob captains bob-team), the same service and checks
    result = CliRunner().invoke(
        cli_app,
        [
            "lab",
            "models",
            "submit",
            world.ref,
            "--team",
            "bob-team",
            "--challenge",
            "brain-2025",
            "--track",
            "seg",
            "--phase",
            "preliminary",
        ],
        env=_env(world),
    )
    assert result.exit_code != 0
    assert "a regression model does not fit a segmentation track" in result.output


def _info(recipe: str, task: str) -> ModelInfo:
    return ModelInfo(
        name="m",
        version=1,
        task=task,
        dataset="d",
        split="s",
        dataset_version="0",
        metrics={},
        created_at="",
        weights_digest="",
        onnx_digest=None,
        onnx_size=None,
        export={},
        model_card={},
        curves=[],
        recipe_yaml=recipe,
    )


def _track(task: str, **cfg: object) -> Track:
    # only what manifest_for reads: the spec's metric checks are not the point here
    return Track.model_construct(slug="t", task=task, task_config=cfg, dataset="d")


SEG_RECIPE = """\
name: m
dataset: {name: d, split: s}
task: {type: segmentation, spatial_dims: 3, num_classes: 3}
preprocess:
  - {block: ct_window, params: {a_min: -200, a_max: 300}}
  - {block: rand_crop_by_label}
network: {block: unet}
loss: {block: dice_ce}
trainer: {patch_size: [16, 16, 8], sliding_window: {overlap: 0.5}}
"""


def test_manifests_derived_from_recipes_per_task_and_refusals() -> None:
    seg = yaml.safe_load(manifest_for(_info(SEG_RECIPE, "segmentation"), _track("segmentation")))
    assert seg["inputs"]["patch_size"] == [16, 16, 8] and seg["inputs"]["overlap"] == 0.5
    assert seg["inputs"]["normalisation"][0]["block"] == "ct_window"
    assert seg["outputs"] == {"kind": "argmax", "names": ["1", "2"]}
    i2i_recipe = (
        SEG_RECIPE.replace(
            "type: segmentation, spatial_dims: 3, num_classes: 3",
            "type: image_to_image, spatial_dims: 3",
        )
        .replace("  - {block: rand_crop_by_label}\n", "")
        .replace("dice_ce", "l1")
    )
    i2i = yaml.safe_load(
        manifest_for(_info(i2i_recipe, "image_to_image"), _track("image-to-image"))
    )
    # ct_window maps [-200, 300] to [0, 1]: the output is written back as 500 * y - 200
    assert i2i["outputs"] == {"kind": "image", "scale": 500.0, "offset": -200.0}
    zscored = i2i_recipe.replace(
        "{block: ct_window, params: {a_min: -200, a_max: 300}}", "{block: zscore}"
    )
    with pytest.raises(InputError, match="needs exactly one fixed intensity window"):
        manifest_for(_info(zscored, "image_to_image"), _track("image-to-image"))
    with pytest.raises(InputError, match="a segmentation model does not fit a regression track"):
        manifest_for(_info(SEG_RECIPE, "segmentation"), _track("regression"))
    resampled = SEG_RECIPE.replace(
        "preprocess:\n", "preprocess:\n  - {block: spacing, params: {pixdim: [1, 1, 1]}}\n"
    )
    with pytest.raises(InputError, match="its recipe resamples"):
        manifest_for(_info(resampled, "segmentation"), _track("segmentation"))
    binary = RECIPE.replace(
        "type: regression, spatial_dims: 3", "type: classification, spatial_dims: 3, num_classes: 2"
    ).replace("l1", "ce")
    with pytest.raises(InputError, match="a binary classification track takes one score"):
        manifest_for(_info(binary, "classification"), _track("classification", mode="binary"))
    multi = yaml.safe_load(
        manifest_for(
            _info(binary, "classification"),
            _track("classification", mode="multiclass", class_names=["a", "b"]),
        )
    )
    assert multi["outputs"] == {"kind": "scores", "activation": "softmax", "names": ["a", "b"]}
    assert multi["inputs"]["size"] == [8, 8, 8]
    det_recipe = (
        SEG_RECIPE.replace(
            "type: segmentation, spatial_dims: 3, num_classes: 3",
            "type: detection, spatial_dims: 3, "
            "detection: {threshold: 0.2, min_distance_mm: 4.0, max_candidates: 50}",
        )
        .replace("  - {block: rand_crop_by_label}\n", "")
        .replace("dice_ce", "l1")
    )
    det = yaml.safe_load(manifest_for(_info(det_recipe, "detection"), _track("detection")))
    assert det["outputs"] == {
        "kind": "heatmap",
        "activation": "sigmoid",
        "threshold": 0.2,
        "min_distance_mm": 4.0,
        "max_candidates": 50,
    }

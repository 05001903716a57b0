"""The recipe builder's API: registry as form data, datasets for training, recipe validation.

A real app over a real catalogue (SQLite + object store) holding a tiny 2D dataset whose
split hides a ``test`` subset; the hidden cases carry label values no other case has, so
a leak is found by searching the responses for them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from medarena.accounts.tokens import create_token
from medarena.accounts.users import create_user
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, case_records, make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.imaging.image import Image
from medarena.imaging.nifti import write_nifti
from medarena.lab.blocks import KINDS, REGISTRY, TASK_TYPES
from medarena.lab.builder import ImageInfo, image_info
from medarena.web.app import create_app

PASSWORD = "a long enough password 1"
N = 8
HIDDEN_GRADE = "grade-SECRET-"  # + index: the grade of each case, unique per case


def _write_dataset(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = []
    for i in range(N):
        img = np.random.default_rng(i).normal(0, 1, (8, 8)).astype(np.float32)
        mask = np.zeros((8, 8), np.uint8)
        mask[2:5, 2:5] = 1
        write_nifti(Image(img, (1.0, 1.0)), root / "images" / f"c{i}.nii.gz")
        write_nifti(Image(mask, (1.0, 1.0), kind="label"), root / "labels" / f"c{i}.nii.gz")
        rows.append({"case_id": f"c{i}", "grade": f"{HIDDEN_GRADE}{i}", "size": 10.5 + i})
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, Catalogue, dict[str, str]]]:
    """Client, catalogue and the bearer header of a plain (non-admin) user (read-only)."""
    tmp_path = tmp_path_factory.mktemp("builder")
    settings = get_settings(data_dir=tmp_path / "data")
    cat = open_catalogue(settings)
    _write_dataset(tmp_path / "src")
    assert ingest(cat, tmp_path / "src", "tiny").cases_added == N
    make_split(
        cat,
        "tiny",
        SplitSpec(name="challenge", ratios=(0.5, 0.25, 0.25), group_by=None, hidden=("test",)),
    )
    with cat.sessions() as s, s.begin():
        user = create_user(s, "pat@example.org", PASSWORD, display_name="Pat")
        _, token = create_token(s, user, "builder tests")
    with TestClient(create_app(settings, cat)) as client:
        yield client, cat, {"Authorization": f"Bearer {token}"}
    cat.close()


def _grades(cat: Catalogue, hidden: bool) -> set[str]:
    return {
        r["labels"]["grade"]
        for r in case_records(cat, "tiny")
        if (r["splits"]["challenge"] == "test") == hidden
    }


def test_every_route_needs_a_login(app: tuple[TestClient, Catalogue, dict[str, str]]) -> None:
    c, _, _ = app
    c.cookies.clear()
    assert c.get("/api/v1/lab/blocks").status_code == 401
    assert c.get("/api/v1/lab/datasets").status_code == 401
    r = c.post("/api/v1/lab/recipes/validate", json={"recipe": "name: x\n"})
    assert r.status_code == 401 and "authentication required" in r.json()["detail"]
    r = c.get("/lab/builder", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/lab/builder"


def test_blocks_api_is_the_whole_registry_with_typed_parameters(
    app: tuple[TestClient, Catalogue, dict[str, str]],
) -> None:
    c, _, auth = app
    r = c.get("/api/v1/lab/blocks", headers=auth)
    assert r.status_code == 200
    data = r.json()
    assert data["kinds"] == list(KINDS)
    assert data["task_types"] == list(TASK_TYPES)
    assert data["list_kinds"] == ["preprocess", "augment"]
    assert [b["name"] for b in data["blocks"]] == list(REGISTRY)
    for b in data["blocks"]:
        described = REGISTRY[b["name"]].describe()
        for key in ("kind", "summary", "tasks"):
            assert b[key] == described[key], (b["name"], key)
        assert [p["name"] for p in b["params"]] == [p["name"] for p in described["params"]]
        for mine, theirs in zip(b["params"], described["params"], strict=True):
            assert mine["default"] == theirs["default"], (b["name"], mine["name"])
            assert mine["required"] == theirs["required"]
            assert mine["description"] == theirs["description"]
    params = {(b["name"], p["name"]): p for b in data["blocks"] for p in b["params"]}
    max_k = params[("rotate90", "max_k")]
    assert (max_k["type"], max_k["minimum"], max_k["maximum"], max_k["default"]) == ("int", 1, 3, 3)
    axes = params[("rotate90", "spatial_axes")]
    assert axes["type"] == "list" and axes["items"] == {"type": "int"}
    assert axes["min_items"] == axes["max_items"] == 2
    flip = params[("flip", "spatial_axis")]
    assert flip["type"] == "list" and flip["nullable"] is True and flip["default"] is None
    assert params[("affine", "mode")]["choices"] == ["bilinear", "nearest"]
    assert params[("zscore", "nonzero")]["type"] == "bool"
    dropout = params[("unet", "dropout")]
    assert (dropout["type"], dropout["minimum"], dropout["exclusive_maximum"]) == ("float", 0, 1)
    assert params[("spacing", "pixdim")]["required"] is True
    assert params[("adam", "lr")]["exclusive_minimum"] == 0
    # recipe settings come from the recipe's models too
    trainer = {f["name"]: f for f in data["settings"]["trainer"]}
    assert trainer["patch_size"]["required"] and trainer["patch_size"]["type"] == "list"
    window = trainer["sliding_window"]
    assert window["type"] == "object" and window["nullable"] is True
    assert window["default"] == {"overlap": 0.25, "mode": "gaussian"}
    assert {f["name"] for f in window["fields"]} == {"overlap", "mode"}
    task = {f["name"]: f for f in data["settings"]["task"]}
    assert task["type"]["choices"] == list(TASK_TYPES)
    assert task["spatial_dims"]["choices"] == [2, 3]
    assert data["defaults"]["optimizer"] == {"block": "adam", "params": {}}


def test_datasets_api_lists_trainable_subsets_and_targets_never_hidden_ones(
    app: tuple[TestClient, Catalogue, dict[str, str]],
) -> None:
    c, cat, auth = app
    r = c.get("/api/v1/lab/datasets", headers=auth)
    assert r.status_code == 200
    (ds,) = r.json()
    assert (ds["name"], ds["n_cases"], ds["spatial_dims"]) == ("tiny", N, 2)
    assert (ds["allowed_spatial_dims"], ds["in_channels"]) == ([2], 1)
    (split,) = ds["splits"]
    assert split["name"] == "challenge"
    assert [s["name"] for s in split["subsets"]] == ["train", "validation"]
    assert split["hidden_subsets"] == ["test"]
    assert split["n_cases"] == sum(s["n_cases"] for s in split["subsets"]) < N
    assert split["label_maps"] == split["n_cases"]
    assert split["label_classes"] == 2  # label maps of 0 and 1: presets task.num_classes
    targets = {t["name"]: t for t in split["targets"]}
    assert targets["size"]["kind"] == "numeric"
    assert targets["grade"]["kind"] == "categorical"
    hidden, visible = _grades(cat, True), _grades(cat, False)
    assert hidden and set(targets["grade"]["values"]) == visible
    for secret in hidden:
        assert secret not in r.text


def _recipe(**changes: str) -> str:
    text = """\
name: tiny-seg
dataset:
  name: tiny
  split: challenge
  train: train
  validation: validation
task:
  type: segmentation
  spatial_dims: 2
network:
  block: unet
  params:
    channels: [4, 8]
    strides: [2]
loss:
  block: dice_ce
trainer:
  patch_size: [8, 8]
"""
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    return text


def _line_of(text: str, fragment: str) -> int:
    (line,) = [i + 1 for i, t in enumerate(text.splitlines()) if fragment in t]
    return line


def _validate(c: TestClient, auth: dict[str, str], text: str) -> dict[str, object]:
    r = c.post("/api/v1/lab/recipes/validate", json={"recipe": text}, headers=auth)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def test_validate_names_the_line_value_and_nearest_name(
    app: tuple[TestClient, Catalogue, dict[str, str]],
) -> None:
    c, _, auth = app
    good = _validate(c, auth, _recipe())
    assert good["ok"] is True and good["problems"] == []
    normalised = yaml.safe_load(str(good["recipe"]))
    assert normalised["network"]["params"]["num_res_units"] == 2  # defaults written out
    assert good["data"] == normalised  # the same, as data for the builder's forms
    assert normalised["optimizer"] == {
        "block": "adam",
        "params": {"lr": 0.001, "weight_decay": 0.0},
    }

    text = _recipe(**{"block: unet": "block: unett"})
    body = _validate(c, auth, text)
    assert body["ok"] is False and body["recipe"] is None and body["data"] is None
    (p,) = body["problems"]  # type: ignore[misc]
    assert p["line"] == _line_of(text, "block: unett")
    assert (p["field"], p["value"], p["suggestion"]) == ("network.block", "unett", "unet")
    assert "unknown network block" in p["message"]

    text = _recipe(**{"strides: [2]": "stides: [2]"})
    (p,) = _validate(c, auth, text)["problems"]  # type: ignore[misc]
    assert (p["line"], p["field"]) == (_line_of(text, "stides"), "network.params.stides")
    assert p["suggestion"] == "strides"

    text = _recipe(**{"    strides: [2]": "    strides: [2]\n    dropout: 1.5"})
    (p,) = _validate(c, auth, text)["problems"]  # type: ignore[misc]
    assert (p["line"], p["value"], p["suggestion"]) == (_line_of(text, "dropout"), 1.5, None)
    assert "less than 1" in p["message"]


def test_validate_checks_the_data_against_the_catalogue(
    app: tuple[TestClient, Catalogue, dict[str, str]],
) -> None:
    c, cat, auth = app
    text = _recipe(**{"train: train": "train: test"})
    (p,) = _validate(c, auth, text)["problems"]  # type: ignore[misc]
    assert (p["line"], p["field"], p["value"]) == (
        _line_of(text, "train: test"),
        "dataset.train",
        "test",
    )
    assert "hidden" in p["message"]

    text = _recipe(**{"name: tiny\n": "name: tiyn\n"})
    (p,) = _validate(c, auth, text)["problems"]  # type: ignore[misc]
    assert (p["field"], p["suggestion"]) == ("dataset.name", "tiny")

    text = _recipe(**{"split: challenge": "split: challenge2"})
    (p,) = _validate(c, auth, text)["problems"]  # type: ignore[misc]
    assert (p["field"], p["suggestion"]) == ("dataset.split", "challenge")

    text = _recipe(
        **{
            "validation: validation": "validation: validation\n  target: grad",
            "type: segmentation": "type: classification",
            "block: unet": "block: densenet",
            "    channels: [4, 8]\n    strides: [2]\n": "    init_features: 4\n",
            "block: dice_ce": "block: ce",
        }
    )
    body = _validate(c, auth, text)
    (p,) = body["problems"]  # type: ignore[misc]
    assert (p["line"], p["field"], p["value"]) == (
        _line_of(text, "target: grad"),
        "dataset.target",
        "grad",
    )
    assert p["suggestion"] == "grade"
    for secret in _grades(cat, hidden=True):
        assert secret not in str(body)

    # the task must fit the images: 2D, one channel
    text = _recipe(**{"spatial_dims: 2": "spatial_dims: 3\n  in_channels: 3"})
    text = text.replace("[8, 8]", "[8, 8, 8]")
    problems = _validate(c, auth, text)["problems"]
    assert [(p["field"], p["line"], p["value"]) for p in problems] == [  # type: ignore[attr-defined]
        ("task.spatial_dims", _line_of(text, "spatial_dims: 3"), 3),
        ("task.in_channels", _line_of(text, "in_channels: 3"), 3),
    ]
    assert "are 2D" in problems[0]["message"]  # type: ignore[index]
    assert "have 1 image channel" in problems[1]["message"]  # type: ignore[index]

    body = _validate(c, auth, "name: [unclosed\n")
    assert body["ok"] is False and "YAML syntax" in body["problems"][0]["message"]  # type: ignore[index]
    r = c.post("/api/v1/lab/recipes/validate", json={"recipe": "x" * 200_001}, headers=auth)
    assert r.status_code == 422


def test_builder_page_for_a_browser_session(
    app: tuple[TestClient, Catalogue, dict[str, str]],
) -> None:
    c, _, _ = app
    c.cookies.clear()
    r = c.post("/api/v1/auth/login", json={"email": "pat@example.org", "password": PASSWORD})
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf_token"]
    page = c.get("/lab/builder")
    assert page.status_code == 200
    assert 'src="/static/lab_builder.js"' in page.text and f'data-csrf="{csrf}"' in page.text
    assert c.get("/static/lab_builder.js").status_code == 200
    # a cookie session must send its CSRF token with the validation request
    r = c.post("/api/v1/lab/recipes/validate", json={"recipe": _recipe()})
    assert r.status_code == 403
    r = c.post(
        "/api/v1/lab/recipes/validate", json={"recipe": _recipe()}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200 and r.json()["ok"] is True
    c.cookies.clear()


def test_image_info_reads_dims_and_channels(
    app: tuple[TestClient, Catalogue, dict[str, str]], tmp_path: Path
) -> None:
    """One-slice volumes serve 2D and 3D tasks; channels add up over a case's image objects."""
    _, cat, _ = app

    def stored(image: Image) -> str:
        path = write_nifti(image, tmp_path / f"{len(list(tmp_path.iterdir()))}.nii.gz")
        return cat.store.put_file(path)

    one_slice = stored(Image(np.zeros((4, 4, 1), np.float32), (1.0, 1.0, 1.0)))
    rgb = stored(Image(np.zeros((4, 4, 3), np.float32), (1.0, 1.0)))
    t1, t2 = (stored(Image(np.full((3, 3, 2), v, np.float32), (1.0, 1.0, 2.0))) for v in (1, 2))
    assert image_info(cat, (one_slice,)) == ImageInfo((2, 3), 1)
    assert image_info(cat, (rgb,)) == ImageInfo((2,), 3)
    assert image_info(cat, (t1, t2)) == ImageInfo((3,), 2)
    not_nifti = cat.store.put_bytes(b"not an image")
    assert image_info(cat, (not_nifti,)) is None

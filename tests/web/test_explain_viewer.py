"""The viewer's explanation layer: heat map PNGs of model submissions on public cases.

A real challenge (split ``s1``: ``val`` public, ``test`` hidden) of tiny NIfTI volumes;
ada uploads ONNX models through the API (a segmentation model to the public and the hidden
phase, a regression model to the public phase) and a predictions archive; a real worker
scores them and computes the explanations. Bob is in another team; org organizes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import re
import sys
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import delete, select

from medarena.accounts.tokens import create_token
from medarena.challenges import explanations, scoring
from medarena.challenges.viewer import HEAT_CMAP
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue
from medarena.db.engine import create_engine_for
from medarena.db.models import Case, CaseObject, Dataset, Split, SplitAssignment
from medarena.db.platform_models import ChallengeRole, User
from medarena.jobs import Worker
from medarena.storage import open_store
from medarena.web.app import create_app

sys.path.insert(0, str(Path(__file__).parents[1] / "challenges"))
from platform_fixtures import Platform, make_platform, spec_dict

SHAPE = (6, 5, 4)
SPACING = (1.0, 1.0, 2.0)
K = 43  # axial slices of 6 x 5 voxels are scaled up to at least 256 px: 43 px a voxel
CASES = ["c1", "c2", "c3", "c4", "c5", "c6"]  # c1, c2 train; c3, c5 val; c4, c6 test (hidden)
SEG_MANIFEST = """\
inputs:
  channels: [MR]
  patch_size: [4, 4, 4]
outputs: {kind: argmax, names: ['1']}
"""
AGE_MANIFEST = """\
inputs:
  channels: [MR]
  size: [6, 5, 4]
outputs: {kind: value, names: [age]}
"""


def _image(i: int) -> np.ndarray:
    """Bright (100) where x >= 3, dark (0) elsewhere, plus the case's offset."""
    img = np.zeros(SHAPE, np.float32)
    img[3:] = 100.0
    return img + i


def _nifti(arr: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(arr, np.diag([*SPACING, 1.0])).to_bytes(), mtime=0)


def _add_dataset(p: Platform) -> None:
    with p.sessions() as s, s.begin():
        ds = Dataset(name="ds")
        s.add(ds)
        s.flush()
        split = Split(dataset_id=ds.id, name="s1", spec={}, hidden_subsets=["test"])
        s.add(split)
        s.flush()
        for i, key in enumerate(CASES):
            c = Case(
                dataset_id=ds.id,
                case_key=key,
                source_format="nifti",
                shape=list(SHAPE),
                spacing=list(SPACING),
                labels={"age": 40 + i},
            )
            s.add(c)
            s.flush()
            label = (_image(i) > 50).astype(np.uint8)
            for role, arr in (("image", _image(i)), ("label", label)):
                data = _nifti(arr)
                s.add(
                    CaseObject(
                        case_id=c.id,
                        role=role,
                        digest=p.store.put_bytes(data),
                        size=len(data),
                        media_type="application/x-nifti",
                        name=f"{key}.nii.gz",
                    )
                )
            subset = "train" if i < 2 else ("val" if i % 2 == 0 else "test")
            s.add(
                SplitAssignment(
                    split_id=split.id, case_id=c.id, subset=subset, hidden=subset == "test"
                )
            )


def _onnx(model: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.zeros(1, 1, *shape),),
            buf,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


class _Age(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4))


def _zip(members: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@dataclass
class World:
    client: TestClient
    ada: dict[str, str]
    bob: dict[str, str]
    org: dict[str, str]
    seg: int  # ada's segmentation model on the public subset
    hidden: int  # the same model on the hidden subset
    age: int  # ada's regression model on the public subset
    preds: int  # ada's predictions archive on the public subset


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path = tmp_path_factory.mktemp("explain-viewer")
    db_url = f"sqlite:///{tmp_path / 'test.db'}"
    spec = spec_dict(submission_kinds=["predictions", "model"], submissions_per_day=None)
    now = dt.datetime.now(dt.UTC)
    spec["phases"].append(
        {
            "slug": "blind",
            "title": "Blind test",
            "opens": (now - dt.timedelta(days=1)).isoformat(),
            "closes": (now + dt.timedelta(days=1)).isoformat(),
            "scored_subset": "test",
            "submission_kinds": ["model"],
        }
    )
    p = make_platform(db_url, tmp_path, spec, ["ada", "bob"])
    settings = get_settings(data_dir=tmp_path, database_url=db_url, secret_key="s" * 48)
    p.store = open_store(settings)
    _add_dataset(p)
    cat = Catalogue(settings, create_engine_for(db_url), p.sessions, p.store)
    headers: dict[str, dict[str, str]] = {}
    with p.sessions() as s, s.begin():
        org = User(email="org@example.org", display_name="org", password_hash="x")
        s.add(org)
        s.flush()
        s.add(ChallengeRole(challenge_id=p.challenge_id, user_id=org.id, role="organizer"))
        for name, uid in (("ada", p.users["ada"]), ("bob", p.users["bob"]), ("org", org.id)):
            user = s.get(User, uid)
            assert user is not None
            headers[name] = {"Authorization": f"Bearer {create_token(s, user, 't')[1]}"}
    client = TestClient(create_app(settings, cat))
    conv = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():  # p(label 1) = sigmoid((intensity - 50) / 10): bright voxels
        conv.weight.copy_(torch.tensor([0.0, 0.1]).reshape(2, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, -5.0]))
    seg = _zip({"model.onnx": _onnx(conv, (4, 4, 4)), "manifest.yaml": SEG_MANIFEST})
    age = _zip({"model.onnx": _onnx(_Age(), SHAPE), "manifest.yaml": AGE_MANIFEST})
    preds = _zip({f"{k}.nii.gz": _nifti((_image(0) > 50).astype(np.uint8)) for k in ("c3", "c5")})
    ids = {}
    for name, phase, track, data in (
        ("seg", "prelim", "seg", seg),
        ("hidden", "blind", "seg", seg),
        ("age", "prelim", "age", age),
        ("preds", "prelim", "seg", preds),
    ):
        r = client.post(
            f"/api/v1/challenges/demo/submissions?phase={phase}&track={track}&filename=p.zip",
            content=data,
            headers=headers["ada"],
        )
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    handlers = {**scoring.HANDLERS, **explanations.HANDLERS}
    assert Worker(p.sessions, handlers, settings=settings).run_until_idle() == 6
    yield World(client, headers["ada"], headers["bob"], headers["org"], **ids)
    client.close()
    cat.close()


def _png(r: object) -> np.ndarray:
    from httpx import Response

    assert isinstance(r, Response)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)))


def test_heat_map_of_a_public_case_follows_the_probability(world: World) -> None:
    from matplotlib import colormaps

    url = f"/submissions/{world.seg}/cases/c3/slice.png?axis=2&index=1&layer=explanation"
    heat = _png(world.client.get(url, headers=world.ada))
    assert heat.shape == (SHAPE[1] * K, SHAPE[0] * K, 4)
    h = heat.shape[0]
    # voxel x = 4 of c3 (intensity 102): p = sigmoid(5.2), nearly opaque, that colour;
    # x = 1 (intensity 2): p = sigmoid(-4.8) = 0.008, all but transparent
    bright = heat[h - 1 - (2 * K + K // 2), 4 * K + K // 2]
    dark = heat[h - 1 - (2 * K + K // 2), 1 * K + K // 2]
    p = round(255 / (1 + np.exp(-5.2))) / 255  # stored as one byte
    want = np.rint(np.asarray(colormaps[HEAT_CMAP](p)[:3]) * 255).astype(int)
    assert bright[3] == 255 and np.abs(bright[:3].astype(int) - want).max() <= 1
    assert dark[3] <= 3
    # the model's archive holds no label map: the prediction layer is the one the
    # explanation job stored (bright voxels are label 1: outlined orange)
    pred = _png(world.client.get(url.replace("explanation", "prediction"), headers=world.ada))
    assert pred[..., 3].any() and tuple(pred[pred[..., 3] > 0][0][:3]) == (230, 159, 0)
    # the explanation map of a structure index that does not exist: a clear 400
    r = world.client.get(url + "&map=3", headers=world.ada)
    assert r.status_code == 400 and "map must be between 0 and 0" in r.text


def test_case_page_has_the_layer_its_controls_and_legend(world: World) -> None:
    page = world.client.get(f"/submissions/{world.seg}/cases/c3", headers=world.ada).text
    assert 'id="layer-explanation"' in page and "layer=explanation&amp;map=0" in page
    assert '<label for="show-explanation">' in page and 'id="explanation-opacity"' in page
    assert '<label for="explanation-opacity">' in page
    assert "Probability map" in page and "linear-gradient(to right, rgb(" in page
    # the case list says which cases have one
    index = world.client.get(f"/submissions/{world.seg}/viewer", headers=world.ada).text
    assert 'id="explained"' in index and "stored for 2 of these cases" in index
    assert index.count("(explained)") == 2
    listing = world.client.get(f"/submissions/{world.preds}/viewer", headers=world.ada).text
    assert "(explained)" not in listing and 'id="explained"' not in listing
    # a predictions submission has no explanation: the page says so, the layer is absent
    other = world.client.get(f"/submissions/{world.preds}/cases/c3", headers=world.ada).text
    assert 'id="no-explanation"' in other and 'id="layer-explanation"' not in other
    r = world.client.get(
        f"/submissions/{world.preds}/cases/c3/slice.png?layer=explanation", headers=world.ada
    )
    assert r.status_code == 404 and "no explanation" in r.text


def test_regression_case_shows_image_and_occlusion_map_without_label_layers(
    world: World,
) -> None:
    c, sid = world.client, world.age
    viewer = c.get(f"/submissions/{sid}/viewer", headers=world.ada).text
    assert re.findall(rf'href="/submissions/{sid}/cases/([^"]+)"', viewer) == ["c3", "c5"]
    page = c.get(f"/submissions/{sid}/cases/c5", headers=world.ada).text
    assert "Occlusion sensitivity" in page and "not Grad-CAM" in page
    assert 'id="layer-prediction"' not in page and 'id="layer-reference"' not in page
    base = f"/submissions/{sid}/cases/c5/slice.png?axis=2&index=1"
    assert _png(c.get(f"{base}&layer=image", headers=world.ada)).ndim == 2
    heat = _png(c.get(f"{base}&layer=explanation", headers=world.ada))
    h = heat.shape[0]
    # the mean intensity drops most when the bright half is blurred: the heat is there
    assert heat[h // 2, 4 * K + K // 2, 3] > heat[h // 2, 1 * K + K // 2, 3]
    for layer in ("reference", "prediction"):  # a table task has no label maps to draw
        assert c.get(f"{base}&layer={layer}", headers=world.ada).status_code == 404


def test_hidden_cases_and_other_teams_get_404(world: World) -> None:
    c = world.client
    layer = "slice.png?axis=2&index=1&layer=explanation"
    public = f"/submissions/{world.seg}/cases/c3/{layer}"
    assert c.get(public, headers=world.bob).status_code == 404  # not bob's submission
    assert c.get(f"/submissions/{world.seg}/cases/c3", headers=world.bob).status_code == 404
    hidden = f"/submissions/{world.hidden}/cases/c4/{layer}"
    assert c.get(hidden, headers=world.ada).status_code == 404
    assert c.get(f"/submissions/{world.seg}/cases/c4/{layer}", headers=world.ada).status_code == 404
    # nothing was computed for the hidden subset: even the organizer finds no explanation
    r = c.get(hidden, headers=world.org)
    assert r.status_code == 404 and "no explanation" in r.text
    assert c.get(f"/submissions/{world.hidden}/cases/c4", headers=world.org).status_code == 200
    anon = c.get(public, follow_redirects=False)
    assert anon.status_code in (401, 303, 307) and not anon.content.startswith(b"\x89PNG")


def test_colour_photographs_render_in_colour(tmp_path: Path) -> None:
    """A 2-D RGB image (fundus), stored as ingest stores it: x, y, one slice, 3 channels."""
    from medarena.challenges.viewer import image_slice_png

    rgb = np.zeros((4, 3, 1, 3), np.uint8)
    rgb[..., 0] = 200  # red everywhere
    rgb[0, 0, 0] = (0, 0, 255)  # voxel x 0, y 0: blue (bottom left once upright)
    path = tmp_path / "photo.nii"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    img = np.asarray(Image.open(io.BytesIO(image_slice_png(path, 2, 0))))
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[:2] == (3 * 64, 4 * 64)
    assert tuple(img[-1, 0]) == (0, 0, 255) and tuple(img[0, -1]) == (200, 0, 0)


def test_reference_of_a_case_another_split_hides_is_not_drawn(world: World) -> None:
    """c3 is public in s1; once split s2 hides it (another challenge's test case), its
    reference layer is withheld from the team (its labels are s2's secret); admins keep it."""
    c = world.client
    url = f"/submissions/{world.preds}/cases/c3/slice.png?axis=2&index=1&layer=reference"
    assert c.get(url, headers=world.ada).status_code == 200
    cat: Catalogue = c.app.state.catalogue  # type: ignore[attr-defined]
    with cat.sessions() as s, s.begin():
        ds = s.scalars(select(Dataset).where(Dataset.name == "ds")).one()
        c3 = s.scalars(select(Case).where(Case.dataset_id == ds.id, Case.case_key == "c3")).one()
        s2 = Split(dataset_id=ds.id, name="s2", spec={}, hidden_subsets=["test"])
        s.add(s2)
        s.flush()
        s.add(SplitAssignment(split_id=s2.id, case_id=c3.id, subset="test", hidden=True))
        s2_id = s2.id
    try:
        r = c.get(url, headers=world.ada)
        assert r.status_code == 404 and "no reference" in r.text
        page = c.get(f"/submissions/{world.preds}/cases/c3", headers=world.ada).text
        assert "layer=reference" not in page
        # the image and the team's own prediction are still drawn
        assert c.get(url.replace("reference", "image"), headers=world.ada).status_code == 200
        assert c.get(url.replace("reference", "prediction"), headers=world.ada).status_code == 200
    finally:
        with cat.sessions() as s, s.begin():
            s.execute(delete(SplitAssignment).where(SplitAssignment.split_id == s2_id))
            s.execute(delete(Split).where(Split.id == s2_id))
    assert c.get(url, headers=world.ada).status_code == 200

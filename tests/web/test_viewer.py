"""Submission viewer: slice PNGs with overlays, metric distribution SVG, viewer pages.

A real segmentation submission (uploaded through the API, scored by a real worker) on a
dataset of tiny NIfTI volumes whose masks are known voxel by voxel, so pixel colours can
be checked against them. Runs on SQLite and on PostgreSQL (``db_url``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import re
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from medarena.accounts.tokens import create_token
from medarena.challenges.scoring import HANDLERS
from medarena.challenges.viewer import POINTS_ID, distributions_svg
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue
from medarena.db.engine import create_engine_for
from medarena.db.models import Case, CaseObject, Dataset, Split, SplitAssignment
from medarena.db.platform_models import AuditEvent, ChallengeRole, User
from medarena.jobs import Worker
from medarena.storage import open_store
from medarena.web.app import create_app

sys.path.insert(0, str(Path(__file__).parents[1] / "challenges"))
from platform_fixtures import Platform, make_platform, spec_dict

SHAPE = (6, 5, 4)  # x, y, z; spacing 1 x 1 x 2 mm
SPACING = (1.0, 1.0, 2.0)
K = 43  # axial slices (6 x 5 voxels of 1 mm) are scaled up to at least 256 px: 43 px a voxel
ORANGE = (230, 159, 0)  # label 1
SKY = (86, 180, 233)  # label 2
SVG = "{http://www.w3.org/2000/svg}"
MULTI = "c5"  # a two-channel case (like BraTS's four sequences)
CASES = ["c1", "c2", "c3", "c4", "c5", "c6"]  # c1, c2 train; c3, c5 val; c4, c6 test (hidden)


def _nifti(arr: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 file (how ingest stores volumes and how archives usually carry them)."""
    return gzip.compress(nib.Nifti1Image(arr, np.diag([*SPACING, 1.0])).to_bytes(), mtime=0)


def _reference(i: int) -> np.ndarray:
    """Label 1 at x 1..2, y 1..2 and label 2 at x 4, y 3 on slice z = 2."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:3, 1:3, 2] = 1
    lab[4, 3, 2] = 2
    return lab


def _prediction() -> np.ndarray:
    """Label 1 at x 2..4, y 1..3 on slice z = 2 (overlaps the reference at x 2, y 1..2)."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:5, 1:4, 2] = 1
    return lab


def _image(i: int) -> np.ndarray:
    """A ramp along x, so each column of voxels has its own grey level."""
    img = np.zeros(SHAPE, np.float32)
    img += np.arange(SHAPE[0], dtype=np.float32)[:, None, None] * 10.0 + i
    return img


def _add_image_dataset(p: Platform) -> None:
    """Dataset 'ds', split 's1' (test hidden), one image and one label map per case."""
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
            )
            s.add(c)
            s.flush()
            objects = [
                (f"{key}.nii.gz", "image", _image(i)),
                (f"{key}.nii.gz", "label", _reference(i)),
            ]
            if key == MULTI:  # two channels, stored as ingest names them; the second reversed
                objects[0] = (f"{key}_0000.nii.gz", "image", _image(i))
                objects.append((f"{key}_0001.nii.gz", "image", _image(i)[::-1].copy()))
            for name, role, arr in objects:
                data = _nifti(arr)
                s.add(
                    CaseObject(
                        case_id=c.id,
                        role=role,
                        digest=p.store.put_bytes(data),
                        size=len(data),
                        media_type="application/x-nifti",
                        name=name,
                    )
                )
            subset = "train" if i < 2 else ("val" if i % 2 == 0 else "test")
            s.add(
                SplitAssignment(
                    split_id=split.id, case_id=c.id, subset=subset, hidden=subset == "test"
                )
            )


def _zip(keys: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key in keys:
            zf.writestr(f"{key}.nii.gz", _nifti(_prediction()))
    return buf.getvalue()


@dataclass
class World:
    client: TestClient
    ada: dict[str, str]  # participant (team ada)
    bob: dict[str, str]  # participant of another team
    org: dict[str, str]  # organizer of the challenge, in no team
    public: int  # ada's submission scored on the public subset 'val'
    hidden: int  # ada's submission scored on the hidden subset 'test'
    p: Platform


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def module_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Like ``db_url``, once per module: the tests below only read (and add audit rows)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('viewer-db') / 'test.db'}"
        return
    import psycopg

    server: str = request.getfixturevalue("postgres_server")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    try:
        yield f"{server}{'&' if '?' in server else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'drop schema "{schema}" cascade')


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    db_url, tmp_path = module_db_url, tmp_path_factory.mktemp("viewer")
    spec = spec_dict()
    spec["tracks"][0].update(
        task_config={"labels": {"core": 1, "edge": 2}, "metrics": ["dice"]},
        metrics=["core/dice", "edge/dice"],
        primary_metric="core/dice",
    )
    now = dt.datetime.now(dt.UTC)
    spec["phases"].append(
        {
            "slug": "blind",
            "title": "Blind test",
            "opens": (now - dt.timedelta(days=1)).isoformat(),
            "closes": (now + dt.timedelta(days=1)).isoformat(),
            "scored_subset": "test",
        }
    )
    p = make_platform(db_url, tmp_path, spec, ["ada", "bob"])
    settings = get_settings(data_dir=tmp_path, database_url=db_url, secret_key="s" * 48)
    p.store = open_store(settings)
    _add_image_dataset(p)
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
    ids = {}
    for phase, keys in (("prelim", ["c3", "c5"]), ("blind", ["c4", "c6"])):
        r = client.post(
            f"/api/v1/challenges/demo/submissions?phase={phase}&track=seg&filename=p.zip",
            content=_zip(keys),
            headers=headers["ada"],
        )
        assert r.status_code == 201, r.text
        ids[phase] = r.json()["id"]
    Worker(p.sessions, HANDLERS, settings=settings).run_until_idle()
    yield World(
        client, headers["ada"], headers["bob"], headers["org"], ids["prelim"], ids["blind"], p
    )
    client.close()
    cat.close()


def _png(r: object) -> Image.Image:
    from httpx import Response

    assert isinstance(r, Response)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(r.content))


def _centre(x: int, y: int, height: int) -> tuple[int, int]:
    """Pixel (column, row) at the centre of voxel (x, y) of an axial slice (y points up)."""
    return x * K + K // 2, height - 1 - (y * K + K // 2)


def test_slice_layers_show_masks_in_their_colours(world: World) -> None:
    c, sid = world.client, world.public
    base = f"/submissions/{sid}/cases/c3/slice.png?axis=2&index=2"
    image = _png(c.get(f"{base}&layer=image", headers=world.ada))
    assert image.mode == "L" and image.size == (SHAPE[0] * K, SHAPE[1] * K)
    grey = np.asarray(image)
    h = grey.shape[0]
    # the ramp along x: each voxel column brighter than the one to its left
    row = [int(grey[_centre(x, 2, h)[1], _centre(x, 2, h)[0]]) for x in range(SHAPE[0])]
    assert row == sorted(row) and row[0] < row[-1], row

    ref = np.asarray(_png(c.get(f"{base}&layer=reference", headers=world.ada)))
    assert ref.shape == (h, SHAPE[0] * K, 4)
    lab = _reference(2)[:, :, 2]
    for x in range(SHAPE[0]):
        for y in range(SHAPE[1]):
            col, r = _centre(x, y, h)
            px = tuple(int(v) for v in ref[r, col])
            if lab[x, y] == 0:
                assert px[3] == 0, (x, y, px)  # background: transparent
            else:
                assert px[:3] == (ORANGE if lab[x, y] == 1 else SKY), (x, y, px)
                assert 0 < px[3] < 255  # filled, translucent
    pred = np.asarray(_png(c.get(f"{base}&layer=prediction", headers=world.ada)))
    assert pred.shape == ref.shape
    # outlined: the region's border pixels opaque orange, its inside and outside transparent
    left, top = 2 * K, h - 1 - (4 * K - 1)  # x 2..4, y 1..3: top edge is y = 3's top row
    assert tuple(pred[top, left + K]) == (*ORANGE, 255)
    assert tuple(pred[top + 10, left]) == (*ORANGE, 255)
    assert pred[_centre(3, 2, h)[1], _centre(3, 2, h)[0], 3] == 0
    assert pred[_centre(0, 0, h)[1], _centre(0, 0, h)[0], 3] == 0
    coloured = pred[..., 3] > 0
    assert 0 < coloured.sum() < 0.2 * coloured.size  # a thin line, not a filled region
    # a slice with no mask: overlays fully transparent
    empty = np.asarray(
        _png(c.get(base.replace("index=2", "index=0") + "&layer=reference", headers=world.ada))
    )
    assert not empty[..., 3].any()


def test_other_axes_and_sizes(world: World) -> None:
    base = f"/submissions/{world.public}/cases/c5/slice.png?layer=image"
    # axis 0: a y-z plane of 5 x 4 voxels, 1 x 2 mm -> z doubled, then scaled to >= 256 px
    img = _png(world.client.get(f"{base}&axis=0&index=1", headers=world.ada))
    assert img.size == (5 * 32, 4 * 2 * 32)
    img = _png(world.client.get(f"{base}&axis=1&index=4", headers=world.ada))
    assert img.size == (6 * 32, 4 * 2 * 32)


def test_multi_channel_case(world: World) -> None:
    c, sid = world.client, world.public
    base = f"/submissions/{sid}/cases/{MULTI}/slice.png?axis=2&index=2&layer=image"
    h = SHAPE[1] * K

    def ramp(channel: str) -> list[int]:
        grey = np.asarray(_png(c.get(base + channel, headers=world.ada)))
        return [int(grey[_centre(x, 2, h)[1], _centre(x, 2, h)[0]]) for x in range(SHAPE[0])]

    first, second = ramp(""), ramp("&channel=1")
    assert first == ramp("&channel=0") and first[0] < first[-1]
    assert second[0] > second[-1]  # the reversed channel
    r = c.get(base + "&channel=2", headers=world.ada)
    assert r.status_code == 400 and "channel must be between 0 and 1" in r.text
    page = c.get(f"/submissions/{sid}/cases/{MULTI}?channel=1", headers=world.ada).text
    assert '<label for="channel">' in page and "c5_0001.nii.gz" in page
    assert "layer=image&amp;channel=1" in page
    single = c.get(f"/submissions/{sid}/cases/c3", headers=world.ada).text
    assert 'id="channel"' not in single and "channel=" not in single
    bad = c.get(f"/submissions/{sid}/cases/{MULTI}?channel=5", headers=world.ada)
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("axis=2&index=4", 400, ["4", "between 0 and 3"]),
        ("axis=2&index=-1", 400, ["-1", "between 0 and 3"]),
        ("axis=0&index=6", 400, ["6", "between 0 and 5"]),
        ("axis=3&index=0", 400, ["axis must be 0, 1 or 2"]),
        ("axis=x&index=0", 422, ["axis"]),
        ("axis=2&index=1&layer=heatmap", 400, ["heatmap", "image, reference, prediction"]),
    ],
)
def test_slice_arguments_are_checked(
    world: World, query: str, status: int, words: list[str]
) -> None:
    r = world.client.get(
        f"/submissions/{world.public}/cases/c3/slice.png?{query}", headers=world.ada
    )
    assert r.status_code == status, r.text
    for w in words:
        assert w in r.text, (w, r.text)


def test_hidden_cases_refused_to_participants_allowed_to_organizers(world: World) -> None:
    c, sid = world.client, world.hidden
    for layer in ("image", "reference", "prediction"):
        url = f"/submissions/{sid}/cases/c4/slice.png?axis=2&index=2&layer={layer}"
        r = c.get(url, headers=world.ada)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
        assert c.get(url, headers=world.bob).status_code == 404  # not even the submission
    assert c.get(f"/submissions/{sid}/cases/c4", headers=world.ada).status_code == 404
    page = c.get(f"/submissions/{sid}/viewer", headers=world.ada)
    assert page.status_code == 200
    assert "hidden test set" in page.text and f"/submissions/{sid}/cases/" not in page.text
    assert "<svg" not in page.text
    assert c.get(f"/submissions/{sid}/distributions.svg", headers=world.ada).status_code == 404
    # a case of the public subset is no way into a hidden one, nor the reverse
    url = f"/submissions/{world.public}/cases/c4/slice.png?axis=2&index=2"
    assert c.get(url, headers=world.ada).status_code == 404
    # the organizer sees it all; reading the hidden reference is audited
    with world.p.sessions() as s:
        before = len(s.scalars(select(AuditEvent)).all())
    ref = _png(
        c.get(
            f"/submissions/{sid}/cases/c4/slice.png?axis=2&index=2&layer=reference",
            headers=world.org,
        )
    )
    assert np.asarray(ref)[..., 3].any()
    page = c.get(f"/submissions/{sid}/viewer", headers=world.org)
    assert page.status_code == 200 and f'href="/submissions/{sid}/cases/c4"' in page.text
    assert c.get(f"/submissions/{sid}/cases/c6", headers=world.org).status_code == 200
    with world.p.sessions() as s:
        events = s.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()[before:]
    assert any(
        e.action == "data.hidden_read" and e.detail.get("what") == "reference slice" for e in events
    ), [(e.action, e.detail) for e in events]


def _marks(svg: str) -> list[int]:
    """Number of per-case marks in each panel (the groups ``case-points-<i>``)."""
    root = ET.fromstring(svg)
    counts = []
    for g in root.iter(f"{SVG}g"):
        if g.get("id", "").startswith(POINTS_ID):
            marks = [e for e in g.iter() if e.tag in (f"{SVG}use", f"{SVG}path")]
            defined = [e for d in g.iter(f"{SVG}defs") for e in d.iter(f"{SVG}path")]
            counts.append(len(marks) - len(defined))
    return counts


def test_distributions_svg_has_one_mark_per_case_value(world: World) -> None:
    c = world.client
    res = c.get(f"/api/v1/submissions/{world.public}/result", headers=world.ada).json()
    # c3: reference core 4 voxels, prediction 9, overlap 2 -> Dice 4/13; edge not predicted
    assert not res["failed_cases"] and res["cases"]["c3"]["core/dice"] == pytest.approx(4 / 13)
    r = c.get(f"/submissions/{world.public}/distributions.svg", headers=world.ada)
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert _marks(r.text) == [2, 2]  # c3 and c5 on each of the two metrics

    cases = {f"k{i}": {"dice": i / 10, "hd95": float(i)} for i in range(7)}
    cases["k7"] = {"dice": 0.5, "hd95": float("nan")}
    cases["k8"] = {"dice": 0.4, "hd95": "nan"}  # how the detail dict carries non-finite values
    svg = distributions_svg(cases)
    assert _marks(svg) == [9, 7]  # dice on 9 cases, hd95 finite on 7
    assert "dice (n=9)" in svg and "hd95 (n=7 of 9 finite)" in svg
    assert svg == distributions_svg(cases)  # the same result draws the same picture


def test_viewer_pages_links_and_labelled_controls(world: World) -> None:
    c, sid = world.client, world.public
    page = c.get(f"/submissions/{sid}/viewer", headers=world.ada)
    assert page.status_code == 200
    assert f'href="/submissions/{sid}"' in page.text
    links = re.findall(rf'href="/submissions/{sid}/cases/([^"]+)"', page.text)
    assert links == ["c3", "c5"]  # the public subset's cases, nothing of the hidden one
    assert "core/dice 0.3077" in page.text  # 4/13, rounded for reading
    assert 'aria-labelledby="dist-caption"' in page.text
    inline = page.text[page.text.index("<svg") : page.text.index("</svg>") + 6]
    assert "<?xml" not in page.text and _marks(inline) == [2, 2]
    detail = c.get(f"/submissions/{sid}", headers=world.ada)
    assert f'href="/submissions/{sid}/viewer"' in detail.text

    case = c.get(f"/submissions/{sid}/cases/c3", headers=world.ada).text
    assert f'href="/submissions/{sid}/viewer"' in case
    # every control has a label the keyboard and screen readers reach
    main = case[case.index("<h1>") :]
    for control in re.findall(r"<(?:input|select)\b[^>]*>", main):
        if 'type="hidden"' in control:
            continue
        cid = re.search(r'id="([^"]+)"', control)
        assert cid, control
        assert f'for="{cid.group(1)}"' in case or re.search(
            rf"<label>\s*{re.escape(control)}", case
        ), control
    slider = re.search(r'<input id="slice"[^>]*>', case)
    assert (
        slider
        and 'type="range"' in slider.group(0)
        and 'min="0"' in slider.group(0)
        and 'max="3"' in slider.group(0)
    )
    assert 'value="2"' in slider.group(0)  # opens on the middle slice
    assert re.search(r"<button[^>]*>", case)
    for layer in ("image", "reference", "prediction"):
        assert f"index=2&amp;layer={layer}" in case
    # the form works without JavaScript: axis and slice from the query string
    other = c.get(f"/submissions/{sid}/cases/c3?axis=0&index=4", headers=world.ada).text
    assert 'max="5"' in other and "axis=0&amp;index=4&amp;layer=image" in other
    assert c.get(f"/submissions/{sid}/cases/c3?axis=5", headers=world.ada).status_code == 400
    bad = c.get(f"/submissions/{sid}/cases/c3?axis=2&index=9", headers=world.ada)
    assert bad.status_code == 400 and "between 0 and 3" in bad.text
    assert c.get(f"/submissions/{sid}/cases/c9", headers=world.ada).status_code == 404
    assert c.get(f"/submissions/{sid}/viewer", headers=world.bob).status_code == 404
    anon = c.get(f"/submissions/{sid}/viewer", follow_redirects=False)
    assert anon.status_code in (401, 303, 307) and "case-points" not in anon.text

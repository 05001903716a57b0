from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, make_split, open_catalogue
from medarena.datasets.ingest import IngestOptions, ingest
from medarena.datasets.splits import SplitSpec
from medarena.web.app import create_app
from medarena_testkit import make_ct_series


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Catalogue]]:
    settings = get_settings(data_dir=tmp_path / "data")
    cat = open_catalogue(settings)
    for p in range(4):
        make_ct_series(tmp_path / "in" / f"p{p}", patient_id=f"P{p}", n=2)
    labels = tmp_path / "labels.csv"
    ingest(cat, tmp_path / "in", "ct")
    from medarena.datasets.catalogue import case_records

    keys = [r["case_key"] for r in case_records(cat, "ct")]
    labels.write_text(
        "case_id,malignant\n" + "".join(f"{k},SECRET{i}\n" for i, k in enumerate(keys))
    )
    ingest(cat, tmp_path / "in", "ct", IngestOptions(labels_csv=labels))
    make_split(cat, "ct", SplitSpec(ratios=(0.5, 0.0, 0.5), hidden=("test",)))
    with TestClient(create_app(settings, cat)) as c:
        yield c, cat
    cat.close()


def test_pages_and_api(client: tuple[TestClient, Catalogue]) -> None:
    c, _ = client
    r = c.get("/")
    assert r.status_code == 200 and 'href="/datasets/ct"' in r.text
    r = c.get("/datasets/ct")
    assert r.status_code == 200 and "4 cases" in r.text and "hidden" in r.text
    cases = c.get("/api/v1/datasets/ct/cases").json()
    key = cases[0]["case_key"]
    r = c.get(f"/datasets/ct/cases/{key}")
    assert r.status_code == 200 and "preview.png" in r.text
    png = c.get(f"/datasets/ct/cases/{key}/preview.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert c.get("/datasets/nope").status_code == 404
    assert c.get("/openapi.json").json()["info"]["title"] == "medarena"


def test_hidden_split_labels_never_sent(client: tuple[TestClient, Catalogue]) -> None:
    c, _ = client
    cases = c.get("/api/v1/datasets/ct/cases").json()
    hidden = [x for x in cases if x["hidden"]]
    visible = [x for x in cases if not x["hidden"]]
    assert hidden and visible
    assert all(x["labels"] == {} for x in hidden)
    assert all(x["labels"]["malignant"].startswith("SECRET") for x in visible)
    hidden_values = {f"SECRET{i}" for i in range(4)} - {x["labels"]["malignant"] for x in visible}
    pages = [c.get("/datasets/ct").text, c.get("/api/v1/datasets/ct").text]
    pages += [c.get(f"/datasets/ct/cases/{x['case_key']}").text for x in cases]
    for text in pages:
        for secret in hidden_values:
            assert secret not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_sample_over_real_http(tmp_path: Path) -> None:
    """The README's main command: migrations, sample ingest, pages over loopback."""
    port = _free_port()
    env = {**os.environ, "MEDARENA_DATA_DIR": str(tmp_path / "data")}
    exe = Path(sys.executable).parent / "medarena"
    proc = subprocess.Popen(
        [str(exe), "serve", "--sample", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.3)
        page = httpx.get(f"http://127.0.0.1:{port}/datasets/sample").text
        assert "CT" in page and "MR" in page
        api = httpx.get(f"http://127.0.0.1:{port}/api/v1/datasets").json()
        assert api[0]["name"] == "sample" and api[0]["n_cases"] >= 5
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "quarantined" in out


def test_header_shows_the_logged_in_user(client: tuple[TestClient, Catalogue]) -> None:
    from medarena.accounts import create_user

    c, cat = client
    with cat.sessions() as s:
        create_user(s, "steward@example.org", "a long passphrase 123", display_name="Data Steward")
        s.commit()
    assert "Data Steward" not in c.get("/datasets").text
    r = c.post(
        "/api/v1/auth/login",
        json={"email": "steward@example.org", "password": "a long passphrase 123"},
    )
    assert r.status_code == 200, r.text
    assert "Data Steward" in c.get("/datasets").text

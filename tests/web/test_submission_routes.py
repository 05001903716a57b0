"""HTTP API of submissions and leaderboards: streamed upload, status, result, visibility."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sys
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient

from medarena.accounts.tokens import create_token
from medarena.challenges.scoring import HANDLERS
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue
from medarena.db.engine import create_engine_for
from medarena.db.platform_models import User
from medarena.jobs import Worker
from medarena.storage import open_store
from medarena.web.app import create_app

sys.path.insert(0, str(Path(__file__).parents[1] / "challenges"))
from platform_fixtures import add_table_dataset, make_platform, spec_dict


def _zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("age.csv", text)
    return buf.getvalue()


def test_upload_status_result_and_board(db_url: str, tmp_path: Path) -> None:
    p = make_platform(db_url, tmp_path, spec_dict(), ["ada", "bob"])
    add_table_dataset(p, {f"c{i}": 40.0 + i for i in range(1, 9)})
    settings = get_settings(data_dir=tmp_path, database_url=db_url, secret_key="s" * 48)
    p.store = open_store(settings)  # the store the worker opens from the settings
    cat = Catalogue(settings, create_engine_for(db_url), p.sessions, p.store)
    tokens = {}
    with p.sessions() as s, s.begin():
        for team in ("ada", "bob"):
            user = s.get(User, p.users[team])
            assert user is not None
            tokens[team] = create_token(s, user, "t")[1]
    client = TestClient(create_app(settings, cat))
    ada = {"Authorization": f"Bearer {tokens['ada']}"}
    bob = {"Authorization": f"Bearer {tokens['bob']}"}
    base = "/api/v1/challenges/demo/submissions?phase=prelim&track=age&filename=p.zip"
    bad = client.post(base, content=_zip("case_id,age\nc9,1\n"), headers=ada)
    assert bad.status_code == 400 and any("c9" in x for x in bad.json()["detail"]["problems"])
    for headers, value in ((ada, "44"), (bob, "60")):
        r = client.post(
            base,
            content=_zip(f"case_id,age\nc3,{value}\nc5,{value}\nc7,{value}\n"),
            headers=headers,
        )
        assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert client.get(f"/api/v1/submissions/{sid}", headers=ada).status_code == 404
    assert client.get(f"/api/v1/submissions/{sid}", headers=bob).json()["status"] == "queued"
    Worker(p.sessions, HANDLERS, settings=settings).run_until_idle()
    res = client.get(f"/api/v1/submissions/{sid}/result", headers=bob).json()
    # c3 43, c5 45, c7 47 against 60: errors 17, 15, 13 (public subset: per case shown)
    assert res["status"] == "scored" and res["scores"]["abs_error"] == 15.0
    assert res["cases"]["c3"]["abs_error"] == 17.0
    board = client.get("/api/v1/challenges/demo/leaderboards/prelim/age").json()
    assert [r["team"] for r in board["rows"]] == ["ada", "bob"]
    csv_text = client.get("/api/v1/challenges/demo/leaderboards/prelim/age?format=csv").text
    assert csv_text.splitlines()[1].split(",")[3] == "ada"
    # Every timestamp the API shows is the same UTC instant, with its offset, on each backend.
    listed = client.get("/api/v1/challenges/demo/submissions", headers=bob).json()
    bob_csv = list(csv.DictReader(io.StringIO(csv_text)))[1]
    stamps = [
        res["created_at"],
        listed[0]["created_at"],
        board["rows"][1]["submitted_at"],
        bob_csv["submitted_at"],
    ]
    parsed = {dt.datetime.fromisoformat(x) for x in stamps}
    assert len(parsed) == 1 and parsed.pop().utcoffset() == dt.timedelta(0), stamps
    page = client.get("/challenges/demo/leaderboard/prelim/age")
    assert page.status_code == 200 and "ada" in page.text
    cat.close()

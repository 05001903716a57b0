"""`medarena submit` against a real server: uvicorn on 127.0.0.1 with in-process workers.

The server is the app of ``medarena serve`` (create_app on a migrated database, the
platform's job handlers in background worker threads) run by uvicorn in a thread on a
free port; the CLI runs through Typer's CliRunner (and once as the installed
``medarena`` executable), so every request crosses a real socket.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from medarena.accounts.tokens import create_token, revoke_token
from medarena.cli.main import app
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue
from medarena.db.engine import create_engine_for
from medarena.db.platform_models import Job, Submission, User
from medarena.jobs.background import start_background_workers
from medarena.storage import open_store
from medarena.web.app import create_app

sys.path.insert(0, str(Path(__file__).parents[1] / "challenges"))
from platform_fixtures import Platform, add_table_dataset, make_platform, spec_dict

BIN = Path(sys.executable).parent
runner = CliRunner()
# ages of the cases; c3, c5, c7 are the public validation subset 'val' of phase 'prelim'
AGES = {f"c{i}": 40.0 + i for i in range(1, 9)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    p: Platform
    tokens: dict[str, str]  # name -> plain API token (ada: live; bob: revoked)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("submit-cli")
    url_db = f"sqlite:///{tmp / 'medarena.db'}"
    spec = spec_dict()
    # a phase with a tiny upload limit (0.01 MB): the refusal must reach the CLI intact
    spec["phases"].append({**spec["phases"][0], "slug": "tiny", "max_upload_mb": 0.01})
    p = make_platform(url_db, tmp, spec, ["ada", "bob"])
    add_table_dataset(p, AGES)
    settings = get_settings(data_dir=tmp, database_url=url_db, secret_key="s" * 48)
    p.store = open_store(settings)
    cat = Catalogue(settings, create_engine_for(url_db), p.sessions, p.store)
    tokens = {}
    with p.sessions() as s, s.begin():
        for name in ("ada", "bob"):
            user = s.get(User, p.users[name])
            assert user is not None
            row, tokens[name] = create_token(s, user, "cli")
            if name == "bob":
                revoke_token(s, user.id, row.id)
    stop_workers = start_background_workers(settings, 1, poll_seconds=0.1)
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings, cat), host="127.0.0.1", port=port, log_level="warning"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", p, tokens)
    finally:
        srv.should_exit = True
        thread.join(10)
        stop_workers()
        cat.close()


def _archive(path: Path, rows: str) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("age.csv", "case_id,age\n" + rows)
    path.write_bytes(buf.getvalue())
    return path


def _env(server: Server, token: str | None) -> dict[str, str | None]:
    return {"MEDARENA_URL": server.url, "MEDARENA_TOKEN": token}


def _submit(
    server: Server, token: str | None, archive: Path, *extra: str, slug: str = "demo"
) -> Result:
    args = ["submit", "--challenge", slug, "--track", "age", "--phase", "prelim", str(archive)]
    return runner.invoke(app, [*args, *extra], env=_env(server, token))


def _count(server: Server) -> int:
    with server.p.sessions() as s:
        return len(s.scalars(select(Submission)).all())


def test_good_archive_is_accepted_and_scored_with_wait(server: Server, tmp_path: Path) -> None:
    archive = _archive(tmp_path / "good.zip", "c3,50\nc5,50\nc7,50\n")
    res = _submit(server, server.tokens["ada"], archive, "--wait", "--poll", "0.1")
    assert res.exit_code == 0, res.output
    out = res.stdout
    sid = int(out.split("submission ", 1)[1].split()[0])
    assert f"{server.url}/submissions/{sid}" in out
    # |43-50|, |45-50|, |47-50| -> mean absolute error 5
    lines = out.splitlines()
    assert lines[0] == f"submission {sid} queued: {server.url}/submissions/{sid}"
    assert lines.count("queued") == 0 and "scored" in lines, out  # each status once
    assert "abs_error 5.0 (primary)" in lines, out
    with server.p.sessions() as s:
        sub = s.get(Submission, sid)
        assert sub is not None and sub.status == "scored" and sub.primary_score == 5.0


def test_without_wait_prints_the_id_and_returns(server: Server, tmp_path: Path) -> None:
    archive = _archive(tmp_path / "good.zip", "c3,41\nc5,41\nc7,41\n")
    res = _submit(server, server.tokens["ada"], archive)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("submission ") and "queued" in res.stdout
    assert "abs_error" not in res.stdout


def test_broken_archive_is_refused_with_its_problems(server: Server, tmp_path: Path) -> None:
    before = _count(server)
    archive = _archive(tmp_path / "broken.zip", "c3,50\nc9,50\nc3,51\n")
    res = _submit(server, server.tokens["ada"], archive, "--wait")
    assert res.exit_code == 2, res.output
    err = " ".join(res.stderr.split())  # rich wraps long lines
    assert "broken.zip: refused" in err and "c9" in err and "c3" in err, err
    assert "\n  - " in res.stderr  # one problem a line
    not_zip = tmp_path / "notes.zip"
    not_zip.write_bytes(b"these are not predictions")
    res = _submit(server, server.tokens["ada"], not_zip)
    assert res.exit_code == 2 and "notes.zip" in res.stderr, res.output
    assert _count(server) == before  # nothing stored


def test_token_and_slug_errors_are_clear(server: Server, tmp_path: Path) -> None:
    archive = _archive(tmp_path / "good.zip", "c3,50\nc5,50\nc7,50\n")
    before = _count(server)
    res = _submit(server, None, archive)
    assert res.exit_code == 2 and "MEDARENA_TOKEN" in res.stderr, res.output
    res = runner.invoke(
        app,
        ["submit", "--challenge", "demo", "--track", "age", "--phase", "prelim", str(archive)],
        env={"MEDARENA_URL": None, "MEDARENA_TOKEN": server.tokens["ada"]},
    )
    assert res.exit_code == 2 and "MEDARENA_URL" in res.stderr, res.output
    res = _submit(server, server.tokens["bob"], archive)
    err = " ".join(res.stderr.split())
    assert res.exit_code == 2 and "401" in err and "revoked" in err, res.output
    res = _submit(server, "not-a-token", archive)
    assert res.exit_code == 2 and "401" in res.stderr, res.output
    res = _submit(server, server.tokens["ada"], archive, slug="no-such-challenge")
    err = " ".join(res.stderr.split())
    assert res.exit_code == 2 and "no-such-challenge" in err and "404" in err, res.output
    res = runner.invoke(
        app,
        ["submit", "--challenge", "demo", "--track", "nope", "--phase", "prelim", str(archive)],
        env=_env(server, server.tokens["ada"]),
    )
    assert res.exit_code == 2 and "nope" in res.stderr, res.output
    # a server that is not there
    res = runner.invoke(
        app,
        ["submit", "--challenge", "demo", "--track", "age", "--phase", "prelim", str(archive)],
        env={"MEDARENA_URL": f"http://127.0.0.1:{_free_port()}", "MEDARENA_TOKEN": "x"},
    )
    assert res.exit_code == 2 and "cannot reach" in res.stderr, res.output
    assert _count(server) == before


@pytest.mark.slow  # a fresh interpreter importing the CLI: several seconds on a busy machine
def test_installed_executable(server: Server, tmp_path: Path) -> None:
    """The `medarena` console script, as a user runs it, in its own process."""
    archive = _archive(tmp_path / "good.zip", "c3,43\nc5,45\nc7,47\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDARENA_")}
    env.update(MEDARENA_URL=server.url, MEDARENA_TOKEN=server.tokens["ada"], COLUMNS="200")
    args = ["--challenge", "demo", "--track", "age", "--phase", "prelim", "--wait"]
    proc = subprocess.run(
        [str(BIN / "medarena"), "submit", *args, "--poll", "0.1", str(archive)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scored" in proc.stdout and "abs_error 0.0" in proc.stdout, proc.stdout


def test_upload_over_the_phase_limit_is_refused_clearly(server: Server, tmp_path: Path) -> None:
    before = _count(server)
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("age.csv", "case_id,age\n" + "c3,50\n" * 20_000)  # about 120 kB
    res = runner.invoke(
        app,
        ["submit", "--challenge", "demo", "--track", "age", "--phase", "tiny", str(archive)],
        env=_env(server, server.tokens["ada"]),
    )
    err = " ".join(res.stderr.split())
    assert res.exit_code == 2 and "413" in err and "larger than this phase's limit" in err, err
    assert _count(server) == before


def test_wait_prints_progress_once_per_change(server: Server, tmp_path: Path) -> None:
    """--wait's status lines against the live server while a submission runs and finishes."""
    import httpx
    from sqlalchemy import update

    from medarena.cli.common import console
    from medarena.cli.submit import _follow

    archive = _archive(tmp_path / "good.zip", "c3,50\nc5,50\nc7,50\n")
    res = _submit(server, server.tokens["ada"], archive, "--wait", "--poll", "0.1")
    sid = int(res.stdout.split()[1])

    def set_row(status: str, progress: float) -> None:
        # as a worker shows a job under way: status on the submission, progress on its job
        with server.p.sessions() as s, s.begin():
            s.execute(update(Submission).where(Submission.id == sid).values(status=status))
            key = Job.dedupe_key.like(f"submission:{sid}:spec:%")
            s.execute(update(Job).where(key).values(progress=progress))

    set_row("running", 0.4)

    def finish() -> None:
        time.sleep(0.6)
        set_row("running", 0.8)
        time.sleep(0.6)
        set_row("scored", 1.0)

    t = threading.Thread(target=finish)
    t.start()
    auth = {"Authorization": f"Bearer {server.tokens['ada']}"}
    with httpx.Client(base_url=server.url, headers=auth) as c, console.capture() as captured:
        st = _follow(c, sid, "queued", 0.1, 10.0)
    t.join()
    assert st["status"] == "scored"
    assert captured.get().splitlines() == ["running 40%", "running 80%", "scored"]

"""Training runs as jobs: launched through the real API, trained by a real Worker.

The catalogue (SQLite + object store) holds ``disks2d`` (8 cases of 32x32) with two splits:
``default`` (train/validation) and ``challenge`` (train/validation + a hidden ``test``).
Runs train on the ``challenge`` split's public subsets; ``default`` contains the hidden
test cases, so it is refused, as is a recipe validating on ``test``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from labdata import write_dataset
from sqlalchemy import func, select

from medarena.accounts.tokens import create_token
from medarena.config import Settings, get_settings
from medarena.datasets.catalogue import Catalogue, make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.db.lab_models import LabRun
from medarena.db.platform_models import Job, User
from medarena.jobs import Worker
from medarena.jobs.registry import PLATFORM_HANDLER_SOURCES, load_handlers
from medarena.lab.registry import get_model
from medarena.lab.runs import HANDLERS, read_points
from medarena.web.app import create_app

RECIPE = """\
name: NAME
dataset: {name: disks2d, split: challenge}
task: {type: segmentation, spatial_dims: 2, num_classes: 2}
preprocess:
  - block: zscore
  - block: rand_crop_by_label
network:
  block: unet
  params: {channels: [4, 8], strides: [2], num_res_units: 0}
loss: {block: dice_ce}
optimizer: {block: adam, params: {lr: 0.01}}
trainer: {epochs: EPOCHS, batch_size: 2, patch_size: [16, 16], seed: 3, val_every: VAL}
export: {onnx: ONNX}
"""


def recipe(name: str, epochs: int = 2, val_every: int = 1, onnx: bool = True) -> str:
    return (
        RECIPE.replace("NAME", name)
        .replace("EPOCHS", str(epochs))
        .replace("VAL", str(val_every))
        .replace("ONNX", "true" if onnx else "false")
    )


@dataclass
class World:
    settings: Settings
    cat: Catalogue
    client: TestClient
    headers: dict[str, dict[str, str]]

    def worker(self, **kw: float) -> Worker:
        return Worker(self.cat.sessions, HANDLERS, settings=self.settings, **kw)

    def launch(self, who: str, text: str) -> int:
        r = self.client.post("/api/v1/lab/runs", json={"recipe": text}, headers=self.headers[who])
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def run(self, who: str, run_id: int) -> dict:  # type: ignore[type-arg]
        r = self.client.get(f"/api/v1/lab/runs/{run_id}", headers=self.headers[who])
        assert r.status_code == 200, r.text
        return dict(r.json())


def make_world(base: Path, database_url: str | None = None) -> World:
    """The catalogue (``disks2d`` with splits default and challenge), users and a client."""
    settings = get_settings(data_dir=base / "data", database_url=database_url, secret_key="s" * 48)
    cat = open_catalogue(settings)
    write_dataset(base / "src", 2, 32)
    assert ingest(cat, base / "src", "disks2d").cases_added == 8
    make_split(
        cat,
        "disks2d",
        SplitSpec(subsets=("train", "validation"), ratios=(0.75, 0.25), group_by=None),
    )
    make_split(
        cat,
        "disks2d",
        SplitSpec(
            name="challenge",
            subsets=("train", "validation", "test"),
            ratios=(0.5, 0.25, 0.25),
            group_by=None,
            hidden=("test",),
        ),
    )
    headers = {}
    with cat.sessions() as s, s.begin():
        for name in ("ada", "bob", "root"):
            user = User(
                email=f"{name}@example.org",
                display_name=name,
                password_hash="-",
                is_admin=name == "root",
            )
            s.add(user)
            s.flush()
            headers[name] = {"Authorization": f"Bearer {create_token(s, user, 't')[1]}"}
    return World(settings, cat, TestClient(create_app(settings, cat)), headers)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp("labruns"))
    yield w
    w.cat.close()


def _count(cat: Catalogue) -> tuple[int, int]:
    with cat.sessions() as s:
        return (
            int(s.scalar(select(func.count()).select_from(LabRun)) or 0),
            int(s.scalar(select(func.count()).select_from(Job)) or 0),
        )


def test_launch_train_follow_and_register(world: World) -> None:
    assert "lab.train" in load_handlers(PLATFORM_HANDLER_SOURCES)  # `medarena worker` runs it
    run_id = world.launch("ada", recipe("runs-seg"))
    first = world.run("ada", run_id)
    assert first["status"] == "queued" and first["url"] == f"/lab/runs/{run_id}"
    # other users do not see it (404, as for no run); admins do
    bob = world.client.get(f"/api/v1/lab/runs/{run_id}", headers=world.headers["bob"])
    assert bob.status_code == 404
    assert world.run("root", run_id)["name"] == "runs-seg"
    assert world.client.get("/api/v1/lab/runs", headers=world.headers["bob"]).json() == []
    cancel = world.client.post(f"/api/v1/lab/runs/{run_id}/cancel", headers=world.headers["bob"])
    assert cancel.status_code == 404

    assert world.worker().run_until_idle() == 1
    done = world.run("ada", run_id)
    assert done["status"] == "succeeded", done["error"]
    # 4 train cases, batch 2: 2 steps per epoch, 2 epochs; dice validated after each epoch
    assert [s for s, _ in done["points"]["loss"]] == [1, 2, 3, 4]
    assert [e for e, _ in done["points"]["metric"]] == [1, 2]
    assert done["progress"]["fraction"] == 1.0 and done["progress"]["metric_name"] == "dice"
    model = get_model(world.cat, done["model"])
    assert model.name == "runs-seg" and model.onnx_digest is not None
    assert done["model_url"] == f"/lab/models/{done['model']}"
    listed = world.client.get("/api/v1/lab/runs", headers=world.headers["ada"]).json()
    assert [r["id"] for r in listed] == [run_id] and "points" not in listed[0]
    # the run page and the lab index show it
    page = world.client.get(f"/lab/runs/{run_id}", headers=world.headers["ada"])
    assert page.status_code == 200 and 'data-status="succeeded"' in page.text
    index = world.client.get("/lab", headers=world.headers["ada"])
    assert f'href="/lab/runs/{run_id}"' in index.text and "/lab/builder" in index.text
    assert world.client.get(f"/lab/runs/{run_id}", headers=world.headers["bob"]).status_code == 404
    # a finished run cannot be cancelled
    again = world.client.post(f"/api/v1/lab/runs/{run_id}/cancel", headers=world.headers["ada"])
    assert again.status_code == 409 and "succeeded" in again.json()["detail"]


def test_recipe_problems_and_hidden_data_are_refused(world: World) -> None:
    before = _count(world.cat)

    def problems(text: str) -> list[dict]:  # type: ignore[type-arg]
        r = world.client.post(
            "/api/v1/lab/runs", json={"recipe": text}, headers=world.headers["ada"]
        )
        assert r.status_code == 422, r.text
        return list(r.json()["problems"])

    typo = recipe("typo").replace("block: unet", "block: unett")
    (p,) = problems(typo)
    assert (
        p["line"] == 8 and p["field"] == "network.block" and "did you mean 'unet'" in p["message"]
    )
    (p,) = problems(recipe("x").replace("split: challenge}", "split: challenge, validation: test}"))
    assert p["field"] == "dataset.validation" and "hidden" in p["message"] and p["line"] == 2
    # split 'default' holds the cases that 'challenge' hides
    (p,) = problems(recipe("x").replace("split: challenge", "split: default"))
    assert "hidden by another split" in p["message"] and p["field"] == "dataset.split"
    (p,) = problems(recipe("x").replace("disks2d", "nosuch"))
    assert "no dataset 'nosuch'" in p["message"] and "disks2d" in p["message"]
    assert _count(world.cat) == before  # nothing stored
    # the form shows the problems inline, with their line
    csrf_free = world.client.post(
        "/lab/runs", data={"recipe": typo, "action": "launch"}, headers=world.headers["ada"]
    )
    assert csrf_free.status_code == 422 and "line 8, field network.block" in csrf_free.text
    ok = world.client.post(
        "/lab/runs",
        data={"recipe": recipe("ok"), "action": "validate"},
        headers=world.headers["ada"],
    )
    assert ok.status_code == 200 and "The recipe is valid" in ok.text
    assert _count(world.cat) == before
    anonymous = world.client.post("/api/v1/lab/runs", json={"recipe": recipe("a")})
    assert anonymous.status_code == 401


def test_data_error_at_training_fails_the_run_once_with_the_reason(world: World) -> None:
    # valid recipe, but the cases carry no label 'nosuch': found when the job reads them
    text = (
        recipe("runs-nolabel", onnx=False)
        .replace("split: challenge}", "split: challenge, target: nosuch}")
        .replace(
            "type: segmentation, spatial_dims: 2, num_classes: 2",
            "type: regression, spatial_dims: 2",
        )
        .replace("  - block: rand_crop_by_label\n", "")
        .replace(
            "block: unet\n  params: {channels: [4, 8], strides: [2], num_res_units: 0}",
            "block: densenet\n  params: {init_features: 4, growth_rate: 4, block_config: [1, 1]}",
        )
        .replace("{block: dice_ce}", "{block: l1}")
        .replace("patch_size: [16, 16]", "patch_size: [32, 32]")
    )
    run_id = world.launch("ada", text)
    assert world.worker().run_until_idle() == 1
    run = world.run("ada", run_id)
    assert run["status"] == "failed" and "no label 'nosuch'" in run["error"], run
    with world.cat.sessions() as s:
        row = s.get(LabRun, run_id)
        assert row is not None and row.job_id is not None
        job = s.get(Job, row.job_id)
        assert job is not None and job.state == "failed" and job.attempts == 1  # not retried


def test_cancel_queued_and_running(world: World) -> None:
    queued = world.launch("ada", recipe("runs-cancel-q"))
    r = world.client.post(f"/api/v1/lab/runs/{queued}/cancel", headers=world.headers["ada"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert world.worker().run_until_idle() == 1  # the job finds the run cancelled
    assert world.run("ada", queued)["points"]["loss"] == []
    # the run page's Cancel button (a form) on another queued run
    other = world.launch("ada", recipe("runs-cancel-form"))
    form = world.client.post(
        f"/lab/runs/{other}/cancel", headers=world.headers["ada"], follow_redirects=False
    )
    assert form.status_code == 303 and form.headers["location"] == f"/lab/runs/{other}"
    assert world.run("ada", other)["status"] == "cancelled"
    assert world.worker().run_until_idle() == 1

    running = world.launch("ada", recipe("runs-cancel-r", epochs=200, val_every=100, onnx=False))
    worker = world.worker()
    t = threading.Thread(target=worker.run_until_idle)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while world.run("ada", running)["progress"]["step"] == 0:
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.2)
        cancel = world.client.post(
            f"/api/v1/lab/runs/{running}/cancel", headers=world.headers["ada"]
        )
        assert cancel.status_code == 200 and cancel.json()["cancel_requested"] is True
    finally:
        t.join(60)
    assert not t.is_alive()
    run = world.run("ada", running)
    assert run["status"] == "cancelled" and run["model"] is None
    assert 0 < len(run["points"]["loss"]) < 400  # stopped long before its 400 steps


def test_a_worker_whose_job_was_taken_over_stops_and_writes_nothing(world: World) -> None:
    run_id = world.launch("ada", recipe("runs-lost", epochs=200, val_every=100, onnx=False))
    worker = world.worker()
    t = threading.Thread(target=worker.run_until_idle)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while world.run("ada", run_id)["progress"]["step"] == 0:
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        # another worker claims the job (as after an expired lease): a new fencing token
        with world.cat.sessions() as s, s.begin():
            row = s.get(LabRun, run_id)
            assert row is not None
            job = s.get(Job, row.job_id)
            assert job is not None
            job.attempts += 1
            job.worker_id = "the-other-worker"
    finally:
        t.join(60)
    assert not t.is_alive()
    with world.cat.sessions() as s:
        row = s.get(LabRun, run_id)
        assert row is not None
        stopped_at = (row.epoch, row.step, row.updated_at)
        job = s.get(Job, row.job_id)
        assert job is not None and job.state == "running" and job.worker_id == "the-other-worker"
    run = world.run("ada", run_id)
    assert run["status"] == "running" and run["progress"]["epoch"] < 200
    time.sleep(1.2)
    with world.cat.sessions() as s:
        row = s.get(LabRun, run_id)
        assert row is not None and (row.epoch, row.step, row.updated_at) == stopped_at
    # leave nothing for later workers to train: the next claim finds the run cancelled
    world.client.post(f"/api/v1/lab/runs/{run_id}/cancel", headers=world.headers["ada"])


def _worker_process(settings: Settings) -> None:
    from medarena.db.engine import create_engine_for, session_factory

    engine = create_engine_for(settings.resolved_database_url)
    Worker(session_factory(engine), HANDLERS, settings=settings, lease_seconds=2).run_until_idle()


def test_killed_worker_resumes_from_checkpoint(world: World) -> None:
    run_id = world.launch("ada", recipe("runs-kill", epochs=6, val_every=3, onnx=False))
    with world.cat.sessions() as s:
        run = s.get(LabRun, run_id)
        assert run is not None
        out_dir, job_id = Path(run.out_dir), run.job_id
    # a worker process (forked: torch is already imported) with a 2 s lease, SIGKILLed
    # once it wrote the first checkpoint
    proc = multiprocessing.get_context("fork").Process(
        target=_worker_process, args=(world.settings,), daemon=True
    )
    proc.start()
    try:
        deadline = time.monotonic() + 90
        while not (out_dir / "checkpoints" / "last.pt").exists():
            assert proc.is_alive(), f"the worker exited early ({proc.exitcode})"
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.02)
    finally:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    killed_at = world.run("ada", run_id)
    assert killed_at["status"] == "running" and killed_at["progress"]["epoch"] < 6
    time.sleep(2.5)  # the dead worker's lease expires
    assert world.worker().run_until_idle() == 1
    done = world.run("ada", run_id)
    assert done["status"] == "succeeded", done["error"]
    with world.cat.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.attempts == 2 and job.state == "done"
        assert job.result["resumed_from_epoch"] >= 1
    # every step once, in order, although the epoch in progress at the kill ran twice
    steps = [s for s, _ in read_points(out_dir)["loss"]]
    assert steps == list(range(1, 13))
    assert [e for e, _ in done["points"]["metric"]] == [3, 6]


def test_cli_submit_wait_list_show_cancel(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from medarena.cli.main import app

    monkeypatch.setenv("MEDARENA_DATA_DIR", str(world.settings.data_dir))
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe("cli-bad").replace("block: unet", "block: unett"))
    res = runner.invoke(app, ["lab", "runs", "submit", str(bad), "--user", "ada@example.org"])
    assert res.exit_code == 2 and "line 8, field network.block" in res.output, res.output
    good = tmp_path / "good.yaml"
    good.write_text(recipe("cli-run", epochs=1, onnx=False))
    worker = world.worker(poll_seconds=0.1)
    t = threading.Thread(target=worker.run)
    t.start()
    try:
        res = runner.invoke(
            app,
            [
                "lab",
                "runs",
                "submit",
                str(good),
                "--user",
                "ADA@example.org",
                "--wait",
                "--timeout",
                "120",
            ],
        )
    finally:
        worker.stop()
        t.join(60)
    assert res.exit_code == 0, res.output
    assert "queued" in res.output and "succeeded: model cli-run:1" in res.output
    listed = json.loads(
        runner.invoke(app, ["lab", "runs", "list", "--user", "ada@example.org", "--json"]).output
    )
    mine = [r for r in listed if r["name"] == "cli-run"]
    assert mine and mine[0]["owner"] == "ada@example.org" and mine[0]["status"] == "succeeded"
    run_id = mine[0]["id"]
    shown = runner.invoke(app, ["lab", "runs", "show", str(run_id)])
    assert shown.exit_code == 0 and "epoch 1: validation dice" in shown.output, shown.output
    again = runner.invoke(app, ["lab", "runs", "cancel", str(run_id)])
    assert again.exit_code != 0 and "already succeeded" in again.output
    assert runner.invoke(app, ["lab", "runs", "show", "999999"]).exit_code != 0


@pytest.mark.postgres
def test_run_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """Launch, train (fenced progress), follow and cancel on PostgreSQL."""
    w = make_world(tmp_path, postgres_url)
    try:
        run_id = w.launch("ada", recipe("pg-run", epochs=1, onnx=False))
        assert (
            w.client.get(f"/api/v1/lab/runs/{run_id}", headers=w.headers["bob"]).status_code == 404
        )
        queued = w.launch("ada", recipe("pg-cancel"))
        assert (
            w.client.post(f"/api/v1/lab/runs/{queued}/cancel", headers=w.headers["ada"]).json()[
                "status"
            ]
            == "cancelled"
        )
        assert w.worker().run_until_idle() == 2
        done = w.run("ada", run_id)
        assert done["status"] == "succeeded", done["error"]
        assert [s for s, _ in done["points"]["loss"]] == [1, 2] and done["model"] == "pg-run:1"
        assert w.run("ada", queued)["status"] == "cancelled"
    finally:
        w.cat.close()

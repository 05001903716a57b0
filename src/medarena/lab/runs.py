"""Training runs as jobs: launch a recipe, train it in a worker, follow and cancel it.

:func:`launch_run` validates a recipe (every problem with its line, as ``medarena lab
validate`` reports them), checks the data it names and adds a ``lab_runs`` row plus a job
of kind ``lab.train`` in the caller's transaction. The job handler :func:`train_run_job`
(registered in :data:`HANDLERS`) trains with :func:`medarena.lab.trainer.train` into the
run's folder ``<data dir>/lab/runs/run-<id>``:

- after every step the loss (and after each validation the metric) becomes a curve point,
  appended at once to ``points.jsonl`` in the run folder; the run row gets the last
  progress at most about once a second (and after each validation);
- each of those writes is fenced by the job's claim: a worker whose lease was lost writes
  nothing more and stops after its current step; so does a run whose owner cancelled it;
- a worker killed mid-run leaves its job to the lease; the next claim trains into the same
  folder, which resumes from the last checkpoint (the trainer's exact resume). Points of
  steps trained twice are kept once (the later one; they are equal by determinism).

Who may do what: a run is seen, followed and cancelled by its owner and by platform
admins; anyone else gets NotFoundError, as for a run that does not exist. Every dataset
of the catalogue is readable by logged-in users (the dataset pages are public), except
what a split hides: a run may not train or validate on a hidden subset, nor on a case that
any split of the dataset hides (a challenge's hidden test cases).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from medarena.db.lab_models import LabRun
from medarena.db.models import Case, Dataset, Split, SplitAssignment, utcnow
from medarena.db.platform_models import Job, User
from medarena.errors import InputError, NotFoundError, UserInputError
from medarena.jobs.queue import LeaseLost, enqueue, on_final_failure
from medarena.jobs.worker import JobContext
from medarena.lab.recipe import Recipe, RecipeError, parse_recipe
from medarena.yamlerrors import YamlProblem, parse_mapping, problem_at

logger = logging.getLogger(__name__)

TRAIN_JOB_KIND = "lab.train"
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})
POINTS_FILE = "points.jsonl"
# The run row is written at most this often (and after each validation).
FLUSH_SECONDS = 1.0
# GET of a run sends at most this many loss points (evenly thinned, the last one kept).
MAX_LOSS_POINTS = 2000
MAX_RECIPE_BYTES = 200_000


def runs_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "lab" / "runs"


# ---------------------------------------------------------------------------- checks


def _data_problems(session: Session, recipe: Recipe) -> list[tuple[tuple[str, ...], str]]:
    """Why the recipe may not use its data (unknown dataset/split, hidden cases); [] if fine."""
    ds = recipe.dataset
    dataset = session.scalar(select(Dataset).where(Dataset.name == ds.name))
    if dataset is None:
        known = session.scalars(select(Dataset.name).order_by(Dataset.name)).all()
        return [
            (
                ("dataset", "name"),
                f"no dataset {ds.name!r} in the catalogue (datasets: {', '.join(known) or 'none'})",
            )
        ]
    split = session.scalar(
        select(Split).where(Split.dataset_id == dataset.id, Split.name == ds.split)
    )
    if split is None:
        known = session.scalars(
            select(Split.name).where(Split.dataset_id == dataset.id).order_by(Split.name)
        ).all()
        return [
            (
                ("dataset", "split"),
                f"dataset {ds.name!r} has no split {ds.split!r} (splits: "
                f"{', '.join(known) or 'none'})",
            )
        ]
    problems: list[tuple[tuple[str, ...], str]] = []
    hidden = set(split.hidden_subsets or ())
    for which in ("train", "validation"):
        subset = getattr(ds, which)
        if subset in hidden:
            problems.append(
                (
                    ("dataset", which),
                    f"subset {subset!r} of split {ds.split!r} is hidden (held-out test "
                    "cases): the lab never trains or validates on hidden data; use a "
                    "public subset",
                )
            )
    if problems:
        return problems
    # a case hidden by any split (a challenge's test case) stays out of every run
    used = select(SplitAssignment.case_id).where(
        SplitAssignment.split_id == split.id,
        SplitAssignment.subset.in_([ds.train, ds.validation]),
    )
    n_hidden = len(
        session.scalars(
            select(SplitAssignment.case_id)
            .join(Case, Case.id == SplitAssignment.case_id)
            .where(
                Case.dataset_id == dataset.id,
                SplitAssignment.hidden.is_(True),
                SplitAssignment.case_id.in_(used),
            )
            .distinct()
        ).all()
    )
    if n_hidden:
        problems.append(
            (
                ("dataset", "split"),
                f"{n_hidden} case(s) of subsets {ds.train!r}/{ds.validation!r} of split "
                f"{ds.split!r} are hidden by another split of {ds.name!r} (held-out test "
                "cases): the lab never trains or validates on hidden data",
            )
        )
    return problems


def check_recipe(session: Session, recipe_text: str, source: str = "recipe") -> Recipe:
    """Parse ``recipe_text`` and check its data; RecipeError lists each problem by line."""
    if len(recipe_text.encode()) > MAX_RECIPE_BYTES:
        raise RecipeError(
            source,
            [YamlProblem(None, "", f"a recipe is at most {MAX_RECIPE_BYTES} bytes")],
        )
    recipe = parse_recipe(recipe_text, source)
    found = _data_problems(session, recipe)
    if found:
        root, _ = parse_mapping(recipe_text, source, "recipe", RecipeError)
        raise RecipeError(source, [problem_at(root, loc, msg) for loc, msg in found])
    return recipe


# ---------------------------------------------------------------------------- launch, read


def launch_run(session: Session, user: User, recipe_text: str, *, data_dir: Path) -> LabRun:
    """Validate the recipe, add the run and its ``lab.train`` job (the caller commits).

    Raises RecipeError (``problems``: line, field, message) for a recipe that cannot run,
    including data it may not use; nothing is stored then.
    """
    from medarena.lab.trainer import recipe_digest

    recipe = check_recipe(session, recipe_text)
    run = LabRun(
        owner_id=user.id,
        name=recipe.name,
        recipe_yaml=recipe_text,
        recipe_digest=recipe_digest(recipe),
        status=QUEUED,
        out_dir="",
        cancel_requested=False,
        epoch=0,
        epochs=recipe.trainer.epochs,
        step=0,
        steps=0,
    )
    session.add(run)
    session.flush()
    run.out_dir = str(runs_dir(data_dir) / f"run-{run.id}")
    job = enqueue(session, TRAIN_JOB_KIND, {"run_id": run.id}, max_attempts=3)
    run.job_id = job.id
    session.flush()
    logger.info("user %d launched lab run %d (%s)", user.id, run.id, recipe.name)
    return run


def get_run(session: Session, user: User, run_id: int) -> LabRun:
    """The run if ``user`` owns it or is an admin; NotFoundError otherwise."""
    run = session.get(LabRun, run_id)
    if run is None or (run.owner_id != user.id and not user.is_admin):
        raise NotFoundError(f"no lab run {run_id}")
    return run


def list_runs(session: Session, user: User, *, everyone: bool = False) -> list[LabRun]:
    """``user``'s runs, newest first; an admin with ``everyone`` gets every user's."""
    q = select(LabRun).order_by(LabRun.id.desc())
    if not (everyone and user.is_admin):
        q = q.where(LabRun.owner_id == user.id)
    return list(session.scalars(q))


def cancel_run(session: Session, user: User, run_id: int) -> LabRun:
    """Cancel a queued run at once, or ask a running one to stop after its current step."""
    run = get_run(session, user, run_id)
    if run.status in FINISHED:
        raise InputError(
            f"run {run_id} has already {run.status}; only queued or running runs can be cancelled",
            value=run.status,
        )
    run.cancel_requested = True
    run.updated_at = utcnow()
    if run.status == QUEUED:
        run.status = CANCELLED
        run.finished_at = utcnow()
    session.flush()
    return run


def append_points(path: Path, points: list[dict[str, Any]]) -> None:
    """Append curve points to ``path``, one JSON object a line.

    A line torn by a worker killed mid-write is closed first, so the next attempt's
    points never run into it.
    """
    if not points:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        if fh.tell() > 0:
            with path.open("rb") as tail:
                tail.seek(-1, 2)
                torn = tail.read(1) != b"\n"
            if torn:
                fh.write(b"\n")
        fh.write("".join(json.dumps(p) + "\n" for p in points).encode())


@dataclass
class _Parsed:
    offset: int = 0  # bytes of the file read so far (complete lines only)
    loss: dict[int, float] = field(default_factory=dict)
    metric: dict[int, float] = field(default_factory=dict)


# Parsed points files by path: a poll reads only the lines appended since the last one.
_PARSED: OrderedDict[str, _Parsed] = OrderedDict()
_PARSED_LOCK = threading.Lock()
_PARSED_MAX = 64


def _parse_new_lines(path: Path) -> tuple[dict[int, float], dict[int, float]]:
    key = str(path)
    with _PARSED_LOCK:
        entry = _PARSED.pop(key, None) or _Parsed()
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < entry.offset:  # the file was replaced: read it again
            entry = _Parsed()
        if size > entry.offset:
            with path.open("rb") as fh:
                fh.seek(entry.offset)
                data = fh.read(size - entry.offset)
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
            entry.offset += len(complete)
            for line in complete.splitlines():
                try:
                    p = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill mid-write
                if "metric" in p and p["metric"] is not None:
                    entry.metric[int(p["epoch"])] = float(p["metric"])
                elif "loss" in p:
                    entry.loss[int(p["step"])] = float(p["loss"])
        _PARSED[key] = entry
        while len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
        return dict(entry.loss), dict(entry.metric)


def read_points(out_dir: str | Path) -> dict[str, Any]:
    """The run's curve points: loss per global step, validation metric per epoch.

    A step trained twice (a resumed run) is kept once, the later report winning. Only
    the lines appended since the previous call are parsed (up to 64 runs are remembered).
    """
    loss, metric = _parse_new_lines(Path(out_dir) / POINTS_FILE)
    loss_points = sorted(loss.items())
    if len(loss_points) > MAX_LOSS_POINTS:
        stride = -(-len(loss_points) // MAX_LOSS_POINTS)
        loss_points = loss_points[::stride] + (
            [loss_points[-1]] if (len(loss_points) - 1) % stride else []
        )
    return {
        "loss": [[s, v] for s, v in loss_points],
        "metric": [[e, v] for e, v in sorted(metric.items())],
    }


def run_public(run: LabRun, *, points: bool = False) -> dict[str, Any]:
    """What the API shows of a run (``points``: with its curve points)."""
    total = run.epochs * run.steps if run.steps else 0
    done = (run.epoch - 1) * run.steps + run.step if run.epoch else 0
    fraction = 1.0 if run.status == SUCCEEDED else (done / total if total else 0.0)
    out: dict[str, Any] = {
        "id": run.id,
        "url": f"/lab/runs/{run.id}",
        "name": run.name,
        "status": run.status,
        "cancel_requested": run.cancel_requested,
        "progress": {
            "epoch": run.epoch,
            "epochs": run.epochs,
            "step": run.step,
            "steps": run.steps,
            "loss": run.loss,
            "metric_name": run.metric_name,
            "metric": run.metric,
            "fraction": round(min(1.0, max(0.0, fraction)), 4),
        },
        "error": run.error,
        "model": run.model_ref,
        "model_url": f"/lab/models/{run.model_ref}" if run.model_ref else None,
        "recipe_digest": run.recipe_digest,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
    if points:
        out["points"] = read_points(run.out_dir) if run.out_dir else {"loss": [], "metric": []}
    return out


# ---------------------------------------------------------------------------- the job


class _Cancelled(Exception):
    """The run's owner cancelled it; raised from the progress callback to stop training."""


class _Recorder:
    """The trainer's progress callback: curve points and the run row, fenced, ~1/s."""

    def __init__(self, ctx: JobContext, run_id: int, out_dir: Path) -> None:
        self.ctx = ctx
        self.run_id = run_id
        self.path = out_dir / POINTS_FILE
        self.buffer: list[dict[str, Any]] = []
        self.last_flush = 0.0
        self.latest: Any = None

    def __call__(self, p: Any) -> None:
        if self.ctx.lease_lost:
            raise LeaseLost(f"job {self.ctx.job_id} lost its lease")
        step = (p.epoch - 1) * p.steps + p.step
        if p.validated:
            self.buffer.append({"epoch": p.epoch, "metric": p.metric, "name": p.metric_name})
        else:
            self.buffer.append({"epoch": p.epoch, "step": step, "loss": p.loss})
        self.latest = p
        # Points go to the file at once: the trainer checkpoints right after a report, and
        # a run resumed from that checkpoint never reports the steps before it again.
        self.write_points()
        if p.validated or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def write_points(self) -> None:
        append_points(self.path, self.buffer)
        self.buffer = []

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        self.write_points()
        p = self.latest
        if p is None:
            return
        total = p.epochs * p.steps
        fraction = ((p.epoch - 1) * p.steps + p.step) / total if total else 0.0
        values: dict[str, Any] = {
            "epoch": p.epoch,
            "epochs": p.epochs,
            "step": p.step,
            "steps": p.steps,
            "loss": _finite(p.loss),
            "metric_name": p.metric_name,
            "metric": _finite(p.metric),
            "updated_at": utcnow(),
        }
        with self.ctx.fenced(final=False) as s:
            s.execute(update(LabRun).where(LabRun.id == self.run_id).values(**values))
            s.execute(
                update(Job)
                .where(Job.id == self.ctx.job_id)
                .values(progress=min(1.0, max(0.0, fraction)))
            )
            cancelled = s.scalar(select(LabRun.cancel_requested).where(LabRun.id == self.run_id))
        if cancelled:
            raise _Cancelled()


def _finite(v: float | None) -> float | None:
    if v is None or v != v or v in (float("inf"), float("-inf")):
        return None
    return float(v)


def _finish(ctx: JobContext, run_id: int, status: str, **values: Any) -> None:
    """Record the run's outcome and mark the job done, in one fenced commit."""
    result = {"run_id": run_id, "status": status}
    now = utcnow()
    with ctx.fenced(final=True, result=result) as s:
        s.execute(
            update(LabRun)
            .where(LabRun.id == run_id)
            .values(status=status, finished_at=now, updated_at=now, **values)
        )


def train_run_job(ctx: JobContext) -> dict[str, Any]:
    """The ``lab.train`` handler: train the run's recipe into its folder (resuming)."""
    from medarena.config import get_settings
    from medarena.datasets.catalogue import Catalogue
    from medarena.lab.trainer import MAIN_METRIC, train
    from medarena.storage import open_store

    run_id = int(ctx.payload["run_id"])
    with ctx.session_factory() as s:
        run = s.get(LabRun, run_id)
        if run is None:
            return {"run_id": run_id, "skipped": "the run no longer exists"}
        status, cancel, text, out_dir = (
            run.status,
            run.cancel_requested,
            run.recipe_yaml,
            Path(run.out_dir),
        )
        if status in FINISHED:
            return {"run_id": run_id, "skipped": f"the run has already {status}"}
        if cancel:
            _finish(ctx, run_id, CANCELLED)
            return {"run_id": run_id, "status": CANCELLED}
        try:
            recipe = check_recipe(s, text, f"run {run_id} recipe")
        except RecipeError as exc:
            raise UserInputError(str(exc)) from None
    with ctx.fenced(final=False) as s:
        s.execute(
            update(LabRun)
            .where(LabRun.id == run_id)
            .values(status=RUNNING, error=None, updated_at=utcnow())
        )
        s.execute(
            update(LabRun)
            .where(LabRun.id == run_id, LabRun.started_at.is_(None))
            .values(started_at=utcnow())
        )
    settings = ctx.settings or get_settings()
    bind = ctx.session_factory.kw.get("bind")
    assert isinstance(bind, Engine)
    cat = Catalogue(settings, bind, ctx.session_factory, open_store(settings))
    recorder = _Recorder(ctx, run_id, out_dir)
    logger.info(
        "lab run %d: training %s (job %d, attempt %d)", run_id, recipe.name, ctx.job_id, ctx.attempt
    )
    try:
        result = train(recipe, cat, out_dir, progress=recorder)
    except _Cancelled:
        logger.info("lab run %d cancelled by its owner", run_id)
        _finish(ctx, run_id, CANCELLED)
        return {"run_id": run_id, "status": CANCELLED}
    recorder.write_points()
    metric = result.metrics.get(MAIN_METRIC[recipe.task.type])
    _finish(
        ctx,
        run_id,
        SUCCEEDED,
        model_ref=result.model,
        error=None,
        **({"metric": _finite(metric)} if metric is not None else {}),
    )
    return {
        "run_id": run_id,
        "status": SUCCEEDED,
        "model": result.model,
        "resumed_from_epoch": result.resumed_from_epoch,
        "metrics": {k: _finite(v) for k, v in result.metrics.items()},
    }


def fail_unfinished_run(session: Session, job_id: int, payload: Mapping[str, Any]) -> None:
    """Final failure of a ``lab.train`` job: the run fails with the job's error."""
    error = session.scalar(select(Job.error).where(Job.id == job_id))
    now = utcnow()
    session.execute(
        update(LabRun)
        .where(LabRun.id == int(payload.get("run_id", 0)), LabRun.status.in_([QUEUED, RUNNING]))
        .values(
            status=FAILED,
            error=error or "the training job failed",
            finished_at=now,
            updated_at=now,
        )
    )


on_final_failure(TRAIN_JOB_KIND, fail_unfinished_run)

HANDLERS = {TRAIN_JOB_KIND: train_run_job}

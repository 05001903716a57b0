"""`medarena lab runs`: training runs as jobs, from the command line (an operator's view).

These commands work on the database of MEDARENA_DATABASE_URL / MEDARENA_DATA_DIR, like
`medarena users`: ``submit`` queues a run for a user (``--user EMAIL``), a worker
(`medarena worker` or `medarena serve`) trains it, and the run appears on that user's
/lab page. ``--wait`` follows it with a progress bar read from the run's row.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medarena.cli.common import (
    catalogue_or_exit,
    console,
    err_console,
    handle_errors,
    settings_or_exit,
)
from medarena.datasets.catalogue import Catalogue, open_catalogue
from medarena.errors import InputError, NotFoundError

_FINISHED = ("succeeded", "failed", "cancelled")


def _read_recipe(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("recipe file does not exist", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read recipe: {exc}", path=path) from None


def _run_row(cat: Catalogue, run_id: int) -> dict[str, Any]:
    from medarena.db.lab_models import LabRun
    from medarena.lab.runs import run_public

    with cat.sessions() as s:
        run = s.get(LabRun, run_id)
        if run is None:
            raise NotFoundError(f"no lab run {run_id}")
        out = run_public(run, points=True)
        out["owner_id"] = run.owner_id
        out["out_dir"] = run.out_dir
        out["recipe"] = run.recipe_yaml
        return out


def _follow(cat: Catalogue, run_id: int, timeout: float | None, poll: float = 1.0) -> str:
    """A progress bar from the run's row until it finishes; return the final status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(
        TextColumn("{task.fields[status]}"),
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("step {task.fields[step]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[metric]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(
            "run", total=1.0, status="queued", epoch="-", step="-", loss="-", metric=""
        )
        while True:
            run = _run_row(cat, run_id)
            p = run["progress"]
            metric = f"val {p['metric_name']} {p['metric']:.4f}" if p["metric"] is not None else ""
            bar.update(
                task,
                completed=p["fraction"],
                status=run["status"],
                epoch=f"{p['epoch']}/{p['epochs']}",
                step=f"{p['step']}/{p['steps']}",
                loss="-" if p["loss"] is None else f"{p['loss']:.4f}",
                metric=metric,
            )
            if run["status"] in _FINISHED:
                return str(run["status"])
            if deadline is not None and time.monotonic() >= deadline:
                raise InputError(
                    f"run {run_id} is still {run['status']} after {timeout:g} s (is a "
                    "`medarena worker` or `medarena serve` running?); follow it with "
                    f"`medarena lab runs show {run_id}`",
                    value=timeout,
                )
            time.sleep(poll)


def register_runs(group: typer.Typer) -> None:
    runs = typer.Typer(
        help="Training runs as background jobs (also on the web: /lab). A worker "
        "(`medarena worker` or `medarena serve`) trains them.",
        no_args_is_help=True,
    )
    group.add_typer(runs, name="runs")

    @runs.command("submit")
    @handle_errors
    def submit_cmd(
        recipe: Path = typer.Argument(..., help="Recipe YAML file."),
        user: str = typer.Option(
            ..., "--user", help="The run's owner (e-mail): it shows on their /lab page."
        ),
        wait: bool = typer.Option(
            False, "--wait", help="Follow the run with a progress bar until it finishes."
        ),
        timeout: float | None = typer.Option(
            None, "--timeout", min=0.0, help="With --wait: give up after this many seconds."
        ),
    ) -> None:
        """Queue a training run of RECIPE for a user; the recipe and its data are checked first.

        Problems are listed with their line (as `medarena lab validate` does), including
        data the run may not use: a hidden split subset or cases a split hides.
        """
        from medarena.accounts.users import require_user
        from medarena.lab.recipe import RecipeError
        from medarena.lab.runs import launch_run

        text = _read_recipe(recipe)
        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            try:
                with cat.sessions() as s:
                    owner = require_user(s, user)
                    try:
                        run = launch_run(s, owner, text, data_dir=settings.data_dir)
                    except RecipeError as exc:
                        err_console.print(
                            f"error: {recipe}: the recipe cannot run:",
                            highlight=False,
                            markup=False,
                        )
                        for p in exc.problems:
                            err_console.print(f"  - {p}", highlight=False, markup=False)
                        raise typer.Exit(2) from None
                    s.commit()
                    run_id, job_id = run.id, run.job_id
                console.print(
                    f"run {run_id} queued (job {job_id}); page /lab/runs/{run_id}",
                    highlight=False,
                )
                if wait:
                    status = _follow(cat, run_id, timeout)
                    final = _run_row(cat, run_id)
                    if status == "succeeded":
                        console.print(
                            f"[green]succeeded[/]: model {final['model']}", highlight=False
                        )
                    else:
                        err_console.print(
                            f"run {run_id} {status}: {final['error'] or ''}",
                            highlight=False,
                            markup=False,
                        )
                        raise typer.Exit(1)
            finally:
                cat.close()

    @runs.command("list")
    @handle_errors
    def list_cmd(
        user: str | None = typer.Option(None, "--user", help="Only this user's runs (e-mail)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List training runs, newest first: status, progress, model."""
        from sqlalchemy import select

        from medarena.accounts.users import require_user
        from medarena.db.lab_models import LabRun
        from medarena.db.platform_models import User
        from medarena.lab.runs import run_public

        with catalogue_or_exit() as cat, cat.sessions() as s:
            q = select(LabRun, User.email).join(User, User.id == LabRun.owner_id)
            if user:
                q = q.where(LabRun.owner_id == require_user(s, user).id)
            rows = [
                {**run_public(r), "owner": email}
                for r, email in s.execute(q.order_by(LabRun.id.desc()))
            ]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="lab runs")
        for col in ("id", "recipe", "owner", "status", "epoch", "loss", "validation", "model"):
            table.add_column(col)
        for r in rows:
            p = r["progress"]
            table.add_row(
                str(r["id"]),
                r["name"],
                r["owner"],
                r["status"],
                f"{p['epoch']}/{p['epochs']}",
                "-" if p["loss"] is None else f"{p['loss']:.4f}",
                "-" if p["metric"] is None else f"{p['metric_name']} {p['metric']:.4f}",
                r["model"] or "-",
            )
        console.print(table)

    @runs.command("show")
    @handle_errors
    def show_cmd(
        run_id: int = typer.Argument(..., help="Run id."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (with curve points)."),
    ) -> None:
        """Show a run: status, progress, error, model, folder and its validation curve."""
        with catalogue_or_exit() as cat:
            run = _run_row(cat, run_id)
        if as_json:
            typer.echo(json.dumps(run, indent=2))
            return
        p = run["progress"]
        console.print(f"[bold]run {run['id']}[/]: {run['name']} ({run['status']})", highlight=False)
        console.print(
            f"epoch {p['epoch']}/{p['epochs']}, step {p['step']}/{p['steps']}, "
            f"{100 * p['fraction']:.0f}%",
            highlight=False,
        )
        if p["loss"] is not None:
            console.print(f"last loss {p['loss']:.4f}", highlight=False)
        for epoch, value in run["points"]["metric"]:
            console.print(
                f"epoch {epoch}: validation {p['metric_name']} {value:.4f}", highlight=False
            )
        if run["error"]:
            console.print(f"[red]error[/]: {run['error']}", highlight=False)
        if run["model"]:
            console.print(f"model: {run['model']}", highlight=False)
        console.print(f"folder: {run['out_dir']}", highlight=False)

    @runs.command("cancel")
    @handle_errors
    def cancel_cmd(run_id: int = typer.Argument(..., help="Run id.")) -> None:
        """Cancel a queued run, or stop a running one after its current step."""
        from medarena.db.lab_models import LabRun
        from medarena.db.platform_models import User
        from medarena.lab.runs import cancel_run

        with catalogue_or_exit() as cat, cat.sessions() as s:
            row = s.get(LabRun, run_id)
            owner = s.get(User, row.owner_id) if row is not None else None
            if owner is None:
                raise NotFoundError(f"no lab run {run_id}")
            run = cancel_run(s, owner, run_id)
            s.commit()
            status = run.status
        if status == "cancelled":
            console.print(f"run {run_id} cancelled", highlight=False)
        else:
            console.print(
                f"run {run_id} will stop after its current step (it is {status})", highlight=False
            )

"""`medarena lab`: list blocks, validate a recipe, train it."""

from __future__ import annotations

import json
from pathlib import Path

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
from medarena.cli.lab_explain import register_explain
from medarena.cli.lab_runs import register_runs
from medarena.datasets.catalogue import open_catalogue
from medarena.errors import InputError
from medarena.lab.blocks import KINDS, blocks
from medarena.lab.recipe import RecipeError, load_recipe


def _num(v: object) -> str:
    """A metric value for a table: 4 significant digits, '-' when undefined."""
    return f"{v:.4g}" if isinstance(v, int | float) else "-"


def _check_data(recipe: Path) -> None:
    """RecipeError listing the problems of a (valid) recipe's data part in the catalogue."""
    from medarena.lab.builder import check_recipe
    from medarena.yamlerrors import YamlProblem

    text = recipe.read_text(encoding="utf-8")
    with catalogue_or_exit() as cat:
        result = check_recipe(text, cat)
    if not result.ok:
        problems = [YamlProblem(p.line, p.field, p.message) for p in result.problems]
        raise RecipeError(str(recipe), problems)


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="The open lab: training recipes built from registered blocks.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="lab")
    register_runs(group)  # medarena lab runs submit|list|show|cancel (cli/lab_runs.py)
    register_explain(group)  # medarena lab explain (cli/lab_explain.py)

    @group.command("blocks")
    @handle_errors
    def blocks_cmd(
        kind: str | None = typer.Option(None, "--kind", "-k", help=f"One of {', '.join(KINDS)}."),
        as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
    ) -> None:
        """List the blocks a recipe can use, with their typed parameters."""
        found = [b.describe() for b in blocks(kind)]
        if as_json:
            typer.echo(json.dumps(found, indent=2))
            return
        for b in found:
            table = Table(
                title=f"{b['name']}  ({b['kind']}; tasks: {', '.join(b['tasks'])})",
                caption=b["summary"],
                title_justify="left",
            )
            table.add_column("parameter")
            table.add_column("type")
            table.add_column("default")
            table.add_column("description")
            for p in b["params"]:
                default = "(required)" if p["required"] else json.dumps(p["default"])
                table.add_row(p["name"], p["type"], default, p["description"])
            if not b["params"]:
                table.add_row("(none)", "", "", "")
            console.print(table)

    @group.command("validate")
    @handle_errors
    def validate_cmd(
        recipe: Path = typer.Argument(..., help="Recipe YAML file."),
        data: bool = typer.Option(
            True,
            "--data/--no-data",
            help="Also check the dataset, split, subsets, targets, dimensions and channels "
            "against the catalogue (MEDARENA_DATA_DIR), as the web builder does.",
        ),
    ) -> None:
        """Check a recipe: every problem is reported with its line and a suggestion."""
        try:
            r = load_recipe(recipe)
            if data:
                _check_data(recipe)
        except RecipeError as exc:  # one problem a line, all of them at once
            n = len(exc.problems)
            err_console.print(
                f"[bold red]error:[/] {recipe}: invalid recipe, {n} problem{'s' * (n != 1)}:",
                highlight=False,
                soft_wrap=True,
            )
            for problem in exc.problems:
                err_console.print(f"  {problem}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        console.print(
            f"[green]ok[/]: recipe {r.name!r} ({r.task.type}, {r.task.spatial_dims}D, "
            f"network {r.network.block}, loss {r.loss.block})",
            highlight=False,
        )

    @group.command("train")
    @handle_errors
    def train_cmd(
        recipe: Path = typer.Argument(..., help="Recipe YAML file."),
        out: Path | None = typer.Option(
            None,
            help="Run folder (default: <data dir>/lab/runs/<recipe name>). A folder with a "
            "checkpoint of the same recipe is resumed.",
        ),
        export: bool = typer.Option(True, help="Export to ONNX when the recipe asks for it."),
    ) -> None:
        """Train a recipe on CPU (or a GPU when present), with checkpoints and resume.

        Task types: segmentation, classification, multilabel, regression, detection
        (heatmaps) and image_to_image (docs/lab.md describes each).
        """
        from medarena.lab.trainer import train

        r = load_recipe(recipe)
        with settings_or_exit() as settings:
            out_dir = out or Path(settings.data_dir) / "lab" / "runs" / r.name
            cat = open_catalogue(settings)
            try:
                with Progress(
                    TextColumn("epoch {task.fields[epoch]}"),
                    BarColumn(),
                    TextColumn("step {task.completed}/{task.total}"),
                    TextColumn("loss {task.fields[loss]}"),
                    TextColumn("{task.fields[metric]}"),
                    TimeElapsedColumn(),
                    console=console,
                ) as bar:
                    task = bar.add_task("train", total=1, epoch="-", loss="-", metric="")

                    def will_validate(epoch: int, epochs: int) -> bool:
                        return epoch % r.trainer.val_every == 0 or epoch == epochs

                    def show(p: object) -> None:
                        from medarena.lab.trainer import Progress as P

                        assert isinstance(p, P)
                        metric = (
                            f"val {p.metric_name} {p.metric:.4f}" if p.metric is not None else ""
                        )
                        bar.update(
                            task,
                            completed=p.step,
                            total=p.steps,
                            epoch=f"{p.epoch}/{p.epochs}",
                            loss=f"{p.loss:.4f}",
                            metric=metric,
                        )
                        if console.is_terminal:
                            return
                        # a log file (no live bar): one line per epoch
                        if p.validated and p.metric is not None:
                            console.print(
                                f"epoch {p.epoch}/{p.epochs} done: loss {p.loss:.4f}, "
                                f"validation {p.metric_name} {p.metric:.4f}",
                                highlight=False,
                            )
                        elif p.step == p.steps and not will_validate(p.epoch, p.epochs):
                            console.print(
                                f"epoch {p.epoch}/{p.epochs} done: last step loss {p.loss:.4f}",
                                highlight=False,
                            )

                    result = train(r, cat, out_dir, progress=show, export=export)
            finally:
                cat.close()
        if result.resumed_from_epoch is not None:
            console.print(f"resumed from the checkpoint after epoch {result.resumed_from_epoch}")
        console.print(
            f"[green]done[/]: {result.epochs_done} epochs, {result.steps_done} steps, "
            f"stopped by {result.stopped}; validation "
            + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()),
            highlight=False,
        )
        if result.export:
            e = result.export
            console.print(
                f"ONNX: {out_dir / e['file']} (max |onnxruntime - torch| = "
                f"{e['max_abs_diff']:.3g}, tolerance {e['tolerance']:g})",
                highlight=False,
            )
        console.print(f"run folder: {out_dir}", highlight=False)
        if result.model:
            console.print(f"registered as model {result.model}", highlight=False)

    models = typer.Typer(
        help="The model registry: trained models, their cards, downloads and one-click "
        "challenge submissions."
    )
    group.add_typer(models, name="models")

    @models.command("list")
    @handle_errors
    def models_list(
        name: str | None = typer.Option(None, help="Only the versions of this model."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List registered models: name, version, task, dataset, validation metrics."""
        from medarena.lab.registry import list_models

        with catalogue_or_exit() as cat:
            found = list_models(cat, name)
        if as_json:
            rows = [
                {
                    "model": m.ref,
                    "task": m.task,
                    "dataset": m.dataset,
                    "split": m.split,
                    "dataset_version": m.dataset_version,
                    "metrics": m.metrics,
                    "onnx": m.onnx_digest is not None,
                    "created_at": m.created_at,
                }
                for m in found
            ]
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="registered models")
        for col in ("model", "task", "dataset / split", "validation", "onnx", "created"):
            table.add_column(col)
        for m in found:
            table.add_row(
                m.ref,
                m.task,
                f"{m.dataset} / {m.split}",
                ", ".join(f"{k} {v:.4g}" for k, v in m.metrics.items()),
                f"{m.onnx_size} B" if m.onnx_size else "-",
                m.created_at[:19],
            )
        console.print(table)

    @models.command("show")
    @handle_errors
    def models_show(
        ref: str = typer.Argument(..., help="NAME (latest version) or NAME:VERSION."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        onnx_out: Path | None = typer.Option(
            None, "--onnx-out", help="Also write the model's ONNX file here."
        ),
        weights_out: Path | None = typer.Option(
            None, "--weights-out", help="Also write the PyTorch state dict (model.pt) here."
        ),
    ) -> None:
        """Show a model: card, metrics, curves, export parity and recipe."""
        from medarena.lab.registry import get_model

        with catalogue_or_exit() as cat:
            m = get_model(cat, ref)
            if onnx_out is not None:
                if m.onnx_digest is None:
                    raise InputError(f"model {m.ref} has no ONNX export", value=ref)
                cat.store.copy_to(m.onnx_digest, onnx_out)
            if weights_out is not None:
                cat.store.copy_to(m.weights_digest, weights_out)
        if as_json:
            out = {k: v for k, v in vars(m).items()}
            out["model"] = m.ref
            typer.echo(json.dumps(out, indent=2, default=str))
            return
        console.print(f"[bold]{m.ref}[/] ({m.task}) on {m.dataset} / {m.split}", highlight=False)
        console.print(f"dataset version: {m.dataset_version}", highlight=False)
        console.print(f"intended use: {m.model_card.get('intended_use', '')}", highlight=False)
        console.print(
            "validation: " + ", ".join(f"{k} {v:.4g}" for k, v in m.metrics.items()),
            highlight=False,
        )
        if m.export:
            console.print(
                f"ONNX: {m.onnx_size} B, max |onnxruntime - torch| {m.export['max_abs_diff']:.3g}"
                f" (tolerance {m.export['tolerance']:g})",
                highlight=False,
            )
        curve = Table(title="curves")
        for col in ("epoch", "loss", "lr", "validation"):
            curve.add_column(col)
        skip = ("epoch", "step", "loss", "lr", "stopped")
        for row in m.curves:
            val = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in row.items()
                if k not in skip
            )
            curve.add_row(str(row["epoch"]), f"{row['loss']:.4f}", f"{row['lr']:.3g}", val)
        console.print(curve)
        subgroups = m.model_card.get("metrics", {}).get("subgroups", [])
        if subgroups:
            groups = Table(title="validation metric per subgroup (mean, 95 % CI)")
            for col in ("attribute", "group", "n", "metric", "mean", "CI"):
                groups.add_column(col)
            for analysis in subgroups:
                for g in analysis["groups"]:
                    ci = g.get("ci") or [None, None]
                    groups.add_row(
                        str(analysis["attribute"]),
                        str(g["value"]),
                        str(g["n"]),
                        str(analysis["metric"]),
                        _num(g.get("mean")),
                        f"{_num(ci[0])} - {_num(ci[1])}",
                    )
            console.print(groups)
        console.print("limitations:", highlight=False)
        for line in m.model_card.get("limitations", []):
            console.print(f"- {line}", highlight=False)
        if onnx_out is not None:
            console.print(f"ONNX written to {onnx_out}", highlight=False)

    @models.command("compare")
    @handle_errors
    def models_compare(
        refs: list[str] = typer.Argument(..., help="Two or more NAME or NAME:VERSION."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Compare models' validation metrics side by side."""
        from medarena.lab.registry import compare_models

        with catalogue_or_exit() as cat:
            cmp = compare_models(cat, refs)
        if as_json:
            typer.echo(json.dumps(cmp, indent=2))
            return
        table = Table(title="validation metrics")
        table.add_column("metric")
        for ref in cmp["models"]:
            table.add_column(ref, justify="right")
        for name, values in cmp["metrics"].items():
            table.add_row(name, *("-" if v is None else f"{v:.4g}" for v in values))
        console.print(table)
        if not cmp["same_data"]:
            console.print(
                "[yellow]note:[/] the models were trained on different dataset versions",
                highlight=False,
            )

    @models.command("submit")
    @handle_errors
    def models_submit(
        ref: str = typer.Argument(..., help="NAME (latest version) or NAME:VERSION."),
        challenge: str = typer.Option(..., "--challenge", help="Challenge slug."),
        track: str = typer.Option(..., "--track", help="Track slug."),
        phase: str = typer.Option(..., "--phase", help="Phase slug (it must accept models)."),
        user: str | None = typer.Option(
            None,
            "--user",
            help="Submit as this user (email), for their team in the challenge. Default: the "
            "owner of the lab run that trained the model.",
        ),
        team: str | None = typer.Option(
            None, "--team", help="Submit for this team of the challenge, as its captain."
        ),
    ) -> None:
        """Submit a registry model to a challenge in one step.

        Builds model.onnx + manifest.yaml from the registry (the manifest derived from the
        recipe's preprocessing blocks and the track's outputs) and submits it through the
        normal submission service: the same checks, model limits and quotas as an upload.
        Works on the database of MEDARENA_DATABASE_URL (an operator's command); on the web,
        the model's page (/lab/models/NAME:VERSION) has the same submit form.
        """
        from medarena.db.platform_models import User
        from medarena.lab.registry import get_model
        from medarena.lab.submit import find_user, owner_of, submit_registry_model, team_captain

        with catalogue_or_exit() as cat:
            info = get_model(cat, ref)
            if user and team:
                raise InputError("give --user or --team, not both", value=[user, team])
            with cat.sessions() as s:
                if team:
                    who: User | None = team_captain(s, challenge, team)
                else:
                    who = find_user(s, user) if user else owner_of(s, info)
                if who is None:
                    raise InputError(
                        f"model {info.ref} was not trained by a lab run, so it has no "
                        "owner; name the submitting user with --user EMAIL or --team NAME",
                        value=ref,
                    )
                uid, email = who.id, who.email
            sub = submit_registry_model(
                cat, info, user_id=uid, challenge=challenge, track=track, phase=phase
            )
        console.print(
            f"model {info.ref} submitted as {email}: submission {sub.id} ({sub.status}); "
            "`medarena worker` scores it",
            highlight=False,
        )

    @models.command("download")
    @handle_errors
    def models_download(
        ref: str = typer.Argument(..., help="NAME (latest version) or NAME:VERSION."),
        out: Path | None = typer.Option(
            None, "--out", help="Folder to write into (default: ./NAME-vVERSION)."
        ),
    ) -> None:
        """Write a model's model.onnx, model_card.json and recipe.yaml into a folder."""
        from medarena.lab.registry import get_model
        from medarena.lab.submit import download_model

        with catalogue_or_exit() as cat:
            info = get_model(cat, ref)
            folder = out or Path(f"{info.name}-v{info.version}")
            written = download_model(cat, info, folder)
        for path in written:
            console.print(f"{path} ({path.stat().st_size} B)", highlight=False)

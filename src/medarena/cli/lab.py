"""`medarena lab`: list blocks, validate a recipe, train it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medarena.cli.common import console, handle_errors, settings_or_exit
from medarena.datasets.catalogue import open_catalogue
from medarena.lab.blocks import KINDS, blocks
from medarena.lab.recipe import load_recipe


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="The open lab: training recipes built from registered blocks.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="lab")

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
    ) -> None:
        """Check a recipe: every problem is reported with its line and a suggestion."""
        r = load_recipe(recipe)
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
        """Train a recipe on CPU (or a GPU when present), with checkpoints and resume."""
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

                    result = train(r, cat, out_dir, progress=show, export=export)
            finally:
                cat.close()
        if result.resumed_from_epoch is not None:
            console.print(f"resumed from the checkpoint after epoch {result.resumed_from_epoch}")
        console.print(
            f"[green]done[/]: {result.epochs_done} epochs, {result.steps_done} steps, "
            f"stopped by {result.stopped}; validation "
            + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items() if k not in ("epoch",)),
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

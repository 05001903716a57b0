"""Helpers shared by command modules: console, settings, error rendering."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from medarena.config import Settings, get_settings
from medarena.datasets.catalogue import Catalogue, open_catalogue
from medarena.errors import MedarenaError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Show MedarenaError messages without a traceback and exit with status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MedarenaError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
            )
            err_console.print(f"[bold red]error:[/] {problems}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def settings_or_exit() -> Iterator[Settings]:
    try:
        settings = get_settings()
        settings.ensure_dirs()
    except MedarenaError as exc:
        err_console.print(f"[bold red]configuration error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    yield settings


@contextmanager
def catalogue_or_exit() -> Iterator[Catalogue]:
    """The configured catalogue (database migrated), closed on the way out; a configuration
    error exits with status 2 as in :func:`settings_or_exit`."""
    with settings_or_exit() as settings:
        cat = open_catalogue(settings)
        try:
            yield cat
        finally:
            cat.close()


ProgressFn = Callable[[str, int, int], None]


@contextmanager
def progress_bar() -> Iterator[ProgressFn]:
    """A transient progress display; yields ``progress(stage, done, total)``.

    Each new stage name gets its own bar, so long work with several phases shows them all.
    """
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield progress

"""The `medarena` command. Each sub-module registers its commands on the app.

A command module exposes ``register(app)``; it parses input, calls a package's
api and renders the result, and holds no business logic.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="medarena",
    help="Open platform for medical-imaging AI: data hub, evaluation, challenges, lab.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules under medarena.cli, registered in this order.
_COMMAND_MODULES = (
    "db",
    "datasets",
    "serve",
    "evaluate",
    "deid",
    "worker",
    "challenge",
    "users",
    "submit",
    "lab",
    "demo",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(f"medarena.cli.{_name}").register(app)


def main() -> None:
    app()

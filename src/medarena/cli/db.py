"""`medarena db`: schema management."""

from __future__ import annotations

import typer

from medarena.cli.common import console, handle_errors, settings_or_exit
from medarena.db.engine import current_revision, upgrade


def register(app: typer.Typer) -> None:
    db_app = typer.Typer(
        help="Database schema management (Alembic migrations).", no_args_is_help=True
    )

    @db_app.command("upgrade")
    @handle_errors
    def upgrade_cmd(
        revision: str = typer.Argument("head", help="Target revision (default: the newest)."),
    ) -> None:
        """Apply schema migrations to the configured database (MEDARENA_DATABASE_URL)."""
        with settings_or_exit() as settings:
            url = settings.resolved_database_url
            upgrade(url, revision)
            console.print(f"database at revision [bold]{current_revision(url)}[/]")

    @db_app.command("current")
    @handle_errors
    def current_cmd() -> None:
        """Show the schema revision of the configured database."""
        with settings_or_exit() as settings:
            console.print(current_revision(settings.resolved_database_url) or "(empty database)")

    app.add_typer(db_app, name="db")

"""`medarena users`: create accounts, issue API tokens, (de)activate, grant admin."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from medarena.accounts import (
    audit,
    create_token,
    create_user,
    require_user,
    set_active,
    set_admin,
)
from medarena.accounts.users import list_users
from medarena.cli.common import console, err_console, handle_errors, settings_or_exit
from medarena.datasets.catalogue import open_catalogue
from medarena.errors import InputError


@contextmanager
def _db() -> Iterator[Session]:
    with settings_or_exit() as settings:
        cat = open_catalogue(settings)
        try:
            with cat.session() as session:
                yield session
        finally:
            cat.close()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line; the trailing newline of `echo` or a file is not part of the password.
        return sys.stdin.readline().rstrip("\r\n")
    first = typer.prompt("Password", hide_input=True)
    second = typer.prompt("Password again", hide_input=True)
    if first != second:
        raise InputError("the two passwords differ", path="password")
    return str(first)


def register(app: typer.Typer) -> None:
    users_app = typer.Typer(
        help="User accounts and personal API tokens (the database of MEDARENA_DATABASE_URL).",
        no_args_is_help=True,
    )

    @users_app.command("create")
    @handle_errors
    def create_cmd(
        email: str = typer.Argument(..., help="E-mail address, the login name."),
        name: str = typer.Option(
            "", "--name", help="Name shown to others (default: from the address)."
        ),
        admin: bool = typer.Option(False, "--admin", help="Make the user a platform admin."),
        password_stdin: bool = typer.Option(
            False, "--password-stdin", help="Read the password from the first line of stdin."
        ),
    ) -> None:
        """Create an account; the password is prompted for (twice) unless --password-stdin."""
        password = _read_password(password_stdin)
        with _db() as session:
            user = create_user(session, email, password, display_name=name, is_admin=admin)
            audit(session, None, "user.create", target=user.email, detail={"admin": admin})
            session.commit()
            console.print(
                f"created user [bold]{user.email}[/] (id {user.id}"
                f"{', platform admin' if admin else ''})",
                highlight=False,
            )

    @users_app.command("token")
    @handle_errors
    def token_cmd(
        email: str = typer.Argument(..., help="E-mail address of the account."),
        name: str = typer.Option(..., "--name", help="A label to recognise the token by."),
    ) -> None:
        """Create a personal API token and print it once (only its hash is stored)."""
        with _db() as session:
            user = require_user(session, email)
            if not user.is_active:
                raise InputError("the account is deactivated", path="email", value=user.email)
            _, plain = create_token(session, user, name)
            session.commit()
        err_console.print("API token (shown only now; use it as MEDARENA_TOKEN):")
        # The token alone on stdout, so `TOKEN=$(medarena users token ...)` works.
        sys.stdout.write(plain + "\n")

    @users_app.command("list")
    @handle_errors
    def list_cmd() -> None:
        """List accounts with their admin and active flags."""
        with _db() as session:
            table = Table("id", "e-mail", "name", "admin", "active", "created")
            for u in list_users(session):
                table.add_row(
                    str(u.id),
                    u.email,
                    u.display_name,
                    "yes" if u.is_admin else "",
                    "yes" if u.is_active else "NO",
                    f"{u.created_at:%Y-%m-%d}",
                )
            console.print(table)

    def _set_flag(email: str, action: str) -> None:
        with _db() as session:
            user = require_user(session, email)
            if action == "deactivate":
                set_active(session, user, False)
            elif action == "activate":
                set_active(session, user, True)
            else:
                set_admin(session, user, action == "admin.grant")
            audit(session, None, f"user.{action}", target=user.email)
            session.commit()
            console.print(f"{user.email}: {action.replace('.', ' ')} done", highlight=False)

    @users_app.command("deactivate")
    @handle_errors
    def deactivate_cmd(email: str = typer.Argument(..., help="E-mail address.")) -> None:
        """Deactivate an account: its sessions end and its API tokens get 401."""
        _set_flag(email, "deactivate")

    @users_app.command("activate")
    @handle_errors
    def activate_cmd(email: str = typer.Argument(..., help="E-mail address.")) -> None:
        """Re-activate a deactivated account (its unrevoked tokens work again)."""
        _set_flag(email, "activate")

    @users_app.command("admin")
    @handle_errors
    def admin_cmd(
        email: str = typer.Argument(..., help="E-mail address."),
        revoke: bool = typer.Option(False, "--revoke", help="Take the admin flag away."),
    ) -> None:
        """Make an account a platform admin (or, with --revoke, no longer one)."""
        _set_flag(email, "admin.revoke" if revoke else "admin.grant")

    app.add_typer(users_app, name="users")

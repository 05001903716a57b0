"""`medarena challenge validate|create|update|show|list`: challenges from YAML specs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from medarena.challenges import service
from medarena.challenges.spec import ChallengeSpec, parse_spec
from medarena.cli.common import console, handle_errors, settings_or_exit
from medarena.datasets.catalogue import open_catalogue
from medarena.db.platform_models import User
from medarena.errors import InputError, NotFoundError


def _read_spec(path: Path) -> ChallengeSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the spec: {exc}", path=path) from None
    return parse_spec(text, str(path))


def _actor(session: Session, email: str | None) -> int | None:
    if email is None:
        return None
    uid = session.scalars(select(User.id).where(User.email == email.strip().lower())).first()
    if uid is None:
        raise NotFoundError(
            f"no user with e-mail {email!r} (create it with `medarena users create`)"
        )
    return uid


def _print_summary(spec: ChallengeSpec) -> None:
    table = Table(title=f"{spec.title} ({spec.slug})")
    for col in ("phase", "opens", "closes", "state", "leaderboard", "tracks (scored subset)"):
        table.add_column(col)
    for p in spec.phases:
        tracks = ", ".join(f"{t.slug} ({spec.scored_subset(t, p)})" for t in spec.tracks_of(p))
        table.add_row(
            p.slug, p.opens.isoformat(), p.closes.isoformat(), p.state(), p.leaderboard, tracks
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Challenges: validate, create, update and show YAML specs (see docs/challenges.md).",
        no_args_is_help=True,
    )
    app.add_typer(group, name="challenge")

    @group.command("validate")
    @handle_errors
    def validate_cmd(
        spec_path: Path = typer.Argument(..., help="Challenge spec (YAML)."),
        check_data: bool = typer.Option(
            True, help="Also check datasets, splits and subsets against the catalogue."
        ),
    ) -> None:
        """Check a spec: every problem is listed with its line and field."""
        spec = _read_spec(spec_path)
        if check_data:
            with settings_or_exit() as settings:
                cat = open_catalogue(settings)
                try:
                    with cat.session() as s:
                        problems = service.check_data(s, spec)
                finally:
                    cat.close()
            if problems:
                raise InputError("; ".join(problems), path=spec_path)
        _print_summary(spec)
        console.print(f"[green]{spec_path} is a valid challenge spec[/]")

    @group.command("create")
    @handle_errors
    def create_cmd(
        spec_path: Path = typer.Argument(..., help="Challenge spec (YAML)."),
        organizer: str | None = typer.Option(
            None, "--organizer", help="E-mail of an existing user who becomes organizer."
        ),
    ) -> None:
        """Create a challenge from a spec (its slug must be new)."""
        spec = _read_spec(spec_path)
        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            try:
                with cat.session() as s:
                    ch = service.create_challenge(s, spec, actor_id=_actor(s, organizer))
                    s.commit()
                    console.print(f"created challenge [bold]{ch.slug}[/] (revision 1)")
            finally:
                cat.close()

    @group.command("update")
    @handle_errors
    def update_cmd(
        spec_path: Path = typer.Argument(..., help="Challenge spec (YAML) with an existing slug."),
        actor: str | None = typer.Option(
            None, "--as", help="E-mail of the user recorded in the audit log."
        ),
    ) -> None:
        """Replace a challenge's spec; changed rules must be accepted again by participants."""
        spec = _read_spec(spec_path)
        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            try:
                with cat.session() as s:
                    ch = service.update_challenge(s, spec.slug, spec, actor_id=_actor(s, actor))
                    s.commit()
                    console.print(
                        f"updated challenge [bold]{ch.slug}[/] to revision {ch.spec_revision}"
                    )
            finally:
                cat.close()

    @group.command("show")
    @handle_errors
    def show_cmd(
        slug: str = typer.Argument(..., help="Challenge slug."),
        as_yaml: bool = typer.Option(False, "--yaml", help="Print the stored spec as YAML."),
    ) -> None:
        """Show a stored challenge: phases with dates and state, or its spec as YAML."""
        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            try:
                with cat.session() as s:
                    ch = service.get_challenge(s, slug)
                    spec = service.load_spec(ch)
                    if as_yaml:
                        typer.echo(spec.to_yaml(), nl=False)
                    else:
                        _print_summary(spec)
                        console.print(f"revision {ch.spec_revision}")
            finally:
                cat.close()

    @group.command("list")
    @handle_errors
    def list_cmd() -> None:
        """List challenges."""
        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            try:
                with cat.session() as s:
                    table = Table()
                    for col in ("slug", "title", "revision", "phases"):
                        table.add_column(col)
                    for ch in service.list_challenges(s):
                        spec = service.load_spec(ch)
                        phases = ", ".join(f"{p.slug}: {p.state()}" for p in spec.phases)
                        table.add_row(ch.slug, ch.title, str(ch.spec_revision), phases)
                    console.print(table)
            finally:
                cat.close()

"""`medarena demo`: generate the demo tracks, build the demo challenge, score baselines, serve."""

from __future__ import annotations

import time

import typer

from medarena.cli.common import console, handle_errors, progress_bar, settings_or_exit


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @handle_errors
    def demo_cmd(
        size: str = typer.Option(
            "demo", help="Data size: demo (about 30 + 15 cases a track) or tiny."
        ),
        seed: int = typer.Option(0, help="Seed of the generators (the data cache is per seed)."),
        tracks: str = typer.Option(
            "", help="Comma-separated tracks (default: all wired), e.g. brain_age,dose."
        ),
        no_serve: bool = typer.Option(False, "--no-serve", help="Build the demo, do not serve it."),
        port: int | None = typer.Option(
            None, help="Port to serve on (default MEDARENA_PORT, 8000)."
        ),
    ) -> None:
        """Generate demo data, create a demo challenge with accounts and scored baselines, serve it.

        Re-running changes nothing: data are cached by seed and version, and existing
        datasets, accounts, the challenge and submissions are kept.
        """
        from medarena.datasets.catalogue import open_catalogue
        from medarena.demo.lab_models import LAB_TEAM
        from medarena.demo.runner import (
            CHALLENGE_SLUG,
            ORGANIZER,
            SKIPPED_TRACKS,
            TEAMS,
            TRACKS,
            parse_tracks,
            run_demo,
        )
        from medarena.logging import configure

        names = parse_tracks(tracks)
        with settings_or_exit() as settings:
            configure(settings.log_level)
            cat = open_catalogue(settings)
            try:
                t0 = time.monotonic()
                with progress_bar() as progress:
                    report = run_demo(
                        cat,
                        size=size,
                        seed=seed,
                        tracks=names,
                        progress=progress,
                        notify=lambda m: console.print(m, highlight=False),
                    )
                took = time.monotonic() - t0
                console.print(
                    f"demo ready in {took:.1f} s: {len(report.generated)} track(s) generated, "
                    f"{len(report.ingested)} ingested, {report.submitted} submission(s) added, "
                    f"{report.jobs_run} scoring job(s) run, "
                    f"{report.explained} model submission(s) explained"
                    + (", challenge created" if report.challenge_created else "")
                    + (", challenge updated" if report.challenge_updated else ""),
                    highlight=False,
                )
                for name, reason in SKIPPED_TRACKS.items():
                    console.print(f"[yellow]not included:[/] {name}: {reason}", highlight=False)
                for ref in report.lab_models:
                    console.print(
                        f"lab model {ref} trained, registered and submitted as ONNX "
                        f"(medarena lab models show {ref})",
                        highlight=False,
                    )
                for line in report.failed:
                    console.print(f"[red]failed submission:[/] {line}", highlight=False)
                console.print("\n[bold]What is real and what is synthetic[/]")
                for name in report.tracks:
                    real = "; ".join(report.real_parts.get(name, ())) or "nothing (all synthetic)"
                    console.print(f"  {TRACKS[name].title}: real: {real}", highlight=False)
                host, bind_port = "127.0.0.1", port or settings.port
                base = f"http://{host}:{bind_port}"
                console.print("\n[bold]Accounts[/]")
                who = [(ORGANIZER[0], "organizer")] + [(e, t) for t, e, _d in (*TEAMS, LAB_TEAM)]
                for email, role in who:
                    password = report.accounts.get(email)
                    shown = (
                        f"password [bold]{password}[/] (shown on this run only; stored hashed)"
                        if password
                        else "exists already (its password was shown on the first run only)"
                    )
                    console.print(f"  {role}: {email}  {shown}", highlight=False)
                console.print("\n[bold]Where to look[/]")
                console.print(
                    f"  challenge: {base}/challenges/{CHALLENGE_SLUG}",
                    highlight=False,
                    soft_wrap=True,
                )
                for name in report.tracks:
                    slug = TRACKS[name].slug
                    console.print(
                        f"  {slug} leaderboard: {base}/challenges/{CHALLENGE_SLUG}/leaderboard/"
                        f"preliminary/{slug}",
                        highlight=False,
                        soft_wrap=True,  # a URL stays whole, for copying
                    )
                console.print(
                    "  the final boards are private until the phase closes "
                    "(the organizer sees them)",
                    highlight=False,
                )
                if no_serve:
                    return
                import uvicorn

                from medarena.jobs.background import start_background_workers
                from medarena.web.app import create_app

                stop_workers = start_background_workers(settings, 1)
                console.print(f"medarena is serving at [bold]{base}[/] (Ctrl+C stops)")
                try:
                    uvicorn.run(
                        create_app(settings, cat), host=host, port=bind_port, log_level="warning"
                    )
                finally:
                    stop_workers()
            finally:
                cat.close()

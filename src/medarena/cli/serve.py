"""`medarena serve`: the web UI and HTTP API."""

from __future__ import annotations

import typer

from medarena.cli.common import console, handle_errors, settings_or_exit


def register(app: typer.Typer) -> None:
    @app.command("serve")
    @handle_errors
    def serve_cmd(
        host: str | None = typer.Option(None, help="Address to bind (default MEDARENA_HOST)."),
        port: int | None = typer.Option(None, help="Port (default MEDARENA_PORT, 8000)."),
        workers: int = typer.Option(
            2,
            min=0,
            help="Job workers run inside this process (0: none; then run "
            "`medarena worker` elsewhere against the same database and store).",
        ),
        sample: bool = typer.Option(
            False,
            help="Ingest the sample DICOM dataset (files shipped in pydicom and "
            "pydicom-data) as dataset 'sample' before serving.",
        ),
    ) -> None:
        """Apply database migrations and serve the web UI and /api/v1 until interrupted."""
        import uvicorn

        from medarena.datasets.catalogue import open_catalogue
        from medarena.datasets.ingest import ingest
        from medarena.datasets.sample import stage_sample
        from medarena.logging import configure
        from medarena.web.app import create_app

        with settings_or_exit() as settings:
            configure(settings.log_level)
            cat = open_catalogue(settings)  # runs the migrations
            if sample:
                src = stage_sample(settings.data_dir / "sample-source")
                summary = ingest(cat, src, "sample")
                console.print(
                    f"sample dataset: {summary.cases_added} cases added, "
                    f"{summary.files_skipped} files already there, "
                    f"{len(summary.quarantined)} quarantined, {len(summary.rejected)} rejected"
                )
            stop_workers = None
            if workers:
                from medarena.jobs.background import start_background_workers

                stop_workers = start_background_workers(settings, workers)
            bind_host = host or settings.host
            bind_port = port or settings.port
            console.print(f"medarena is serving at [bold]http://{bind_host}:{bind_port}[/]")
            try:
                uvicorn.run(
                    create_app(settings, cat), host=bind_host, port=bind_port, log_level="warning"
                )
            finally:
                if stop_workers is not None:
                    stop_workers()
                cat.close()

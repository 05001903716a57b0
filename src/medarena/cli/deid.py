"""`medarena deid IN OUT`: de-identify a folder of DICOM files by PS3.15 Annex E."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medarena.cli.common import console, handle_errors, settings_or_exit
from medarena.dicom.deid import DeidOptions, DeidSummary, deidentify_tree


def _render(summary: DeidSummary) -> None:
    counts = Table(title="De-identification summary")
    counts.add_column("status")
    counts.add_column("files", justify="right")
    counts.add_row("done", str(len(summary.done)))
    counts.add_row("quarantined (not written)", str(len(summary.quarantined)))
    counts.add_row("rejected (not written)", str(len(summary.rejected)))
    console.print(counts)
    problems = summary.quarantined + summary.rejected
    if problems:
        # Paths are relative to IN and reasons name rules only, never patient values.
        detail = Table(title="Files not written")
        detail.add_column("file (relative to IN)", overflow="fold")
        detail.add_column("status")
        detail.add_column("reason", overflow="fold")
        for r in problems:
            detail.add_row(r.path, r.status, r.reason or "")
        console.print(detail)


def register(app: typer.Typer) -> None:
    @app.command("deid")
    @handle_errors
    def deid_cmd(
        in_dir: Path = typer.Argument(..., help="Folder of DICOM files (walked recursively)."),
        out_dir: Path = typer.Argument(
            ..., help="Output folder; files land in OUT/<study>/<series>/<instance>.dcm."
        ),
        retain_dates: bool = typer.Option(
            True,
            "--retain-dates/--no-retain-dates",
            help="Retain Longitudinal Temporal Information with Modified Dates: shift every "
            "date of a patient by one keyed per-patient offset (default). With "
            "--no-retain-dates dates are removed (PS3.15 Basic Profile).",
        ),
        retain_patient_characteristics: bool = typer.Option(
            False,
            "--retain-patient-characteristics",
            help="Keep sex, age, size, weight, ethnic group, smoking and pregnancy status.",
        ),
        clean_descriptors: bool = typer.Option(
            False,
            "--clean-descriptors",
            help="Keep study/series descriptions and comments with identifying tokens "
            "(names, IDs, dates, long numbers) cut out, instead of removing them.",
        ),
        retain_device_identity: bool = typer.Option(
            False, "--retain-device-identity", help="Keep station name, serial numbers, device IDs."
        ),
        retain_institution_identity: bool = typer.Option(
            False, "--retain-institution-identity", help="Keep institution name and address."
        ),
        retain_safe_private: bool = typer.Option(
            False,
            "--retain-safe-private",
            help="Keep private attributes on the safe allow-list (e.g. diffusion b-values); "
            "every other private attribute is removed.",
        ),
        allow_unknown_sop_classes: bool = typer.Option(
            False,
            "--allow-unknown-sop-classes",
            help="De-identify SOP classes outside the known-safe list instead of rejecting them.",
        ),
        strict: bool = typer.Option(
            False, "--strict", help="Exit with status 1 if any file was quarantined or rejected."
        ),
    ) -> None:
        """De-identify DICOM files by PS3.15 Annex E (Basic Profile + chosen options).

        Quarantined files (burned-in annotation, secondary captures, ultrasound) and
        rejected ones (unknown SOP class, non-DICOM, DICOMDIR, corrupt) are never
        written; the summary lists them by path relative to IN. The identity map
        (pseudonym -> original Patient ID) goes to the admin-only identity database.
        """
        options = DeidOptions(
            retain_modified_dates=retain_dates,
            retain_patient_characteristics=retain_patient_characteristics,
            clean_descriptors=clean_descriptors,
            retain_device_identity=retain_device_identity,
            retain_institution_identity=retain_institution_identity,
            retain_safe_private=retain_safe_private,
            allow_unknown_sop_classes=allow_unknown_sop_classes,
        )
        with settings_or_exit() as settings:
            progress = Progress(
                TextColumn("de-identifying"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            with progress:
                task = progress.add_task("deid", total=None)

                def _tick(done: int, total: int, _path: str) -> None:
                    progress.update(task, completed=done, total=total)

                summary = deidentify_tree(in_dir, out_dir, options, settings, progress=_tick)
        _render(summary)
        if strict and not summary.all_done:
            raise typer.Exit(1)

"""`medarena ingest` and `medarena datasets`: the data hub from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from medarena.cli.common import console, handle_errors, progress_bar, settings_or_exit
from medarena.datasets.catalogue import (
    case_records,
    dataset_stats,
    list_datasets,
    make_split,
    open_catalogue,
    plot_stats,
)
from medarena.datasets.ingest import IngestOptions, IngestSummary, ingest
from medarena.datasets.splits import SplitSpec
from medarena.dicom.deid import DeidOptions
from medarena.errors import InputError


def _print_summary(summary: IngestSummary) -> None:
    table = Table(title=f"ingest into dataset '{summary.dataset}'")
    table.add_column("result")
    table.add_column("count", justify="right")
    table.add_row("cases added", str(summary.cases_added))
    table.add_row("cases updated", str(summary.cases_updated))
    table.add_row("files stored", str(summary.files_stored))
    table.add_row("files already ingested (skipped)", str(summary.files_skipped))
    table.add_row("case label rows applied", str(summary.labels_applied))
    table.add_row("files quarantined", str(len(summary.quarantined)))
    table.add_row("files rejected", str(len(summary.rejected)))
    console.print(table)
    if summary.issues:
        issues = Table(title="files not stored, with the reason")
        issues.add_column("file")
        issues.add_column("outcome")
        issues.add_column("reason")
        for i in summary.issues:
            issues.add_row(i.path, i.outcome, i.reason)
        console.print(issues)


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    @handle_errors
    def ingest_cmd(
        path: Path = typer.Argument(..., help="File or folder of DICOM, NIfTI or 2D images."),
        dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset to add to (created)."),
        labels: Path | None = typer.Option(
            None,
            help="CSV with a case_id column: class labels / values; columns sex, age, "
            "site, manufacturer, modality, body_part set case attributes.",
        ),
        site: str | None = typer.Option(None, help="Site name recorded on every case."),
        description: str = typer.Option("", help="Description of a new dataset."),
        retain_dates: bool = typer.Option(
            True,
            help="PS3.15 option: keep dates shifted by one offset per patient "
            "(--no-retain-dates removes them).",
        ),
        retain_patient_characteristics: bool = typer.Option(
            True, help="PS3.15 option: keep sex, age, size, weight."
        ),
        clean_descriptors: bool = typer.Option(
            True, help="PS3.15 option: keep descriptions, cleaned of identifying text."
        ),
        strict: bool = typer.Option(False, help="Exit with status 1 if any file was not stored."),
    ) -> None:
        """Ingest images and labels into a dataset, de-identifying every DICOM object first.

        DICOM files are grouped into studies and series (one case per series); NIfTI and
        2D images give one case per file; the Medical Segmentation Decathlon / nnU-Net
        layout (dataset.json, imagesTr, labelsTr, imagesTs) is recognised. Re-running
        on the same files adds nothing.
        """
        with settings_or_exit() as settings:
            if labels is not None and not labels.is_file():
                raise InputError("labels CSV does not exist", path=labels)
            cat = open_catalogue(settings)
            opts = IngestOptions(
                description=description,
                site=site,
                labels_csv=labels,
                deid=DeidOptions(
                    retain_modified_dates=retain_dates,
                    retain_patient_characteristics=retain_patient_characteristics,
                    clean_descriptors=clean_descriptors,
                ),
            )
            with progress_bar() as progress:
                summary = ingest(cat, path, dataset, opts, progress)
            cat.close()
            _print_summary(summary)
            if strict and summary.issues:
                raise typer.Exit(1)

    ds_app = typer.Typer(help="List, inspect, split and describe datasets.", no_args_is_help=True)

    @ds_app.command("list")
    @handle_errors
    def list_cmd() -> None:
        """List datasets with their case counts and splits."""
        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            table = Table(title="datasets")
            for col in ("name", "cases", "splits", "created", "description"):
                table.add_column(col)
            for d in list_datasets(cat):
                table.add_row(
                    d.name, str(d.n_cases), ", ".join(d.splits), d.created_at[:19], d.description
                )
            console.print(table)
            cat.close()

    @ds_app.command("show")
    @handle_errors
    def show_cmd(
        name: str = typer.Argument(..., help="Dataset name."),
        as_json: bool = typer.Option(False, "--json", help="Print all case records as JSON."),
    ) -> None:
        """Show the cases of a dataset with their metadata and split subsets."""
        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            records = case_records(cat, name)
            cat.close()
            if as_json:
                console.print_json(json.dumps(records))
                return
            table = Table(title=f"dataset '{name}': {len(records)} cases")
            for col in (
                "case",
                "modality",
                "sex",
                "age",
                "site",
                "shape",
                "spacing",
                "labels",
                "splits",
            ):
                table.add_column(col)
            for r in records:
                table.add_row(
                    r["case_key"],
                    r["modality"] or "",
                    r["sex"] or "",
                    "" if r["age_years"] is None else f"{r['age_years']:.0f}",
                    r["site"] or "",
                    "x".join(map(str, r["shape"])),
                    "x".join(f"{x:g}" for x in r["spacing"]),
                    json.dumps(r["labels"]) if r["labels"] else "",
                    ", ".join(f"{k}:{v}" for k, v in r["splits"].items()),
                )
            console.print(table)

    @ds_app.command("stats")
    @handle_errors
    def stats_cmd(
        name: str = typer.Argument(..., help="Dataset name."),
        plot: Path | None = typer.Option(None, help="Write the distributions as a figure (.png)."),
        as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
    ) -> None:
        """Counts by modality, sex, age band, site and split; size and spacing distributions."""
        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            stats = dataset_stats(cat, name)
            if plot is not None:
                plot_stats(cat, name, str(plot))
            cat.close()
            if as_json:
                console.print_json(json.dumps(stats))
            else:
                console.print(
                    f"[bold]{name}[/]: {stats['n_cases']} cases, {stats['patients']} patients"
                )
                for key in ("modality", "sex", "age_band", "site", "manufacturer", "splits"):
                    console.print(f"  {key}: {stats[key]}")
                for key in ("size", "spacing"):
                    console.print(f"  {key}: {stats[key]}")
            if plot is not None:
                console.print(f"figure written to {plot}")

    @ds_app.command("split")
    @handle_errors
    def split_cmd(
        name: str = typer.Argument(..., help="Dataset name."),
        split_name: str = typer.Option("default", "--name", help="Name of the split."),
        subsets: str = typer.Option("train,validation,test", help="Comma-separated subsets."),
        ratios: str = typer.Option("0.7,0.1,0.2", help="Comma-separated ratios, one per subset."),
        seed: int = typer.Option(0, help="Seed: the same seed gives the same split."),
        stratify_by: str | None = typer.Option(
            None, help="Attribute (sex, site, modality, age_band, ...) or 'label:<name>'."
        ),
        group_by: str | None = typer.Option(
            "patient", help="Keep groups together: 'patient', 'site' or 'none'."
        ),
        hidden: str = typer.Option("", help="Comma-separated subsets hidden from participants."),
        replace: bool = typer.Option(False, help="Replace an existing split of that name."),
    ) -> None:
        """Assign cases to train / validation / test deterministically and store the split."""
        try:
            ratio_values = tuple(float(x) for x in ratios.split(","))
        except ValueError:
            raise InputError("ratios must be comma-separated numbers", value=ratios) from None
        spec = SplitSpec(
            name=split_name,
            subsets=tuple(s.strip() for s in subsets.split(",")),
            ratios=ratio_values,
            seed=seed,
            stratify_by=stratify_by,
            group_by=None if group_by in (None, "none") else group_by,
            hidden=tuple(h.strip() for h in hidden.split(",") if h.strip()),
        )
        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            counts = make_split(cat, name, spec, replace=replace)
            cat.close()
        console.print(
            f"split '{spec.name}' of '{name}': "
            + ", ".join(
                f"{k} {counts.get(k, 0)}{' (hidden)' if k in spec.hidden else ''}"
                for k in spec.subsets
            )
        )

    @ds_app.command("attach-dose")
    @handle_errors
    def attach_dose_cmd(
        name: str = typer.Argument(..., help="Dataset name."),
        root: Path = typer.Argument(
            ..., help="Folder of <case>/ reference folders.", exists=True, file_okay=False
        ),
    ) -> None:
        """Store the dose references of a dose track: ROOT/<case>/ with dose, mask, ROIs."""
        from medarena.datasets.dose import attach_dose_references

        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            try:
                summary = attach_dose_references(cat, name, root)
            finally:
                cat.close()
        console.print(
            f"dose references of {summary.cases} case(s) of '{name}' stored "
            f"({summary.objects} objects; structures: {', '.join(sorted(summary.rois)) or 'none'})"
        )

    @ds_app.command("attach-findings")
    @handle_errors
    def attach_findings_cmd(
        name: str = typer.Argument(..., help="Dataset name."),
        annotations: Path = typer.Argument(
            ..., help="annotations.csv: case_id,x,y,z,diameter_mm (world mm).", dir_okay=False
        ),
        excluded: Path | None = typer.Option(
            None,
            "--excluded",
            help="annotations_excluded.csv (findings neither hit nor FP).",
            dir_okay=False,
        ),
    ) -> None:
        """Store the findings of a detection track: nodules and excluded findings per case."""
        from medarena.datasets.findings import attach_findings

        with settings_or_exit() as settings:
            cat = open_catalogue(settings)
            try:
                summary = attach_findings(cat, name, annotations, excluded)
            finally:
                cat.close()
        console.print(
            f"findings of {summary.cases} case(s) of '{name}' stored "
            f"({summary.nodules} nodules, {summary.excluded} excluded findings)"
        )

    app.add_typer(ds_app, name="datasets")

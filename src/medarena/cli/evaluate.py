"""`medarena evaluate` and `medarena rank`: score predictions and rank teams, no server needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medarena.cli.common import console, handle_errors
from medarena.errors import InputError


def _settings(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (values parsed as YAML, so 0.5, true and [1, 2] work)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InputError("expected KEY=VALUE", value=pair)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def _csv_list(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    @handle_errors
    def evaluate_cmd(
        task: str = typer.Option(
            ...,
            "--task",
            help="Task: segmentation, brats, autopet, image-to-image, dose (folders of NIfTI "
            "cases) or classification, multilabel, regression, detection (CSV files); see "
            "docs/evaluation.md.",
        ),
        reference: Path = typer.Option(
            ...,
            "--reference",
            help="Reference folder of <case>.nii.gz files (dose: <case>/ folders), or a CSV "
            "with a case_id column.",
        ),
        prediction: Path = typer.Option(
            ..., "--prediction", help="Prediction folder (same case ids) or CSV."
        ),
        out: Path = typer.Option(Path("result.json"), "--out", help="Where to write result.json."),
        config: Path | None = typer.Option(
            None,
            "--config",
            help="Task configuration YAML. segmentation: labels {name: value} or regions "
            "{name: list of values}, metrics, nsd_tolerance_mm, hd95_variant, nsd_variant, empty, "
            "allowed_labels; brats: labels (2023|2021), subchallenge, lesion_wise; autopet: "
            "negative (fpv_only|all); every task: worst_values.",
        ),
        set_: list[str] = typer.Option(
            [], "--set", help="Override one task setting, KEY=VALUE (repeatable)."
        ),
        workers: int = typer.Option(1, "--workers", min=1, help="Processes scoring image cases."),
        report: Path | None = typer.Option(
            None, "--report", help="Also write a self-contained HTML report here."
        ),
        subgroups: Path | None = typer.Option(
            None, "--subgroups", help="CSV of case attributes (case_id, sex, age, site...)."
        ),
        by: str | None = typer.Option(
            None, "--by", help="Attributes to split by, comma-separated (age_band from age)."
        ),
        subgroup_metrics: str | None = typer.Option(
            None, "--subgroup-metrics", help="Metrics for subgroups (default: all ranked ones)."
        ),
        bootstrap: int = typer.Option(1000, "--bootstrap", min=1, help="Subgroup CI resamples."),
        seed: int = typer.Option(0, "--seed", help="Seed of the subgroup bootstrap."),
    ) -> None:
        """Score predictions against a reference (two folders or CSVs) and write result.json.

        Cases are matched by id (file name without .nii.gz). A case whose prediction is
        missing, unreadable, NaN, on another grid (shape or spacing) or holding a label
        value the task does not allow is listed with the reason and scored with the worst
        value; the other cases are scored.
        """
        from medarena.evaluation.report import evaluation_report_html, write_html
        from medarena.evaluation.results import known_metric
        from medarena.evaluation.runner import evaluate, load_task_config
        from medarena.evaluation.subgroups import read_case_attributes, subgroup_report

        cfg: dict[str, Any] = load_task_config(config) if config else {}
        cfg.update(_settings(set_))
        if subgroups is not None and not _csv_list(by):
            raise InputError("--subgroups needs --by ATTRIBUTE[,ATTRIBUTE]", value=by)
        with Progress(
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            job = bar.add_task("cases", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(job, completed=done, total=total)

            result = evaluate(task, reference, prediction, cfg, workers=workers, progress=progress)
        analyses = []
        if subgroups is not None:
            attrs = read_case_attributes(subgroups)
            metrics = _csv_list(subgroup_metrics) or [
                m for m in result.metric_names() if known_metric(m)
            ]
            analyses = subgroup_report(
                result.cases,
                attrs,
                metrics=metrics,
                by=_csv_list(by),
                bootstrap=bootstrap,
                seed=seed,
            )
            result.subgroups = [a.model_dump(mode="json") for a in analyses]
        result.save(out)

        table = Table(title=f"{task}: {len(result.cases)} cases")
        for col in ("metric", "mean", "std", "median", "n"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for name, agg in list(result.aggregate.items())[:25]:
            table.add_row(name, _fmt(agg.mean), _fmt(agg.std), _fmt(agg.median), str(agg.n))
        console.print(table)
        for name, value in list(result.dataset_metrics.items())[:25]:
            console.print(f"  {name} = {_fmt(value)}", highlight=False)
        for a in analyses:
            groups = ", ".join(f"{g.value}: {_fmt(g.mean)} (n={g.n})" for g in a.groups)
            console.print(f"  {a.metric} by {a.attribute}: {groups}", highlight=False, markup=False)
        if result.missing:
            console.print(f"[yellow]{len(result.missing)} missing prediction(s)[/] (worst value)")
        for cid, why in result.failed.items():
            console.print(f"[red]failed[/] {cid}: {why}", highlight=False, markup=False)
        console.print(f"wrote {out}", highlight=False, markup=False)
        if report is not None:
            write_html(evaluation_report_html(result, subgroups=analyses), report)
            console.print(f"wrote {report}", highlight=False, markup=False)

    @app.command("rank")
    @handle_errors
    def rank_cmd(
        results: list[Path] = typer.Argument(..., help="result.json files, one per team."),
        scheme: str = typer.Option(
            "aggregate-then-rank",
            "--scheme",
            help="aggregate-then-rank, rank-then-aggregate, test-then-rank or multi-metric.",
        ),
        metric: str | None = typer.Option(None, "--metric", help="Metric to rank on."),
        metrics: str | None = typer.Option(
            None, "--metrics", help="Comma-separated metrics (multi-metric scheme)."
        ),
        weights: str | None = typer.Option(
            None, "--weights", help="Multi-metric weights, e.g. dice=0.5,fpv_ml=0.25,fnv_ml=0.25."
        ),
        aggregate: str = typer.Option("mean", "--aggregate", help="mean or median."),
        missing: str = typer.Option(
            "worst", "--missing", help="worst (default) or drop cases some team lacks."
        ),
        alpha: float = typer.Option(0.05, "--alpha", help="Significance level (test-then-rank)."),
        bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Case resamples (0: none)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
        name: list[str] = typer.Option(
            [], "--name", help="FILE_STEM=TEAM to rename a team (default: the file stem)."
        ),
        out: Path | None = typer.Option(None, "--out", help="Write ranking.json here."),
        report: Path | None = typer.Option(None, "--report", help="Write an HTML report here."),
    ) -> None:
        """Rank teams from their result.json files, with bootstrap rank stability."""
        from medarena.evaluation.ranking import RankingConfig, rank_results
        from medarena.evaluation.report import ranking_report_html, write_html
        from medarena.evaluation.results import EvaluationResult

        names = {k: str(v) for k, v in _settings(name).items()}
        loaded: dict[str, EvaluationResult] = {}
        for path in results:
            team = names.get(path.stem, path.stem)
            if team in loaded:
                raise InputError("two result files map to the same team", path=path, value=team)
            loaded[team] = EvaluationResult.load(path)
        w = {k: float(v) for k, v in _settings(_csv_list(weights)).items()} or None
        cfg = RankingConfig.model_validate(
            {
                "scheme": scheme,
                "metric": metric,
                "metrics": _csv_list(metrics),
                "weights": w,
                "aggregate": aggregate,
                "missing": missing,
                "alpha": alpha,
                "bootstrap": bootstrap,
                "seed": seed,
            }
        )
        ranking = rank_results(loaded, cfg)
        table = Table(title=f"{ranking.scheme} on {', '.join(ranking.metrics)}")
        for col in ("rank", "team", "score", "missing", "rank interval", "P(rank 1)"):
            table.add_column(col, justify="left" if col == "team" else "right")
        for t in ranking.teams:
            interval = f"{t.rank_interval[0]}-{t.rank_interval[1]}" if t.rank_interval else ""
            p1 = _fmt(t.rank_frequencies[0]) if t.rank_frequencies else ""
            table.add_row(str(t.rank), t.team, _fmt(t.score), str(t.n_missing), interval, p1)
        console.print(table)
        console.print(f"missing values: {ranking.missing_rule}", highlight=False, markup=False)
        if ranking.kendall_tau_median is not None:
            console.print(f"median Kendall's tau-b vs bootstrap: {ranking.kendall_tau_median:.3f}")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(ranking.model_dump_json(indent=2) + "\n", encoding="utf-8")
            console.print(f"wrote {out}", highlight=False, markup=False)
        if report is not None:
            write_html(ranking_report_html(ranking, loaded), report)
            console.print(f"wrote {report}", highlight=False, markup=False)

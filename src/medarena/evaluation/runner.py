"""Evaluate a folder (or CSV) of predictions against a reference: the `medarena evaluate` engine.

:func:`evaluate` matches cases by id, scores them with the task adapter of
:mod:`medarena.evaluation.tasks` (image cases spread over a process pool, each worker reading
its own files), fills missing and failed cases with the metric's worst value, aggregates and
returns an :class:`~medarena.evaluation.results.EvaluationResult`. No database, no server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from medarena.errors import ConfigError, InputError
from medarena.evaluation import tasks as tasks_mod
from medarena.evaluation.results import EvaluationResult, aggregate_cases, metric_spec

logger = logging.getLogger(__name__)

# progress(done, total) is called after each scored case.
Progress = Callable[[int, int], None]


def available_tasks() -> list[str]:
    """Task names :func:`evaluate` accepts."""
    return sorted([*tasks_mod.TABLE_TASKS, *tasks_mod.IMAGE_TASKS])


def task_config(
    task: str, config: Mapping[str, Any] | tasks_mod.TaskConfig | None = None
) -> tasks_mod.TaskConfig:
    """Validated configuration model of ``task`` from a dict (or an existing model)."""
    if task in tasks_mod.TABLE_TASKS:
        model: type[tasks_mod.TaskConfig] = tasks_mod.TABLE_TASKS[task][0]
    elif task in tasks_mod.IMAGE_TASKS:
        model = tasks_mod.IMAGE_TASKS[task][0]
    else:
        raise InputError(f"unknown task; choose one of {', '.join(available_tasks())}", value=task)
    if isinstance(config, tasks_mod.TaskConfig):
        if not isinstance(config, model):
            raise InputError(
                f"configuration is a {type(config).__name__}, task {task} needs a {model.__name__}"
            )
        return config
    return model.model_validate(dict(config or {}))


def load_task_config(path: str | Path) -> dict[str, Any]:
    """Task configuration dict from a YAML file (validated later against the task's model)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the task configuration ({exc.strerror})", path=p) from None
    except yaml.YAMLError as exc:
        raise InputError(f"task configuration is not valid YAML ({exc})", path=p) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("task configuration must be a mapping of settings", path=p)
    return data


def match_cases(
    reference: Path, prediction: Path, *, folders_as_cases: bool = False
) -> tuple[dict[str, Path], dict[str, Path]]:
    """Case id -> path on both sides. Reference cases are NIfTI files, or sub-folders when
    ``folders_as_cases`` (dose); predictions are always NIfTI files."""
    if not reference.is_dir():
        raise InputError("reference must be a folder of cases", path=reference)
    if not prediction.is_dir():
        raise InputError("prediction must be a folder of NIfTI files", path=prediction)
    ref = _cases_in(reference, folders=folders_as_cases)
    if not ref:
        raise InputError(
            "reference folder holds no case", path=reference, hint="expected <case>.nii.gz files"
        )
    return ref, _cases_in(prediction, folders=False)


def _cases_in(folder: Path, *, folders: bool) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        cid = (
            p.name
            if (folders and p.is_dir())
            else (tasks_mod.case_id_of(p) if p.is_file() and not folders else None)
        )
        if cid is None or cid.startswith("."):
            continue
        if cid in out:
            raise InputError(
                f"two files for case {cid!r}", path=folder, value=[out[cid].name, p.name]
            )
        out[cid] = p
    return out


def _fill_worst(
    cases: dict[str, dict[str, float]],
    ids: list[str],
    worst_overrides: Mapping[str, float],
    notes: list[str],
    case_worst: Callable[[str], Mapping[str, float | None] | None] | None = None,
) -> None:
    """Give cases without scores the worst value of every metric.

    Metric names: the task's per-case worst values (``case_worst``, see
    :func:`tasks.case_worst_values`: the metrics that case would have had), else every
    registered metric seen on the scored cases. Worst value: task config ``worst_values``,
    else the task's per-case value, else the registry's, else (metric without a finite
    worst) the worst value scored on this submission's other cases.
    """
    if not ids:
        return
    seen_names: dict[str, None] = {}
    for v in cases.values():
        for k in v:
            seen_names.setdefault(k, None)
    noted: set[str] = set()

    def worst_of(name: str, task_value: float | None, known: bool) -> float | None:
        if name in worst_overrides:
            return worst_overrides[name]
        if task_value is not None:
            return task_value
        try:
            spec = metric_spec(name)
        except InputError:
            return None if not known else math.nan
        if spec.worst is not None:
            return spec.worst
        seen = [v[name] for v in cases.values() if name in v and not math.isnan(v[name])]
        if not seen:
            return math.nan
        if name not in noted:
            noted.add(name)
            notes.append(
                f"{name}: no fixed worst value; missing/failed cases take the worst scored case"
            )
        return max(seen) if not spec.higher_is_better else min(seen)

    # computed before any case is filled, so filled values never count as "scored"
    filled: dict[str, dict[str, float]] = {}
    generic: dict[str, float] | None = None
    for cid in ids:
        per_case = case_worst(cid) if case_worst is not None else None
        if per_case is not None:
            row: dict[str, float] = {}
            for name, value in per_case.items():
                w = worst_of(name, value, known=True)
                if w is not None:
                    row[name] = w
            filled[cid] = row
            continue
        if generic is None:
            generic = {}
            for name in seen_names:
                w = worst_of(name, None, known=False)
                if w is not None:
                    generic[name] = w  # names the registry does not know stay absent
        filled[cid] = dict(generic)
    cases.update(filled)


def evaluate(
    task: str,
    reference: str | Path,
    prediction: str | Path,
    config: Mapping[str, Any] | tasks_mod.TaskConfig | None = None,
    *,
    workers: int = 1,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Score ``prediction`` against ``reference`` for ``task``; see docs/evaluation.md.

    Missing predictions and failed cases (bad file, wrong grid, NaN, unexpected label) are
    listed in ``missing`` / ``failed`` and take the worst value of each metric; all other
    cases are scored. Errors that concern the whole input (no reference, unknown task, bad
    configuration) raise :class:`InputError`.
    """
    try:
        cfg = task_config(task, config)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid {task} configuration: {problems}") from None
    ref, pred = Path(reference), Path(prediction)
    if task in tasks_mod.TABLE_TASKS:
        for p, side in ((ref, "reference"), (pred, "prediction")):
            if not p.is_file():
                raise InputError(f"{side} of task {task} must be a CSV file", path=p)
        outcome = tasks_mod.TABLE_TASKS[task][1](ref, pred, cfg)
        if progress is not None:
            progress(len(outcome.cases), len(outcome.cases))
        return _result(
            task,
            cfg,
            outcome.cases,
            outcome.missing,
            outcome.failed,
            outcome.dataset_metrics,
            outcome.notes,
        )

    ref_cases, pred_cases = match_cases(ref, pred, folders_as_cases=task == "dose")
    missing = [c for c in ref_cases if c not in pred_cases]
    todo = [c for c in ref_cases if c in pred_cases]
    notes: list[str] = []
    extra = set(pred_cases) - set(ref_cases)
    if extra:
        notes.append(f"{len(extra)} prediction file(s) without a reference case were ignored")
    cfg_dict = cfg.model_dump(mode="json")
    cases: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}
    done = 0

    def record(res: tuple[str, dict[str, float] | None, str | None]) -> None:
        nonlocal done
        cid, metrics, reason = res
        if metrics is not None:
            cases[cid] = metrics
        else:
            failed[cid] = reason or "failed"
            logger.info("a case failed validation")
        done += 1
        if progress is not None:
            progress(done, len(todo))

    if workers <= 1 or len(todo) <= 1:
        for cid in todo:
            record(
                tasks_mod.score_image_case(
                    task, cid, str(ref_cases[cid]), str(pred_cases[cid]), cfg_dict
                )
            )
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(
                    tasks_mod.score_image_case,
                    task,
                    cid,
                    str(ref_cases[cid]),
                    str(pred_cases[cid]),
                    cfg_dict,
                )
                for cid in todo
            ]
            for fut in as_completed(futures):
                record(fut.result())
    dataset: dict[str, float] = {}
    if task == "dose" and cases:
        from medarena.evaluation.dose import openkbp_scores

        # OpenKBP scores of the submitted cases; missing/failed ones are listed beside them.
        dataset = openkbp_scores(cases.values())
    _fill_worst(
        cases,
        [*missing, *failed],
        cfg.worst_values,
        notes,
        lambda cid: tasks_mod.case_worst_values(task, ref_cases[cid], cfg),
    )
    ordered = {c: cases[c] for c in ref_cases if c in cases}
    return _result(task, cfg, ordered, missing, failed, dataset, notes)


def _result(
    task: str,
    cfg: tasks_mod.TaskConfig,
    cases: dict[str, dict[str, float]],
    missing: list[str],
    failed: dict[str, str],
    dataset: dict[str, float],
    notes: list[str],
) -> EvaluationResult:
    if missing:
        notes.append(f"{len(missing)} case(s) without a prediction scored with the worst value")
    if failed:
        notes.append(f"{len(failed)} case(s) failed validation and scored with the worst value")
    return EvaluationResult(
        task=task,
        cases=cases,
        aggregate=aggregate_cases(cases),
        missing=sorted(missing),
        failed=dict(sorted(failed.items())),
        config=cfg.model_dump(mode="json"),
        dataset_metrics=dataset,
        notes=notes,
    )

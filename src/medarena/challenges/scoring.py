"""The scoring job: evaluate one submission against the hidden reference, write it once.

The handler :func:`score_submission` (job kind ``score_submission``, registered in
:data:`HANDLERS`) runs in a worker:

1. it reads the submission, the challenge's current spec and the scored subset's cases;
   a submission already scored for this spec revision is left alone (a re-claimed job
   after a crash must not score twice);
2. marks the submission ``running`` (fenced: only while this attempt holds the job);
3. materialises the reference in a private temporary folder: the label map of every case
   (image tasks) or a CSV of the case-level labels (table tasks; for detection, every
   nodule and excluded finding of the case's ``findings`` object), and the predictions from
   the stored archive, extracted again with every safety check;
4. runs :func:`medarena.evaluation.runner.evaluate`, reporting progress per case; when
   ``settings.dask_address`` (MEDARENA_DASK_ADDRESS) is set, the cases of an image task
   are scored on that Dask cluster instead (:func:`evaluate_cases`), which needs the data
   dir's ``work`` folder on a file system the cluster's workers share;
5. stores result.json in the object store and, in one fenced transaction that also marks
   the job done, writes the submission's scores; a model submission scored on a public
   subset then asks for its explanations (a job of its own,
   :mod:`medarena.challenges.explanations`). A result without a value of the track's
   primary metric (every case failed, e.g. image-to-image slices smaller than SSIM's 7x7
   window) is never stored as "scored": the submission fails, naming the metric and the
   cases (:class:`NoPrimaryScore`).

Messages that reach the team never name the reference: a per-case failure caused by the
reference side is replaced by a neutral text, and paths of the temporary folders are cut
down to file names. A failure caused by the participant's files (the whole evaluation
refuses them) fails the submission at once with the reason (no retry); any other error is
retried by the worker, and after the last attempt the submission fails with a neutral
"internal error" message while the log keeps the details for the operators.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.orm import Session

from medarena.challenges.archives import extract_archive
from medarena.challenges.data import subset_cases
from medarena.challenges.explanations import request_explanations
from medarena.challenges.models import model_file, predict_cases
from medarena.challenges.service import find_track_phase, load_spec, subset_info
from medarena.challenges.submissions import INTERNAL_FAILURE as INTERNAL_PROBLEM
from medarena.challenges.submissions import SCORE_JOB_KIND
from medarena.config import get_settings
from medarena.datasets import dose as dose_ref
from medarena.datasets import findings as findings_ref
from medarena.db.platform_models import Challenge, Submission
from medarena.errors import ConfigError, InputError, UserInputError
from medarena.evaluation import tasks as tasks_mod
from medarena.evaluation.results import EvaluationResult
from medarena.evaluation.runner import Progress, _fill_worst, _result, evaluate, match_cases
from medarena.evaluation.runner import task_config as make_task_config
from medarena.jobs import JobContext
from medarena.jobs.fanout import map_cases
from medarena.jobs.queue import on_final_failure
from medarena.storage import LocalObjectStore, open_store

logger = logging.getLogger(__name__)

REFERENCE_PROBLEM = "the reference of this case could not be read; the organizers can see why"
_LABEL_ROLES = ("label", "seg")


def _sanitise(text: str, ref_dir: Path, pred_dir: Path) -> str | None:
    """A message fit for the team: None when it concerns the reference."""
    if str(ref_dir) in text:
        return None
    return text.replace(str(pred_dir) + "/", "").replace(str(pred_dir), "predictions")


def materialise_reference(store: LocalObjectStore, cases: list[Any], task: str, dest: Path) -> Path:
    """Write the reference of ``cases`` under ``dest``: a folder of label maps (of case
    folders for dose, see :mod:`medarena.datasets.dose`) or a CSV (for detection, the
    findings of :mod:`medarena.datasets.findings`, excluded ones flagged).

    Returns the path to give :func:`evaluate` as its reference. A case without a label
    object (image tasks) is an organizer's data problem and raises RuntimeError (retried,
    then an internal failure), never a message to the team.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if task == "detection":
        # one row per nodule and per excluded finding (datasets.findings objects)
        return findings_ref.write_reference_csv(store, cases, dest / "reference.csv")
    if task in tasks_mod.TABLE_TASKS:
        columns = sorted({k for c in cases for k in c.labels})
        path = dest / "reference.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["case_id", *columns])
            for c in cases:
                w.writerow(
                    [c.case_key, *("" if c.labels.get(k) is None else c.labels[k] for k in columns)]
                )
        return path
    folder = dest / "reference"
    folder.mkdir()
    if task == "dose":
        # one folder per case: dose, possible-dose mask, structures (datasets.dose roles)
        for c in cases:
            dose_ref.write_reference_folder(store, c, folder)
        return folder
    for c in cases:
        labels = [o for o in c.objects if o.role in _LABEL_ROLES]
        if len(labels) != 1:
            raise RuntimeError(
                f"case {c.case_key!r} has {len(labels)} label objects; exactly one is needed"
            )
        store.copy_to(labels[0].digest, folder / f"{c.case_key}.nii.gz")
    return folder


def _prediction_path(files_dir: Path, task: str) -> Path:
    if task in tasks_mod.TABLE_TASKS:
        csvs = sorted(p for p in files_dir.iterdir() if p.name.lower().endswith(".csv"))
        if len(csvs) != 1:
            raise UserInputError(f"expected exactly one CSV file, found {len(csvs)}")
        return csvs[0]
    return files_dir


def _set(
    ctx: JobContext,
    submission_id: int,
    *,
    final: bool,
    result: Mapping[str, Any] | None = None,
    **values: Any,
) -> None:
    with ctx.fenced(final=final, result=result) as s:
        s.execute(update(Submission).where(Submission.id == submission_id).values(**values))


def _score_case(
    item: tuple[str, str, str, str, dict[str, Any]],
) -> tuple[str, dict[str, float] | None, str | None]:
    """One case for :func:`map_cases` (one picklable argument): the engine's own scorer."""
    return tasks_mod.score_image_case(*item)


def evaluate_cases(
    task: str,
    reference: Path,
    prediction: Path,
    config: Mapping[str, Any] | None,
    *,
    progress: Progress | None = None,
    dask_address: str | None = None,
) -> EvaluationResult:
    """:func:`evaluate`, with an image task's cases fanned out to a Dask cluster if given.

    Without an address, or for table and dose tasks, this is :func:`evaluate` itself.
    With one, every case is scored by :func:`medarena.evaluation.tasks.score_image_case`
    on the cluster (through :func:`medarena.jobs.fanout.map_cases`), and the result is
    assembled exactly as :func:`evaluate` does (worst values for missing and failed
    cases, the same aggregates), so both paths give the same result.
    """
    if not dask_address or task not in tasks_mod.IMAGE_TASKS or task == "dose":
        return evaluate(task, reference, prediction, config, progress=progress)
    try:
        cfg = make_task_config(task, config)
    except ValidationError as exc:
        raise ConfigError(f"invalid {task} configuration: {exc}") from None
    ref_cases, pred_cases = match_cases(reference, prediction)
    missing = [c for c in ref_cases if c not in pred_cases]
    todo = [c for c in ref_cases if c in pred_cases]
    notes: list[str] = []
    extra = set(pred_cases) - set(ref_cases)
    if extra:
        notes.append(f"{len(extra)} prediction file(s) without a reference case were ignored")
    cfg_dict = cfg.model_dump(mode="json")
    items = [(task, c, str(ref_cases[c]), str(pred_cases[c]), cfg_dict) for c in todo]
    cases: dict[str, dict[str, float]] = {}
    failed: dict[str, str] = {}
    for cid, metrics, reason in map_cases(
        _score_case, items, address=dask_address, progress=progress
    ):
        if metrics is not None:
            cases[cid] = metrics
        else:
            failed[cid] = reason or "failed"
    # the runner's own filling and assembly (private helpers: one definition of the rules)
    _fill_worst(
        cases,
        [*missing, *failed],
        cfg.worst_values,
        notes,
        lambda cid: tasks_mod.case_worst_values(task, ref_cases[cid], cfg),
    )
    ordered = {c: cases[c] for c in ref_cases if c in cases}
    return _result(task, cfg, ordered, missing, failed, {}, notes)


# per-case values that describe the reference alone (a team sees its scores even on a
# hidden subset: the mean nodule count would tell it how many nodules the hidden scans hold)
REFERENCE_ONLY_METRICS = frozenset({"n_nodules"})


def submission_scores(result: EvaluationResult) -> dict[str, float]:
    """A submission's metric values: the mean of every per-case metric (but the
    reference-only counts), and the dataset-level metrics that have no per-case value
    (detection CPM, classification AUC)."""
    scores = {k: a.mean for k, a in result.aggregate.items() if k not in REFERENCE_ONLY_METRICS}
    for k, v in result.dataset_metrics.items():
        scores.setdefault(k, v)
    return scores


class NoPrimaryScore(UserInputError):
    """The evaluation gave no value of the track's primary metric: the submission fails.

    A submission is never "scored" without its primary score (it could not be ranked).
    Not retried (the same files give the same result) and, since the cause may be the
    track's data as well as the team's files, not counted against the team's limits.
    """


def no_primary_reason(metric: str, result: EvaluationResult, shown: int = 10) -> str:
    """Why ``metric`` has no value: the cases that failed or are missing, with a reason."""
    parts = [f"{cid}: {why}" for cid, why in result.failed.items()]
    parts += [f"{cid}: no prediction" for cid in result.missing]
    if not parts:
        return (
            f"no value of the primary metric {metric!r} was computed, so this submission "
            "has no score; the organizers must check the track's metrics"
        )
    more = f"; and {len(parts) - shown} more" if len(parts) > shown else ""
    return (
        f"no value of the primary metric {metric!r} could be computed, so this "
        f"submission has no score ({len(parts)} case(s) failed: "
        + "; ".join(parts[:shown])
        + more
        + ")"
    )


def score_submission(ctx: JobContext) -> dict[str, Any]:
    """Job handler: score the submission named in the payload (see the module docstring)."""
    sub_id = int(ctx.payload["submission_id"])
    revision = int(ctx.payload.get("spec_revision", 1))
    settings = ctx.settings or get_settings()
    store = open_store(settings)
    with ctx.session_factory() as s:
        sub = s.get(Submission, sub_id)
        if sub is None:
            return {"skipped": "submission no longer exists"}
        if sub.status in ("scored", "failed") and sub.score_revision >= revision:
            return {"skipped": f"already {sub.status} for spec revision {sub.score_revision}"}
        challenge = s.get(Challenge, sub.challenge_id)
        assert challenge is not None
        spec = load_spec(challenge)
        track, phase = find_track_phase(spec, sub.track_slug, sub.phase_slug)
        subset = spec.scored_subset(track, phase)
        cases = subset_cases(s, track.dataset, track.split, subset)
        hidden = subset_info(s, track.dataset, track.split, subset).hidden
        archive_digest, first_run = sub.archive_digest, sub.status == "queued"
        failed_runs_count = phase.failed_runs_count
    if first_run:
        _set(ctx, sub_id, final=False, status="running", progress=0.0)
    work = Path(settings.data_dir) / "work"
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"score-{sub_id}-", dir=work))
    ref_dir, pred_dir = tmp / "ref", tmp / "pred"
    try:
        reference = materialise_reference(store, cases, track.task, ref_dir)
        archive = tmp / "archive"
        store.copy_to(archive_digest, archive)
        extract_archive(archive, pred_dir)

        def progress(done: int, total: int) -> None:
            ctx.progress(min(1.0, done / total) if total else 1.0)

        if model_file(pred_dir) is not None:  # a model: its predictions, never stored
            prediction = predict_cases(
                pred_dir,
                store,
                cases,
                track,
                phase.model_limits,
                tmp / "model-pred",
                progress,
                hidden=hidden,  # a reason on a hidden case names the rule, not the values
            )
        else:
            prediction = _prediction_path(pred_dir, track.task)

        try:
            result = evaluate_cases(
                track.task,
                reference,
                prediction,
                track.task_config,
                progress=progress,
                dask_address=settings.dask_address,
            )
        except InputError as exc:
            msg = _sanitise(str(exc), ref_dir, pred_dir)
            if msg is None:
                raise RuntimeError(f"reference problem: {exc}") from None
            raise UserInputError(msg) from None
        result = _team_safe(result, ref_dir, pred_dir)
        scores = submission_scores(result)
        if scores.get(track.primary_metric) is None:
            raise NoPrimaryScore(no_primary_reason(track.primary_metric, result))
        digest = store.put_bytes(result.model_dump_json(indent=2).encode())
        _set(
            ctx,
            sub_id,
            final=True,
            result={"submission_id": sub_id, "result_digest": digest},
            status="scored",
            progress=1.0,
            error=None,
            result_digest=digest,
            primary_score=scores.get(track.primary_metric),
            scores=scores,
            score_revision=revision,
            scored_at=dt.datetime.now(dt.UTC),
        )
        logger.info("submission %d scored (spec revision %d)", sub_id, revision)
        if model_file(pred_dir) is not None:  # a separate job; it cannot fail this one
            request_explanations(ctx.session_factory, sub_id, revision)
        return {"submission_id": sub_id, "result_digest": digest}
    except InputError as exc:
        # The participant's input: fail now (the worker records the job as failed, no retry).
        # Without a primary score the cause may as well be the track's data: not counted.
        _set(
            ctx,
            sub_id,
            final=False,
            status="failed",
            error=str(exc),
            counts_toward_limit=failed_runs_count and not isinstance(exc, NoPrimaryScore),
            score_revision=revision,
        )
        raise
    except Exception:
        if ctx.attempt >= ctx.job.max_attempts:
            logger.exception("submission %d: last scoring attempt failed", sub_id)
            _set(
                ctx,
                sub_id,
                final=False,
                status="failed",
                error=INTERNAL_PROBLEM,
                counts_toward_limit=False,
                score_revision=revision,
            )
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _team_safe(result: EvaluationResult, ref_dir: Path, pred_dir: Path) -> EvaluationResult:
    """The result with per-case failure reasons that never describe the reference."""
    failed = {}
    for cid, reason in result.failed.items():
        msg = _sanitise(reason, ref_dir, pred_dir)
        failed[cid] = msg if msg is not None else REFERENCE_PROBLEM
        if msg is None:
            logger.warning("a reference case failed to load during scoring")
    notes = [n for n in result.notes if str(ref_dir) not in n]
    return result.model_copy(update={"failed": failed, "notes": notes})


def fail_unfinished_submission(session: Session, job_id: int, payload: Mapping[str, Any]) -> None:
    """Failure hook of the scoring job: its submission fails with a neutral message.

    Runs in the transaction that fails the job for good (the last attempt raised, or the
    worker was lost on it and the lease ran out). A submission the handler already
    finished (scored, or failed with the participant's reason) is left as it is.
    """
    sub_id = payload.get("submission_id")
    if not isinstance(sub_id, int):
        return
    res = session.execute(
        update(Submission)
        .where(Submission.id == sub_id, Submission.status.in_(("queued", "running")))
        .values(status="failed", error=INTERNAL_PROBLEM, counts_toward_limit=False)
        .execution_options(synchronize_session=False)
    )
    if getattr(res, "rowcount", 0):
        logger.error("submission %d failed: its scoring job %d failed for good", sub_id, job_id)


on_final_failure(SCORE_JOB_KIND, fail_unfinished_submission)

HANDLERS = {SCORE_JOB_KIND: score_submission}

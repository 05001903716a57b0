"""Which metric names a track's task emits, found by asking the evaluation engine.

A challenge spec names a track's ``metrics`` and ``primary_metric``; a name the engine never
emits (``dice/tumour`` where the engine writes ``tumour/dice``) would leave every
submission without a score. Rather than keep a second list of names that drifts from the
engine, :func:`emitted_metric_names` scores a tiny synthetic sample built from the track's
own ``task_config`` with :func:`medarena.evaluation.runner.evaluate` and collects the names
it produced: the per-case metrics (what boards aggregate) and the dataset-level ones
(classification AUC, detection CPM ...). The answer is cached per (task, config).
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import json
import logging
import tempfile
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medarena.evaluation import tasks as tasks_mod
from medarena.evaluation.runner import evaluate, task_config

logger = logging.getLogger(__name__)

_SHAPE = (10, 10, 10)
_CASES = ("a", "b", "c", "d")
_INVENTED_CLASSES = ("c0", "c1", "c2")
_INVENTED_LABELS = ("l1", "l2")


def _save(path: Path, arr: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))


def _label_pair(ref: Path, pred: Path, values: Iterable[int]) -> None:
    """One case whose reference and prediction hold every value in overlapping blocks."""
    r = np.zeros(_SHAPE, np.uint8)
    p = np.zeros(_SHAPE, np.uint8)
    for i, v in enumerate(sorted(values)):
        r[1 + 2 * i : 3 + 2 * i, 2:7, 2:7] = v
        p[1 + 2 * i : 3 + 2 * i, 3:8, 2:7] = v
    ref.mkdir(parents=True)
    pred.mkdir(parents=True)
    _save(ref / "a.nii.gz", r)
    _save(pred / "a.nii.gz", p)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _sample(task: str, cfg: Any, root: Path) -> tuple[Path, Path] | None:
    """Reference and prediction of a tiny valid sample for ``task``; None if unsupported."""
    ref, pred = root / "ref", root / "pred"
    if task == "segmentation":
        _label_pair(ref, pred, cfg.allowed() - {0})
    elif task == "brats":
        from medarena.evaluation.brats import BRATS_REGIONS

        _label_pair(ref, pred, BRATS_REGIONS[cfg.labels]["WT"])
    elif task == "autopet":
        _label_pair(ref, pred, (1,))
    elif task == "image-to-image":
        rng = np.random.default_rng(0)
        ref.mkdir()
        pred.mkdir()
        img = rng.uniform(1, 100, _SHAPE).astype(np.float32)
        _save(ref / "a.nii.gz", img)
        _save(pred / "a.nii.gz", img + rng.normal(0, 1, _SHAPE).astype(np.float32))
    elif task == "classification":
        ref, pred = root / "ref.csv", root / "pred.csv"
        if cfg.mode == "binary":
            _write_csv(
                ref, ["case_id", cfg.label_column], [[c, i % 2] for i, c in enumerate(_CASES)]
            )
            scores = [[c, 0.2 + 0.5 * (i % 2)] for i, c in enumerate(_CASES)]
            _write_csv(pred, ["case_id", "score"], scores)
        else:
            names = cfg.class_names or list(_INVENTED_CLASSES)
            k = len(names)
            _write_csv(
                ref, ["case_id", cfg.label_column], [[c, i % k] for i, c in enumerate(_CASES)]
            )
            rows = [
                [c, *(0.8 if j == i % k else 0.1 for j in range(k))] for i, c in enumerate(_CASES)
            ]
            _write_csv(pred, ["case_id", *names], rows)
    elif task == "multilabel":
        ref, pred = root / "ref.csv", root / "pred.csv"
        names = cfg.labels or list(_INVENTED_LABELS)
        truth = [[(i + j) % 2 for j in range(len(names))] for i in range(len(_CASES))]
        _write_csv(ref, ["case_id", *names], [[c, *truth[i]] for i, c in enumerate(_CASES)])
        rows = [[c, *(0.3 + 0.4 * t for t in truth[i])] for i, c in enumerate(_CASES)]
        _write_csv(pred, ["case_id", *names], rows)
    elif task == "regression":
        ref, pred = root / "ref.csv", root / "pred.csv"
        col = cfg.value_column
        _write_csv(ref, ["case_id", col], [[c, 10.0 + i] for i, c in enumerate(_CASES)])
        _write_csv(pred, ["case_id", col], [[c, 11.0 + i] for i, c in enumerate(_CASES)])
    elif task == "detection":
        ref, pred = root / "ref.csv", root / "pred.csv"
        _write_csv(
            ref,
            ["case_id", "x", "y", "z", "diameter_mm"],
            [[c, 10.0, 10.0, 10.0, 6.0] for c in _CASES],
        )
        _write_csv(
            pred,
            ["case_id", "x", "y", "z", "probability"],
            [[c, 10.5, 10.0, 10.0, 0.9] for c in _CASES] + [[c, 50, 50, 50, 0.2] for c in _CASES],
        )
    elif task == "dose":
        # one case folder: dose, possible-dose mask and every configured structure
        ref, pred = root / "ref", root / "pred"
        (ref / "a").mkdir(parents=True)
        pred.mkdir()
        dose = np.linspace(0.0, 70.0, int(np.prod(_SHAPE)), dtype=np.float32).reshape(_SHAPE)
        _save(ref / "a" / "dose.nii.gz", dose)
        _save(ref / "a" / "possible_dose_mask.nii.gz", np.ones(_SHAPE, np.uint8))
        for i, roi in enumerate(cfg.rois):
            mask = np.zeros(_SHAPE, np.uint8)
            mask[i % _SHAPE[0], :, :] = 1
            _save(ref / "a" / f"{roi}.nii.gz", mask)
        _save(pred / "a.nii.gz", dose + 1.0)
    else:
        return None
    return ref, pred


@lru_cache(maxsize=256)
def _emitted(task: str, config_json: str) -> tuple[str, ...] | None:
    config: dict[str, Any] = json.loads(config_json)
    cfg = task_config(task, config)
    if isinstance(cfg, tasks_mod.DetectionConfig):
        # the CPM interval's resamples do not change which names exist
        config = {**config, "bootstrap": 0}
    with tempfile.TemporaryDirectory(prefix="medarena-metric-names-") as tmp:
        paths = _sample(task, cfg, Path(tmp))
        if paths is None:
            return None
        try:
            result = evaluate(task, paths[0], paths[1], config, workers=1)
        except Exception:  # the engine refused the sample: do not block the organizer
            logger.warning("could not list the metric names of task %s", task, exc_info=True)
            return None
    invented = _invented_names(task, cfg)
    names = dict.fromkeys(
        _wildcard(n, invented) for n in [*result.metric_names(), *result.dataset_metrics]
    )
    return tuple(names)


def _invented_names(task: str, cfg: Any) -> set[str]:
    """Class/label names the sample made up because the config leaves them to the file."""
    if task == "classification" and cfg.mode == "multiclass" and not cfg.class_names:
        return set(_INVENTED_CLASSES)
    if task == "multilabel" and not cfg.labels:
        return set(_INVENTED_LABELS)
    return set()


def _wildcard(name: str, invented: set[str]) -> str:
    # "auc/c1" with an invented class c1 stands for "auc/<any class>"
    head, sep, tail = name.rpartition("/")
    return f"{head}/*" if sep and tail in invented else name


def is_emitted(name: str, names: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``names`` (``x/*`` entries accept any last part)."""
    return any(fnmatch.fnmatchcase(name, n) if n.endswith("/*") else name == n for n in names)


def emitted_metric_names(task: str, config: dict[str, Any]) -> tuple[str, ...] | None:
    """The metric names ``task`` with ``config`` emits, or None when they cannot be listed.

    The config must already be valid for the task (see ``runner.task_config``).
    """
    return _emitted(task, json.dumps(config, sort_keys=True, default=str))


def nearest(name: str, names: Iterable[str]) -> str | None:
    """The valid name closest to ``name`` (difflib), or None if none is close."""
    names = list(names)
    # a swapped "metric/structure" is the commonest slip: compare the parts as a set
    parts = set(name.split("/"))
    for n in names:
        if set(n.split("/")) == parts:
            return n
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.3)
    return close[0] if close else None


def describe_unknown(name: str, names: tuple[str, ...], task: str) -> str:
    """The message for a metric ``name`` the task does not emit."""
    hint = nearest(name, names)
    listed = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
    did_you_mean = f"did you mean {hint!r}? " if hint else ""
    return (
        f"{task} with this task_config emits no metric {name!r}; {did_you_mean}it emits: {listed}"
    )

"""Result of one evaluation (result.json) and the registry of metric directions.

result.json holds ``task``, ``cases`` (case id -> metric -> value), ``aggregate`` (metric ->
mean, std, median, n over cases), ``missing`` (case ids without a prediction), ``failed``
(case id -> reason), ``config`` (the task configuration used) and ``dataset_metrics``
(metrics of the whole test set such as AUC, CPM or the OpenKBP scores).

Non-finite values are written as the strings ``"Infinity"``, ``"-Infinity"`` and ``"NaN"``
so that the file stays strict JSON; :meth:`EvaluationResult.load` reads them back as floats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medarena.errors import InputError

# Result format version, bumped when a field changes meaning.
RESULT_VERSION = 1


class MetricSpec(BaseModel):
    """Direction and worst value of a metric, used for missing cases and for ranking."""

    model_config = ConfigDict(frozen=True)

    name: str
    higher_is_better: bool
    # None: the metric has no finite worst value (e.g. an absolute error); see docs.
    worst: float | None = None


# BraTS community penalty for a distance that cannot be computed (the diagonal of the
# 240 x 240 x 155 mm BraTS volume); used as the worst value of distance metrics.
BRATS_DISTANCE_PENALTY_MM = 373.12866

_SPECS: dict[str, MetricSpec] = {}


def register_metric(name: str, *, higher_is_better: bool, worst: float | None = None) -> None:
    """Add (or replace) a metric in the registry."""
    _SPECS[name] = MetricSpec(name=name, higher_is_better=higher_is_better, worst=worst)


for _n in ("dice", "iou", "nsd", "lesion_dice", "legacy_dice", "sensitivity", "specificity"):
    register_metric(_n, higher_is_better=True, worst=0.0)
for _n in ("hd", "hd95", "assd", "masd", "lesion_hd95", "legacy_hd95"):
    register_metric(_n, higher_is_better=False, worst=BRATS_DISTANCE_PENALTY_MM)
for _n in ("correct", "accuracy", "hamming_accuracy", "cpm", "auc", "f1", "kappa", "qwk"):
    register_metric(_n, higher_is_better=True, worst=0.0)
# LUNA16 sensitivities at the FROC operating points (detection.LUNA16_OPERATING_POINTS)
for _n in ("0.125", "0.25", "0.5", "1", "2", "4", "8"):
    register_metric(f"sens@{_n}", higher_is_better=True, worst=0.0)
register_metric("ssim", higher_is_better=True, worst=-1.0)
register_metric("psnr", higher_is_better=True, worst=None)
for _n in ("nmse", "mae", "rmse", "abs_error", "squared_error", "fpv", "fnv"):
    register_metric(_n, higher_is_better=False, worst=None)
for _n in ("dose_score", "dvh_score", "dvh_error", "fp_count", "n_false_positives"):
    register_metric(_n, higher_is_better=False, worst=None)
register_metric("n_detected", higher_is_better=True, worst=0.0)
# autoPET volumes in ml and BraTS 2023 lesion counts. The tasks give missing/failed cases
# their own worst values (tasks.case_worst_values); these specs give ranking the direction.
for _n in ("fpv_ml", "fnv_ml", "lesion_fn", "lesion_fp"):
    register_metric(_n, higher_is_better=False, worst=None)
register_metric("lesion_tp", higher_is_better=True, worst=0.0)
register_metric("fn_count", higher_is_better=False, worst=None)


def metric_spec(name: str) -> MetricSpec:
    """Spec of a metric name; a qualified name such as ``dice/WT`` or ``dvh_error/D_95/PTV70``
    uses the spec of its first known component (``dice``, ``dvh_error``).

    Raises InputError for a name the registry does not know.
    """
    if name in _SPECS:
        return _SPECS[name]
    for part in name.replace("/", " ").split():
        if part in _SPECS:
            s = _SPECS[part]
            return MetricSpec(name=name, higher_is_better=s.higher_is_better, worst=s.worst)
    # Names like "dice_WT" or "lesion_dice_TC": try the longest known prefix.
    for known in sorted(_SPECS, key=len, reverse=True):
        if name.startswith(known + "_"):
            s = _SPECS[known]
            return MetricSpec(name=name, higher_is_better=s.higher_is_better, worst=s.worst)
    raise InputError(
        "unknown metric: its direction (higher or lower is better) is not registered",
        value=name,
        hint="register it with medarena.evaluation.results.register_metric",
    )


def known_metric(name: str) -> bool:
    """Whether :func:`metric_spec` knows the metric."""
    try:
        metric_spec(name)
    except InputError:
        return False
    return True


class Aggregate(BaseModel):
    """Summary of one metric over the cases (NaN values, i.e. undefined, are left out)."""

    mean: float
    std: float
    median: float
    n: int


class EvaluationResult(BaseModel):
    """Everything one evaluation produced; serialised as result.json."""

    model_config = ConfigDict(ser_json_inf_nan="strings")

    version: int = RESULT_VERSION
    task: str
    cases: dict[str, dict[str, float]] = Field(default_factory=dict)
    aggregate: dict[str, Aggregate] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    dataset_metrics: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    subgroups: list[dict[str, Any]] = Field(
        default_factory=list, description="subgroup analyses (SubgroupAnalysis as dicts)"
    )

    def metric_names(self) -> list[str]:
        """Per-case metric names in first-seen order."""
        seen: dict[str, None] = {}
        for values in self.cases.values():
            for k in values:
                seen.setdefault(k, None)
        return list(seen)

    def save(self, path: str | Path) -> Path:
        """Write result.json (strict JSON, non-finite values as strings)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return p

    @classmethod
    def load(cls, path: str | Path) -> EvaluationResult:
        """Read a result.json written by :meth:`save`; names the file when it is not one."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"not a readable result.json ({exc})", path=p) from None
        if not isinstance(data, dict) or "task" not in data:
            raise InputError("not a result.json: no 'task' field", path=p)
        return cls.model_validate(data)


def aggregate_cases(
    cases: Mapping[str, Mapping[str, float]], metrics: Iterable[str] | None = None
) -> dict[str, Aggregate]:
    """Mean, std (population, ddof=0), median and n per metric, skipping NaN (undefined) values.

    +/-inf values are kept, so a mean may be infinite; n counts the non-NaN values.
    """
    names: list[str]
    if metrics is None:
        seen: dict[str, None] = {}
        for values in cases.values():
            for k in values:
                seen.setdefault(k, None)
        names = list(seen)
    else:
        names = list(metrics)
    out: dict[str, Aggregate] = {}
    for name in names:
        vals = np.array(
            [float(v[name]) for v in cases.values() if name in v and not math.isnan(v[name])],
            dtype=float,
        )
        if vals.size == 0:
            out[name] = Aggregate(mean=math.nan, std=math.nan, median=math.nan, n=0)
            continue
        with np.errstate(invalid="ignore"):
            out[name] = Aggregate(
                mean=float(np.mean(vals)),
                std=float(np.std(vals)),
                median=float(np.median(vals)),
                n=int(vals.size),
            )
    return out

"""Empty-mask policy: what each segmentation metric scores when a mask is empty.

Libraries disagree here (docs/metrics.md, "Empty masks"): MONAI returns NaN or inf, MedPy
raises, Metrics Reloaded mixes 1, 0 and NaN. A challenge must decide, so the decision is a
validated model that a challenge spec carries. Three cases exist per metric:

- ``both_empty``: neither prediction nor reference has foreground (a correct "nothing here");
- ``ref_empty``: only the reference is empty, so every predicted voxel is a false positive;
- ``pred_empty``: only the prediction is empty, so every reference voxel is missed.

Values are finite numbers, or ``"worst"`` for distance metrics, which resolves to
:attr:`EmptyPolicy.worst_distance_mm` (a fixed penalty such as BraTS's 374 mm, or
``"diagonal"``: the image diagonal in mm). NaN is refused, and a one-sided empty case must
score strictly worse than the both-empty case, so a false positive is never unpenalised.
Invalid values raise pydantic's ``ValidationError`` naming the metric, value and rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medarena.errors import ConfigError

EmptyCase = Literal["both_empty", "ref_empty", "pred_empty"]

#: Metrics where larger is better (bounded in [0, 1]).
OVERLAP_METRICS = ("dice", "iou", "nsd")
#: Metrics in mm where smaller is better.
DISTANCE_METRICS = ("hd", "hd95", "assd", "masd")
SEGMENTATION_METRICS = OVERLAP_METRICS + DISTANCE_METRICS


class EmptyRule(BaseModel):
    """Scores of one metric in the three empty cases."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    both_empty: float
    ref_empty: float | Literal["worst"]
    pred_empty: float | Literal["worst"]


_OVERLAP_DEFAULT = EmptyRule(both_empty=1.0, ref_empty=0.0, pred_empty=0.0)
_DISTANCE_DEFAULT = EmptyRule(both_empty=0.0, ref_empty="worst", pred_empty="worst")


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the diagonal of an image of ``shape`` voxels of size ``spacing``."""
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True)))


class EmptyPolicy(BaseModel):
    """Per-metric scores for empty masks; defaults follow Metrics Reloaded and BraTS.

    Defaults: both empty -> Dice 1, IoU 1, NSD 1, HD/HD95/ASSD/MASD 0; one side empty ->
    Dice/IoU/NSD 0 and every distance ``worst_distance_mm`` (default: the image diagonal).
    ``overrides`` replaces the rule of single metrics, e.g. ``{"dice": {"both_empty": 1,
    "ref_empty": 0, "pred_empty": 0}}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    worst_distance_mm: float | Literal["diagonal"] = Field(
        default="diagonal",
        description="Distance scored when one mask is empty: a number in mm, or 'diagonal' "
        "for the image diagonal in mm.",
    )
    overrides: dict[str, EmptyRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> EmptyPolicy:
        w = self.worst_distance_mm
        if w != "diagonal" and not (isinstance(w, float | int) and math.isfinite(w) and w > 0):
            raise ValueError(
                f"Invalid 'worst_distance_mm' value {w!r} - must be a positive finite number "
                "of mm or 'diagonal'"
            )
        for name, rule in self.overrides.items():
            if name not in SEGMENTATION_METRICS:
                raise ValueError(
                    f"Invalid empty-policy metric {name!r} - must be one of "
                    f"{', '.join(SEGMENTATION_METRICS)}"
                )
            _validate_rule(name, rule)
        return self

    def rule(self, metric: str) -> EmptyRule:
        """The rule of ``metric`` (override or default)."""
        if metric in self.overrides:
            return self.overrides[metric]
        if metric in OVERLAP_METRICS:
            return _OVERLAP_DEFAULT
        if metric in DISTANCE_METRICS:
            return _DISTANCE_DEFAULT
        raise ConfigError(f"Unknown segmentation metric {metric!r}")

    def worst_distance(self, shape: Sequence[int], spacing: Sequence[float]) -> float:
        """The distance penalty in mm for an image of ``shape`` and ``spacing``."""
        if self.worst_distance_mm == "diagonal":
            return image_diagonal_mm(shape, spacing)
        return float(self.worst_distance_mm)

    def value(
        self, metric: str, case: EmptyCase, shape: Sequence[int], spacing: Sequence[float]
    ) -> float:
        """Score of ``metric`` in empty ``case`` for an image of ``shape`` and ``spacing``."""
        v = getattr(self.rule(metric), case)
        if v == "worst":
            return self.worst_distance(shape, spacing)
        return float(v)


def _validate_rule(name: str, rule: EmptyRule) -> None:
    values = (rule.both_empty, rule.ref_empty, rule.pred_empty)
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(
                f"Invalid empty-policy value {v!r} for {name!r} - must be finite (NaN and "
                "inf would silently drop or break aggregation)"
            )
    for case in ("ref_empty", "pred_empty"):
        v = getattr(rule, case)
        if name in OVERLAP_METRICS:
            if v == "worst" or not v < rule.both_empty:
                raise ValueError(
                    f"Invalid empty-policy value {v!r} for {name!r}.{case} - must be a number "
                    f"below both_empty ({rule.both_empty}) so a one-sided error is penalised"
                )
        elif v != "worst" and not v > rule.both_empty:
            raise ValueError(
                f"Invalid empty-policy value {v!r} for {name!r}.{case} - must be 'worst' or a "
                f"distance above both_empty ({rule.both_empty}) so a one-sided error is penalised"
            )


#: BraTS conventions: both empty -> Dice 1, HD95 0; one empty -> Dice 0, HD95 374 mm.
BRATS_POLICY = EmptyPolicy(worst_distance_mm=374.0)

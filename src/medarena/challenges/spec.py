"""The challenge spec: a YAML file validated into typed models (tracks, phases, rules, data).

:func:`parse_spec` reads YAML text into a :class:`ChallengeSpec`. Every problem it finds
(YAML syntax, duplicate keys, a missing or wrong field) is reported with the line of the
YAML node it concerns, mapped from pydantic's error location through the node marks of the
composed YAML tree, so an organizer can go straight to the line to fix.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import markdown_it
import nh3
import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from medarena.challenges.metric_names import describe_unknown, emitted_metric_names, is_emitted
from medarena.errors import InputError
from medarena.evaluation.ranking import Aggregation, MissingRule, RankingConfig, Scheme
from medarena.evaluation.results import known_metric
from medarena.evaluation.runner import available_tasks, task_config
from medarena.yamlerrors import YamlProblem, parse_mapping, problem_at

SLUG_RE = r"^[a-z0-9][a-z0-9-]{0,62}$"
Visibility = Literal["public", "private_until_close", "hidden"]
PhaseState = Literal["upcoming", "open", "closed"]


class _Strict(BaseModel):
    # A typo in a field name must be an error, not a silently ignored key.
    model_config = ConfigDict(extra="forbid", frozen=True)


class RankingOptions(_Strict):
    """How a track's leaderboard ranks teams (see medarena.evaluation.ranking)."""

    scheme: Scheme = "aggregate-then-rank"
    aggregate: Aggregation = "mean"
    missing: MissingRule = "worst"
    metrics: list[str] = Field(
        default_factory=list, description="Metrics of the multi-metric scheme."
    )
    weights: dict[str, float] | None = None
    alpha: float = Field(0.05, gt=0, lt=1)
    bootstrap: int = Field(1000, ge=0, le=100_000, description="Case resamples for rank CIs.")
    seed: int = 0
    confidence: float = Field(0.95, gt=0, lt=1)


class Track(_Strict):
    """One clinical task of a challenge: what is predicted, on which data, scored how."""

    slug: str = Field(pattern=SLUG_RE)
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    task: str = Field(description="Task type of the evaluation engine, e.g. segmentation.")
    task_config: dict[str, Any] = Field(
        default_factory=dict, description="Options of the task (medarena evaluate --config)."
    )
    metrics: list[str] = Field(default_factory=list, description="Metrics shown on boards.")
    primary_metric: str
    ranking: RankingOptions = RankingOptions()
    dataset: str = Field(min_length=1)
    split: str = Field(min_length=1)
    train_subset: str = Field("train", description="Subset downloadable with its labels.")
    reference_subset: str = Field(
        "test", description="Subset scored by default (a phase may name another)."
    )

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in available_tasks():
            raise ValueError(f"unknown task {v!r}; choose one of {', '.join(available_tasks())}")
        return v

    @field_validator("task_config")
    @classmethod
    def _valid_task_config(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        task = info.data.get("task")
        if task is None:  # the task itself was wrong; that error is reported already
            return v
        try:
            task_config(task, v)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ValueError(f"task {task} {where or 'options'}: {msg}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Track:
        self._check_metric_names()
        if self.ranking.scheme == "multi-metric" and not self.ranking.metrics:
            raise ValueError("ranking.scheme multi-metric needs ranking.metrics")
        if self.train_subset == self.reference_subset:
            raise ValueError(
                f"train_subset and reference_subset are both {self.train_subset!r}: "
                "a scored subset must not be the downloadable training subset"
            )
        return self

    def _check_metric_names(self) -> None:
        """Every metric the track names must be one its task emits and have a direction."""
        try:
            names = emitted_metric_names(self.task, self.task_config)
        except (InputError, ValidationError):
            names = None  # a bad task or task_config is reported by its own validator
        named: list[tuple[tuple[str | int, ...], str]] = [
            (("primary_metric",), self.primary_metric),
            *((("metrics", i), m) for i, m in enumerate(self.metrics)),
            *((("ranking", "metrics", i), m) for i, m in enumerate(self.ranking.metrics)),
        ]
        for loc, name in named:
            if names is not None and not is_emitted(name, names):
                message = describe_unknown(name, names, self.task)
            elif not known_metric(name):
                message = f"metric {name!r} has no registered direction (higher or lower)"
            else:
                continue
            # the loc travels in ctx so that parse_spec can name the exact YAML line
            raise PydanticCustomError(
                "unknown_metric", "{message}", {"message": message, "loc": list(loc)}
            )

    def ranking_config(self) -> RankingConfig:
        """The evaluation engine's ranking configuration of this track."""
        r = self.ranking
        return RankingConfig(
            scheme=r.scheme,
            metric=None if r.scheme == "multi-metric" else self.primary_metric,
            metrics=list(r.metrics),
            weights=r.weights,
            aggregate=r.aggregate,
            alpha=r.alpha,
            missing=r.missing,
            bootstrap=r.bootstrap,
            seed=r.seed,
            confidence=r.confidence,
        )


class ModelLimits(_Strict):
    """Limits of a model submission (an ONNX file run by ONNX Runtime in the worker)."""

    max_model_mb: float = Field(100, gt=0, le=10_000, description="Size of model.onnx.")
    time_per_case_s: float = Field(60, gt=0, le=3600, description="Inference time per case.")
    memory_mb: int = Field(4096, ge=64, le=1_000_000, description="Memory of the worker's run.")


SubmissionKind = Literal["predictions", "model"]


class Phase(_Strict):
    """A round of the challenge (preliminary, final ...): when, what is scored, limits."""

    slug: str = Field(pattern=SLUG_RE)
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    opens: AwareDatetime
    closes: AwareDatetime
    tracks: list[str] | None = Field(None, description="Tracks open in this phase (default all).")
    scored_subset: str | None = Field(
        None, description="Subset of each track's split scored here (default: reference_subset)."
    )
    leaderboard: Visibility = "public"
    submissions_per_day: int | None = Field(None, ge=1, description="Per team, rolling 24 h.")
    submissions_total: int | None = Field(None, ge=1, description="Per team, whole phase.")
    failed_runs_count: bool = Field(False, description="Whether failed runs use up the limits.")
    requires_phase: str | None = Field(
        None, description="Earlier phase in which a team needs a scored submission first."
    )
    max_upload_mb: float = Field(500, gt=0, le=100_000)
    best_or_latest: Literal["best", "latest"] = "best"
    submission_kinds: list[SubmissionKind] = Field(
        default_factory=lambda: list[SubmissionKind](["predictions"]),
        min_length=1,
        description="What a team may upload: predictions archives and/or ONNX models.",
    )
    model_limits: ModelLimits = ModelLimits()

    @field_validator("closes")
    @classmethod
    def _after_opens(cls, v: dt.datetime, info: ValidationInfo) -> dt.datetime:
        opens = info.data.get("opens")
        if opens is not None and v <= opens:
            raise ValueError(f"closes ({v.isoformat()}) must be after opens ({opens.isoformat()})")
        return v

    def state(self, now: dt.datetime | None = None) -> PhaseState:
        """Whether the phase is upcoming, open or closed at ``now`` (default: current time)."""
        t = now or dt.datetime.now(dt.UTC)
        if t < self.opens:
            return "upcoming"
        return "open" if t < self.closes else "closed"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class DataAccess(_Strict):
    """What participants may download after accepting the rules (hidden labels: never)."""

    training: bool = Field(True, description="Images + labels of each track's train subset.")
    evaluation_inputs: bool = Field(
        True, description="Images only (no labels) of each open phase's scored subset."
    )


class ChallengeSpec(_Strict):
    """A whole challenge as its organizers write it in YAML."""

    slug: str = Field(pattern=SLUG_RE)
    title: str = Field(min_length=1, max_length=200)
    summary: str = Field("", max_length=500)
    description: str = Field("", description="Markdown overview.")
    rules: str = Field(min_length=1, description="Markdown rules participants accept.")
    team_size_max: int = Field(5, ge=1, le=1000)
    data: DataAccess = DataAccess()
    tracks: list[Track] = Field(min_length=1)
    phases: list[Phase] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> ChallengeSpec:
        for kind, slugs in (
            ("track", [t.slug for t in self.tracks]),
            ("phase", [p.slug for p in self.phases]),
        ):
            dup = sorted({s for s in slugs if slugs.count(s) > 1})
            if dup:
                raise ValueError(f"{kind} slugs must be unique; repeated: {', '.join(dup)}")
        tracks = {t.slug for t in self.tracks}
        seen: dict[str, Phase] = {}
        for p in self.phases:
            unknown = sorted(set(p.tracks or ()) - tracks)
            if unknown:
                raise ValueError(f"phase {p.slug!r} names unknown tracks {unknown}")
            if p.requires_phase is not None:
                if p.requires_phase not in seen:
                    raise ValueError(
                        f"phase {p.slug!r} requires_phase {p.requires_phase!r}, "
                        "which is not a phase listed before it"
                    )
                if seen[p.requires_phase].opens > p.opens:
                    raise ValueError(
                        f"phase {p.slug!r} opens before the phase it requires "
                        f"({p.requires_phase!r})"
                    )
            for t in self.tracks:
                if p.tracks is None or t.slug in p.tracks:
                    subset = p.scored_subset or t.reference_subset
                    if subset == t.train_subset:
                        raise ValueError(
                            f"phase {p.slug!r} scores subset {subset!r}, which is track "
                            f"{t.slug!r}'s downloadable training subset"
                        )
            seen[p.slug] = p
        return self

    def track(self, slug: str) -> Track:
        """The track named ``slug``; InputError naming the known tracks otherwise."""
        for t in self.tracks:
            if t.slug == slug:
                return t
        known = ", ".join(t.slug for t in self.tracks)
        raise InputError(f"challenge {self.slug!r} has no such track; tracks: {known}", value=slug)

    def phase(self, slug: str) -> Phase:
        """The phase named ``slug``; InputError naming the known phases otherwise."""
        for p in self.phases:
            if p.slug == slug:
                return p
        known = ", ".join(p.slug for p in self.phases)
        raise InputError(f"challenge {self.slug!r} has no such phase; phases: {known}", value=slug)

    def tracks_of(self, phase: Phase) -> list[Track]:
        """Tracks open in ``phase``."""
        return [t for t in self.tracks if phase.tracks is None or t.slug in phase.tracks]

    def scored_subset(self, track: Track, phase: Phase) -> str:
        """Subset of ``track``'s split that ``phase`` scores."""
        if phase.tracks is not None and track.slug not in phase.tracks:
            raise InputError(
                f"track {track.slug!r} is not part of phase {phase.slug!r}", value=track.slug
            )
        return phase.scored_subset or track.reference_subset

    def to_yaml(self) -> str:
        """The spec as YAML (round-trips through :func:`parse_spec`)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------- parsing


# A spec's problems are YAML problems (the name stays for the spec's callers).
SpecProblem = YamlProblem


class SpecError(InputError):
    """A challenge spec that cannot be used; ``problems`` lists each with its line."""

    def __init__(self, source: str, problems: list[SpecProblem]) -> None:
        self.problems = problems
        listed = "; ".join(str(p) for p in problems)
        super().__init__(f"invalid challenge spec: {listed}", path=source)


def parse_spec(text: str, source: str = "<spec>") -> ChallengeSpec:
    """Validate YAML ``text`` into a ChallengeSpec; SpecError lists every problem by line."""
    root, data = parse_mapping(text, source, "spec", SpecError)
    try:
        return ChallengeSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "unknown_metric":
                loc = (*loc, *err.get("ctx", {}).get("loc", ()))
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(problem_at(root, loc, msg, missing=err["type"] == "missing"))
        raise SpecError(source, problems) from None


# ---------------------------------------------------------------------------- Markdown

_MD = markdown_it.MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render_markdown(text: str) -> str:
    """Organizer Markdown as safe HTML: raw HTML is escaped, then nh3 strips what is left.

    Two layers on purpose: markdown-it with html disabled never emits tags from the input,
    and nh3's allow-list removes scripts, event handlers and javascript: links that could
    still come from link syntax.
    """
    html = _MD.render(text)
    return nh3.clean(
        html,
        tags={
            *("p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "strong", "em"),
            *("code", "pre", "blockquote", "a", "hr", "br", "table", "thead", "tbody"),
            *("tr", "th", "td"),
        },
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


__all__ = [
    "ChallengeSpec",
    "DataAccess",
    "Phase",
    "RankingOptions",
    "SpecError",
    "SpecProblem",
    "Track",
    "parse_spec",
    "render_markdown",
]

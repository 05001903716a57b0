"""Leaderboards per phase and track, and a combined board across tracks.

A board is built from the scored Submission rows of one (phase, track) and their stored
result.json files:

- **entries**: one submission per team, the best (by the primary metric's direction, ties to
  the earlier submission) or the latest scored one, as the phase says;
- **ranking**: the track's scheme through :func:`medarena.evaluation.ranking.rank_results`,
  with the bootstrap rank interval (default 95 %, ``track.ranking.bootstrap`` resamples);
  a board of one team has rank 1 and no interval; a primary metric computed on the whole
  subset and not per case (detection CPM) ranks by its value, without an interval;
- **subgroup columns**: the mean of the primary metric per value of a case attribute (site,
  sex, scanner vendor, age band) for every group of at least ``min_group_size`` scored cases,
  so that no column describes one or two patients;
- **visibility**: ``public`` boards are shown to everyone, ``private_until_close`` ones to
  organizers until the phase closes and to everyone after, ``hidden`` ones to organizers only.

The combined board ranks teams by the mean of their ranks over the tracks; a team absent
from a track takes that track's last rank plus one (behind every ranked team).

**Cache.** A board with bootstrap rank intervals costs about a second of CPU (1,000
resamples x 50 teams), far too much per page view. :func:`cached_leaderboard` keeps each
board in a file keyed by everything it is computed from: the challenge's spec (revision and
content), the (id, team, result digest, score revision) of every scored submission of the
phase and track, and the size of the dataset behind the subgroup columns. Scoring or
re-scoring a submission, or a spec update, changes the key, so the next request recomputes
the board; nothing has to remember to invalidate it. Team names are applied when the board
is read, so a rename shows at once. One process at a time computes a given board (a file
lock), so a burst of requests after a change computes it once, not once per request.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import html
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from scipy import stats
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medarena.challenges.spec import ChallengeSpec, Phase, Track
from medarena.db.models import Case, Dataset
from medarena.db.platform_models import Submission, Team
from medarena.evaluation.ranking import rank_results
from medarena.evaluation.results import EvaluationResult, metric_spec
from medarena.evaluation.subgroups import age_band
from medarena.storage import LocalObjectStore

logger = logging.getLogger(__name__)

SUBGROUP_ATTRIBUTES: tuple[str, ...] = ("site", "sex", "manufacturer", "age_band")


class BoardRow(BaseModel):
    """One team's line on a leaderboard."""

    rank: int
    rank_interval: tuple[int, int] | None = None
    team_id: int
    team: str
    submission_id: int
    submitted_at: dt.datetime
    score: float = Field(description="the ranking scheme's score (see evaluation.ranking)")
    primary: float | None = Field(None, description="mean of the primary metric")
    metrics: dict[str, float] = Field(default_factory=dict, description="metric -> mean")
    n_missing: int = 0
    subgroups: dict[str, float] = Field(
        default_factory=dict, description="'attribute: value' -> mean of the primary metric"
    )


class Leaderboard(BaseModel):
    """The ranked board of one phase and track, as pages and exports show it."""

    model_config = {"ser_json_inf_nan": "strings"}

    challenge: str
    phase: str
    track: str
    scheme: str
    primary_metric: str
    higher_is_better: bool
    metrics: list[str]
    confidence: float | None = None
    bootstrap: int = 0
    kendall_tau_median: float | None = None
    missing_rule: str = ""
    subgroup_columns: list[str] = Field(default_factory=list)
    rows: list[BoardRow] = Field(default_factory=list)


class CombinedRow(BaseModel):
    rank: int
    team_id: int
    team: str
    mean_rank: float
    track_ranks: dict[str, int | None] = Field(
        description="track -> rank on that track's board (None: no scored entry)"
    )


class CombinedLeaderboard(BaseModel):
    challenge: str
    phase: str
    tracks: list[str]
    rows: list[CombinedRow] = Field(default_factory=list)


def board_visible(phase: Phase, *, organizer: bool, now: dt.datetime | None = None) -> bool:
    """Whether a viewer may see the phase's leaderboards (organizers always may)."""
    if organizer or phase.leaderboard == "public":
        return True
    if phase.leaderboard == "private_until_close":
        return phase.state(now) == "closed"
    return False


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def select_entries(
    session: Session, challenge_id: int, phase: Phase, track: Track
) -> dict[int, Submission]:
    """Team id -> the submission that represents the team (best or latest scored one)."""
    subs = session.scalars(
        select(Submission)
        .where(
            Submission.challenge_id == challenge_id,
            Submission.phase_slug == phase.slug,
            Submission.track_slug == track.slug,
            Submission.status == "scored",
        )
        .order_by(Submission.created_at, Submission.id)
    ).all()
    higher = metric_spec(track.primary_metric).higher_is_better
    chosen: dict[int, Submission] = {}
    for s in subs:
        cur = chosen.get(s.team_id)
        if cur is None or phase.best_or_latest == "latest":
            chosen[s.team_id] = s
            continue
        new, old = s.primary_score, cur.primary_score
        if new is None or math.isnan(new):
            continue
        if old is None or math.isnan(old) or _better(new, old, higher):
            chosen[s.team_id] = s
    return chosen


def load_result(store: LocalObjectStore, digest: str) -> EvaluationResult:
    """A stored result.json (verified against its digest)."""
    return EvaluationResult.model_validate_json(store.get_bytes(digest))


def case_attributes(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """case key -> subgroup attribute -> text, from :func:`datasets.catalogue.case_records`."""
    out: dict[str, dict[str, str]] = {}
    for rec in records:
        attrs: dict[str, str] = {}
        for name in ("site", "sex", "manufacturer"):
            v = rec.get(name)
            if v not in (None, ""):
                attrs[name] = str(v)
        age = rec.get("age_years")
        if isinstance(age, int | float) and not math.isnan(age) and age >= 0:
            attrs["age_band"] = age_band(float(age))
        out[str(rec["case_key"])] = attrs
    return out


def _subgroup_means(
    cases: Mapping[str, Mapping[str, float]],
    attributes: Mapping[str, Mapping[str, str]],
    metric: str,
    min_group_size: int,
) -> dict[str, tuple[float, int]]:
    groups: dict[str, list[float]] = {}
    for cid, values in cases.items():
        v = values.get(metric)
        if v is None or math.isnan(v):
            continue
        for attr, val in attributes.get(cid, {}).items():
            if attr in SUBGROUP_ATTRIBUTES:
                groups.setdefault(f"{attr}: {val}", []).append(float(v))
    return {
        k: (sum(vs) / len(vs), len(vs)) for k, vs in groups.items() if len(vs) >= min_group_size
    }


def _dataset_level(metric: str, results: Iterable[EvaluationResult]) -> bool:
    """True when ``metric`` is a dataset-level value of every result and no per-case one."""
    rs = list(results)
    return all(metric in r.dataset_metrics and metric not in r.aggregate for r in rs)


def build_leaderboard(
    session: Session,
    store: LocalObjectStore,
    spec: ChallengeSpec,
    challenge_id: int,
    phase_slug: str,
    track_slug: str,
    *,
    attributes: Mapping[str, Mapping[str, str]] | None = None,
    min_group_size: int = 3,
) -> Leaderboard:
    """Rank the teams of one phase and track (visibility is the caller's: board_visible)."""
    phase = spec.phase(phase_slug)
    track = spec.track(track_slug)
    spec.scored_subset(track, phase)  # refuses a track that is not part of the phase
    entries = select_entries(session, challenge_id, phase, track)
    names = dict(
        session.execute(select(Team.id, Team.name).where(Team.challenge_id == challenge_id)).all()
    )
    cfg = track.ranking_config()
    primary = track.primary_metric
    higher = metric_spec(primary).higher_is_better
    board = Leaderboard(
        challenge=spec.slug,
        phase=phase.slug,
        track=track.slug,
        scheme=cfg.scheme,
        primary_metric=primary,
        higher_is_better=higher,
        metrics=list(dict.fromkeys([primary, *track.metrics, *cfg.metric_list()])),
    )
    if not entries:
        return board
    results: dict[str, EvaluationResult] = {}
    for team_id, sub in entries.items():
        assert sub.result_digest is not None  # a scored submission has its result
        results[str(team_id)] = load_result(store, sub.result_digest)
    per_team: dict[str, dict[str, Any]] = {}
    if _dataset_level(primary, results.values()):
        # one value per submission (detection CPM): ranked by it, no per-case resampling
        values = {k: r.dataset_metrics[primary] for k, r in results.items()}
        order = list(values)
        ranks = stats.rankdata([-values[k] if higher else values[k] for k in order], "min")
        for k, rank in zip(order, ranks, strict=True):
            res = results[k]
            per_team[k] = {
                "rank": int(rank),
                "interval": None,
                "score": values[k],
                "n_missing": len(res.missing) + len(res.failed),
            }
    elif len(results) >= 2:
        ranking = rank_results(results, cfg)
        board.confidence = ranking.confidence
        board.bootstrap = ranking.bootstrap
        board.kendall_tau_median = ranking.kendall_tau_median
        board.missing_rule = ranking.missing_rule
        for t in ranking.teams:
            per_team[t.team] = {
                "rank": t.rank,
                "interval": t.rank_interval,
                "score": t.score,
                "n_missing": t.n_missing,
            }
    else:
        (only,) = results
        res = results[only]
        agg = res.aggregate.get(primary)
        per_team[only] = {
            "rank": 1,
            "interval": None,
            "score": agg.mean if agg else math.nan,
            "n_missing": len(res.missing) + len(res.failed),
        }
    columns: set[str] = set()
    rows: list[BoardRow] = []
    for key, res in results.items():
        team_id = int(key)
        sub = entries[team_id]
        info = per_team[key]
        subgroups: dict[str, float] = {}
        if attributes:
            means = _subgroup_means(res.cases, attributes, primary, min_group_size)
            subgroups = {k: m for k, (m, _) in means.items()}
            columns.update(subgroups)
        agg_primary = res.aggregate.get(primary)
        rows.append(
            BoardRow(
                rank=info["rank"],
                rank_interval=info["interval"],
                team_id=team_id,
                team=names.get(team_id, f"team {team_id}"),
                submission_id=sub.id,
                submitted_at=sub.created_at,
                score=info["score"],
                primary=agg_primary.mean if agg_primary else res.dataset_metrics.get(primary),
                metrics={
                    m: res.aggregate[m].mean if m in res.aggregate else res.dataset_metrics[m]
                    for m in board.metrics
                    if m in res.aggregate or m in res.dataset_metrics
                },
                n_missing=info["n_missing"],
                subgroups=subgroups,
            )
        )
    rows.sort(key=lambda r: (r.rank, r.team))
    board.rows = rows
    board.subgroup_columns = sorted(columns)
    return board


# ------------------------------------------------------------------------------ cache

# Part of every cache key: raise it when the way a board is computed changes, so boards
# cached by an older version are recomputed.
CACHE_FORMAT = 1


def board_cache_key(
    session: Session,
    spec: ChallengeSpec,
    challenge_id: int,
    spec_revision: int,
    phase_slug: str,
    track_slug: str,
    *,
    min_group_size: int = 3,
) -> str:
    """A digest of everything a board is computed from (see the module docstring)."""
    track = spec.track(track_slug)
    subs = session.execute(
        select(
            Submission.id,
            Submission.team_id,
            Submission.result_digest,
            Submission.score_revision,
            Submission.created_at,
        )
        .where(
            Submission.challenge_id == challenge_id,
            Submission.phase_slug == phase_slug,
            Submission.track_slug == track_slug,
            Submission.status == "scored",
        )
        .order_by(Submission.id)
    ).all()
    n_cases, last_case = session.execute(
        select(func.count(Case.id), func.max(Case.id))
        .join(Dataset, Dataset.id == Case.dataset_id)
        .where(Dataset.name == track.dataset)
    ).one()
    h = hashlib.sha256()
    head = [CACHE_FORMAT, challenge_id, spec_revision, phase_slug, track_slug, min_group_size]
    h.update(json.dumps(head).encode())
    h.update(spec.model_dump_json().encode())
    h.update(json.dumps([n_cases, last_case]).encode())
    for sid, team, digest, revision, created in subs:
        h.update(f"|{sid},{team},{digest},{revision},{created.isoformat()}".encode())
    return h.hexdigest()


@contextlib.contextmanager
def _board_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (threads and processes alike; no-op off POSIX)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: concurrent misses compute twice
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_cached(path: Path, key: str) -> Leaderboard | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # absent or half-written by a crashed process: recompute
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    try:
        return Leaderboard.model_validate(data["board"])
    except (KeyError, ValueError):
        return None


def _write_cached(path: Path, key: str, board: Leaderboard) -> None:
    payload = json.dumps({"key": key, "board": json.loads(board.model_dump_json())})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".board-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
        os.replace(tmp, path)  # readers see the old file or the new one, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_leaderboard(
    session: Session,
    store: LocalObjectStore,
    spec: ChallengeSpec,
    challenge_id: int,
    spec_revision: int,
    phase_slug: str,
    track_slug: str,
    *,
    cache_dir: Path,
    attributes: Callable[[], Mapping[str, Mapping[str, str]]] | None = None,
    min_group_size: int = 3,
) -> Leaderboard:
    """:func:`build_leaderboard`, computed once per change of its inputs.

    ``attributes`` is called only when the board is recomputed (reading every case of a
    dataset is part of what the cache saves). ``cache_dir`` is any directory the server's
    processes share; a board there is used only if its key matches, so a stale, foreign
    or damaged file is recomputed, never shown.
    """
    key = board_cache_key(
        session,
        spec,
        challenge_id,
        spec_revision,
        phase_slug,
        track_slug,
        min_group_size=min_group_size,
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(f"{challenge_id}/{phase_slug}/{track_slug}".encode()).hexdigest()
    path = cache_dir / f"{name[:32]}.json"
    board = _read_cached(path, key)
    if board is None:
        with _board_lock(cache_dir / f"{name[:32]}.lock"):
            board = _read_cached(path, key)  # another process may have just computed it
            if board is None:
                logger.info("computing leaderboard %s/%s", phase_slug, track_slug)
                board = build_leaderboard(
                    session,
                    store,
                    spec,
                    challenge_id,
                    phase_slug,
                    track_slug,
                    attributes=attributes() if attributes else None,
                    min_group_size=min_group_size,
                )
                _write_cached(path, key, board)
    names = dict(
        session.execute(select(Team.id, Team.name).where(Team.challenge_id == challenge_id)).all()
    )
    for row in board.rows:
        row.team = names.get(row.team_id, row.team)
    return board


def combined_leaderboard(boards: Sequence[Leaderboard]) -> CombinedLeaderboard:
    """Rank teams by their mean rank over the tracks' boards (all of one phase)."""
    if not boards:
        raise ValueError("a combined leaderboard needs at least one track board")
    teams: dict[int, str] = {}
    for b in boards:
        for r in b.rows:
            teams[r.team_id] = r.team
    ranks: dict[int, dict[str, int | None]] = {t: {} for t in teams}
    filled: dict[int, list[float]] = {t: [] for t in teams}
    for b in boards:
        on_board = {r.team_id: r.rank for r in b.rows}
        absent_rank = (max(on_board.values()) if on_board else 0) + 1
        for t in teams:
            got = on_board.get(t)
            ranks[t][b.track] = got
            filled[t].append(float(got if got is not None else absent_rank))
    ids = list(teams)
    means = [sum(filled[t]) / len(filled[t]) for t in ids]
    final = stats.rankdata(means, method="min") if ids else []
    rows = [
        CombinedRow(
            rank=int(final[i]),
            team_id=t,
            team=teams[t],
            mean_rank=means[i],
            track_ranks=ranks[t],
        )
        for i, t in enumerate(ids)
    ]
    rows.sort(key=lambda r: (r.rank, r.team))
    return CombinedLeaderboard(
        challenge=boards[0].challenge,
        phase=boards[0].phase,
        tracks=[b.track for b in boards],
        rows=rows,
    )


# ------------------------------------------------------------------------------ exports


def _fmt(v: float | None) -> str:
    if v is None or math.isnan(v):
        return ""
    return repr(float(v))


def board_csv(board: Leaderboard) -> str:
    """The board as CSV: one row per team, metric means, rank interval, subgroup columns."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "rank",
            "rank_low",
            "rank_high",
            "team",
            "submission_id",
            "submitted_at",
            "score",
            *board.metrics,
            "n_missing",
            *board.subgroup_columns,
        ]
    )
    for r in board.rows:
        lo, hi = r.rank_interval or (None, None)
        w.writerow(
            [
                r.rank,
                "" if lo is None else lo,
                "" if hi is None else hi,
                r.team,
                r.submission_id,
                r.submitted_at.isoformat(),
                _fmt(r.score),
                *(_fmt(r.metrics.get(m)) for m in board.metrics),
                r.n_missing,
                *(_fmt(r.subgroups.get(c)) for c in board.subgroup_columns),
            ]
        )
    return buf.getvalue()


def board_json(board: Leaderboard) -> dict[str, Any]:
    """The board as JSON-ready data (non-finite numbers as strings, as result.json)."""
    data: dict[str, Any] = json.loads(board.model_dump_json())
    return data


def board_svg(board: Leaderboard, *, width: int = 640) -> str:
    """A plot of each team's score (left) and rank with its interval (right), as SVG."""
    n = len(board.rows)
    row_h, top, label_w = 26, 30, 170
    height = top + max(n, 1) * row_h + 20
    half = (width - label_w - 30) // 2
    x0_score, x0_rank = label_w, label_w + half + 30
    scores = [r.score for r in board.rows if math.isfinite(r.score)]
    lo_s, hi_s = (min(scores), max(scores)) if scores else (0.0, 1.0)
    if hi_s == lo_s:
        lo_s, hi_s = lo_s - 1.0, hi_s + 1.0
    max_rank = max([n, *[(r.rank_interval or (0, 0))[1] for r in board.rows]])

    def sx(v: float) -> float:
        return x0_score + 8 + (v - lo_s) / (hi_s - lo_s) * (half - 16)

    def rx(rank: float) -> float:
        return x0_rank + 8 + (rank - 1) / max(max_rank - 1, 1) * (half - 16)

    esc = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="scores and rank intervals '
        f'of {esc(board.track)} in {esc(board.phase)}" font-family="sans-serif" font-size="12">',
        f'<text x="{x0_score}" y="16">score ({esc(board.scheme)})</text>',
        f'<text x="{x0_rank}" y="16">rank and {int((board.confidence or 0.95) * 100)}% '
        "interval</text>",
    ]
    for i, r in enumerate(board.rows):
        y = top + i * row_h + row_h / 2
        parts.append(f'<text x="4" y="{y + 4:.0f}">{r.rank}. {esc(r.team[:22])}</text>')
        if math.isfinite(r.score):
            parts.append(f'<circle cx="{sx(r.score):.1f}" cy="{y:.0f}" r="4" fill="#1f6feb"/>')
        if r.rank_interval is not None:
            lo, hi = r.rank_interval
            parts.append(
                f'<line x1="{rx(lo):.1f}" x2="{rx(hi):.1f}" y1="{y:.0f}" y2="{y:.0f}" '
                'stroke="#555" stroke-width="2"/>'
            )
        parts.append(f'<circle cx="{rx(r.rank):.1f}" cy="{y:.0f}" r="4" fill="#d1242f"/>')
    parts.append("</svg>")
    return "".join(parts)

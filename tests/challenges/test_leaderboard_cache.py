"""The leaderboard cache: a hit skips the computation; scoring, re-scoring, a spec change
or a damaged file make the next request recompute; a rename shows without recomputing."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from platform_fixtures import Platform, add_scored, make_platform, spec_dict

from medarena.challenges.leaderboard import Leaderboard, build_leaderboard, cached_leaderboard
from medarena.challenges.spec import ChallengeSpec
from medarena.db.platform_models import Submission, Team
from medarena.evaluation.results import EvaluationResult, aggregate_cases

A = [0.875, 0.75, 0.625, 0.75]
B = [0.5, 0.5, 0.5, 0.5]
C = [0.95, 0.9, 0.85, 0.8]


def _cases(values: list[float]) -> dict[str, dict[str, float]]:
    return {f"c{i + 1}": {"dice": v} for i, v in enumerate(values)}


class Counting:
    """The ``attributes`` callable, counting its calls: one call = one recomputation."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> Mapping[str, Mapping[str, str]]:
        with self._lock:
            self.calls += 1
        return {}


@pytest.fixture
def plat(platform_db_url: str, tmp_path: Path) -> Platform:
    p = make_platform(platform_db_url, tmp_path, spec_dict(), ["ada", "bob", "cyd"])
    add_scored(p, "ada", _cases(A))
    add_scored(p, "bob", _cases(B))
    return p


def _cached(
    p: Platform,
    tmp_path: Path,
    counter: Counting,
    *,
    spec: ChallengeSpec | None = None,
    revision: int = 1,
) -> Leaderboard:
    with p.sessions() as s:
        return cached_leaderboard(
            s,
            p.store,
            spec or p.spec,
            p.challenge_id,
            revision,
            "prelim",
            "seg",
            cache_dir=tmp_path / "cache",
            attributes=counter,
        )


def _fresh(p: Platform, spec: ChallengeSpec | None = None) -> Leaderboard:
    with p.sessions() as s:
        return build_leaderboard(
            s, p.store, spec or p.spec, p.challenge_id, "prelim", "seg", attributes={}
        )


def test_second_request_is_served_from_the_cache(plat: Platform, tmp_path: Path) -> None:
    n = Counting()
    first = _cached(plat, tmp_path, n)
    second = _cached(plat, tmp_path, n)
    assert n.calls == 1
    assert second == first == _fresh(plat)
    assert [r.team for r in second.rows] == ["ada", "bob"]
    assert second.rows[0].rank_interval == (1, 1)  # ada beats bob on every case


def test_a_newly_scored_submission_invalidates(plat: Platform, tmp_path: Path) -> None:
    n = Counting()
    _cached(plat, tmp_path, n)
    add_scored(plat, "cyd", _cases(C))  # as scoring stores a result
    board = _cached(plat, tmp_path, n)
    assert n.calls == 2
    assert [r.team for r in board.rows] == ["cyd", "ada", "bob"]
    assert board == _fresh(plat)


def test_a_rescore_invalidates(plat: Platform, tmp_path: Path) -> None:
    n = Counting()
    _cached(plat, tmp_path, n)
    # Re-scoring replaces bob's result (now better than ada's everywhere) and bumps the
    # score revision; the submission's id and team stay the same.
    res = EvaluationResult(
        task="segmentation", cases=_cases(C), aggregate=aggregate_cases(_cases(C))
    )
    with plat.sessions() as s, s.begin():
        sub = s.query(Submission).filter_by(team_id=plat.teams["bob"]).one()
        sub.result_digest = plat.store.put_bytes(res.model_dump_json().encode())
        sub.primary_score = res.aggregate["dice"].mean
        sub.score_revision += 1
    board = _cached(plat, tmp_path, n)
    assert n.calls == 2
    assert [r.team for r in board.rows] == ["bob", "ada"]
    assert board.rows[0].primary == pytest.approx(sum(C) / 4)


def test_a_submission_leaving_scored_invalidates(plat: Platform, tmp_path: Path) -> None:
    n = Counting()
    _cached(plat, tmp_path, n)
    with plat.sessions() as s, s.begin():
        s.query(Submission).filter_by(team_id=plat.teams["bob"]).one().status = "failed"
    board = _cached(plat, tmp_path, n)
    assert n.calls == 2
    assert [r.team for r in board.rows] == ["ada"]


def test_a_spec_change_invalidates(plat: Platform, tmp_path: Path) -> None:
    n = Counting()
    assert _cached(plat, tmp_path, n).bootstrap == 200
    raw = spec_dict()
    raw["tracks"][0]["ranking"] = {"bootstrap": 0}
    changed = ChallengeSpec.model_validate(raw)
    board = _cached(plat, tmp_path, n, spec=changed, revision=2)
    assert n.calls == 2
    assert board.bootstrap == 0 and board.rows[0].rank_interval is None
    # the content counts, not only the revision number: an edit under the same number
    # (a spec written straight to the database) is seen too
    again = _cached(plat, tmp_path, n, revision=2)
    assert n.calls == 3 and again.bootstrap == 200


def test_a_rename_shows_without_recomputing(plat: Platform, tmp_path: Path) -> None:
    n = Counting()
    _cached(plat, tmp_path, n)
    with plat.sessions() as s, s.begin():
        s.get_one(Team, plat.teams["ada"]).name = "Ada's lab"
    board = _cached(plat, tmp_path, n)
    assert n.calls == 1
    assert [r.team for r in board.rows] == ["Ada's lab", "bob"]


def test_a_damaged_cache_file_is_recomputed(plat: Platform, tmp_path: Path) -> None:
    n = Counting()
    good = _cached(plat, tmp_path, n)
    (cached_file,) = (tmp_path / "cache").glob("*.json")
    cached_file.write_text('{"key": "x", "board": ')  # a crash mid-write of an old version
    assert _cached(plat, tmp_path, n) == good
    assert n.calls == 2


def test_a_burst_of_misses_computes_once(plat: Platform, tmp_path: Path) -> None:
    n = Counting()
    boards: list[Leaderboard] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            boards.append(_cached(plat, tmp_path, n))
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(boards) == 6 and all(b == boards[0] for b in boards)
    assert n.calls == 1  # the others waited on the lock, then read the file

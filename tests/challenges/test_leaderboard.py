"""Leaderboards: entries, ranks with bootstrap intervals, subgroups, visibility, exports."""

from __future__ import annotations

import csv
import datetime as dt
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from platform_fixtures import Platform, add_scored, make_platform, spec_dict

from medarena.challenges.leaderboard import (
    Leaderboard,
    board_csv,
    board_json,
    board_svg,
    board_visible,
    build_leaderboard,
    case_attributes,
    combined_leaderboard,
)
from medarena.challenges.spec import ChallengeSpec

UTC = dt.UTC
T0 = dt.datetime(2030, 1, 1, tzinfo=UTC)

A = [0.875, 0.75, 0.625, 0.75]  # binary fractions: the mean is exactly 0.75
B = [0.5, 0.5, 0.5, 0.5]
C = [0.95, 0.9, 0.85, 0.8]  # better than A and B on every case
D = [0.75, 0.75, 0.75, 0.75]  # same mean as A: ties A on the full data


def _cases(values: list[float]) -> dict[str, dict[str, float]]:
    return {f"c{i + 1}": {"dice": v} for i, v in enumerate(values)}


@pytest.fixture
def plat(platform_db_url: str, tmp_path: Path) -> Platform:
    return make_platform(platform_db_url, tmp_path, spec_dict(), ["ada", "bob", "cyd", "dan"])


def _board(p: Platform, **kw: object) -> Leaderboard:
    with p.sessions() as s:
        return build_leaderboard(s, p.store, p.spec, p.challenge_id, "prelim", "seg", **kw)  # type: ignore[arg-type]


def test_ranks_intervals_and_ties(plat: Platform) -> None:
    for team, vals in (("ada", A), ("bob", B), ("cyd", C), ("dan", D)):
        add_scored(plat, team, _cases(vals))
    board = _board(plat)
    got = {r.team: (r.rank, r.rank_interval) for r in board.rows}
    # C beats everyone on every case and B loses to everyone on every case in any resample,
    # so their intervals are exact; A and D tie (min rank 2) and swap places in resamples.
    assert got["cyd"] == (1, (1, 1))
    assert got["bob"] == (4, (4, 4))
    assert got["ada"] == (2, (2, 3)) and got["dan"] == (2, (2, 3))
    assert [r.team for r in board.rows] == ["cyd", "ada", "dan", "bob"]
    assert board.bootstrap == 200 and board.confidence == 0.95
    ada = next(r for r in board.rows if r.team == "ada")
    assert ada.score == pytest.approx(0.75) and ada.metrics == {"dice": pytest.approx(0.75)}


@pytest.mark.parametrize(("mode", "expected"), [("best", 0.75), ("latest", 0.6)])
def test_best_or_latest_per_team(
    platform_db_url: str, tmp_path: Path, mode: str, expected: float
) -> None:
    p = make_platform(platform_db_url, tmp_path, spec_dict(best_or_latest=mode), ["ada", "bob"])
    add_scored(p, "ada", _cases(A), at=T0)
    add_scored(p, "ada", _cases([0.6] * 4), at=T0 + dt.timedelta(hours=1))
    add_scored(p, "bob", _cases(B), at=T0)
    rows = {r.team: r for r in _board(p).rows}
    assert rows["ada"].primary == pytest.approx(expected), mode
    assert len(_board(p).rows) == 2


def test_lower_is_better_best_pick_and_single_team(plat: Platform) -> None:
    cases_bad = {"c1": {"abs_error": 5.0}, "c2": {"abs_error": 7.0}}
    cases_good = {"c1": {"abs_error": 1.0}, "c2": {"abs_error": 2.0}}
    for cases in (cases_bad, cases_good):
        add_scored(plat, "ada", cases, track="age", primary="abs_error", task="regression")
    with plat.sessions() as s:
        board = build_leaderboard(s, plat.store, plat.spec, plat.challenge_id, "prelim", "age")
    assert len(board.rows) == 1
    row = board.rows[0]
    assert (row.rank, row.rank_interval, row.primary) == (1, None, pytest.approx(1.5))
    assert board.higher_is_better is False


def test_subgroup_columns_need_enough_cases(plat: Platform) -> None:
    add_scored(plat, "ada", _cases(A))
    add_scored(plat, "bob", _cases(B))
    records: list[dict[str, Any]] = [
        {"case_key": "c1", "site": "north", "sex": "F", "age_years": 30.0},
        {"case_key": "c2", "site": "north", "sex": "M", "age_years": 70.0},
        {"case_key": "c3", "site": "south", "sex": "F", "age_years": None},
        {"case_key": "c4", "site": "south", "sex": "F", "age_years": 45.0},
    ]
    attrs = case_attributes(records)
    assert attrs["c2"]["age_band"] == "65+" and "age_band" not in attrs["c3"]
    board = _board(plat, attributes=attrs, min_group_size=2)
    ada = next(r for r in board.rows if r.team == "ada")
    assert ada.subgroups == {
        "site: north": pytest.approx(0.8125),
        "site: south": pytest.approx(0.6875),
        "sex: F": pytest.approx((0.875 + 0.625 + 0.75) / 3),
    }
    assert board.subgroup_columns == ["sex: F", "site: north", "site: south"]


def test_visibility_rules() -> None:
    spec = ChallengeSpec.model_validate(spec_dict())
    now = dt.datetime.now(UTC)
    prelim = spec.phase("prelim")
    private = prelim.model_copy(update={"leaderboard": "private_until_close"})
    hidden = prelim.model_copy(update={"leaderboard": "hidden"})
    after = prelim.closes + dt.timedelta(seconds=1)
    assert board_visible(prelim, organizer=False, now=now)
    assert not board_visible(private, organizer=False, now=now)
    assert board_visible(private, organizer=True, now=now)
    assert board_visible(private, organizer=False, now=after)
    assert not board_visible(hidden, organizer=False, now=after)
    assert board_visible(hidden, organizer=True, now=after)


def test_combined_board_mean_rank(plat: Platform) -> None:
    add_scored(plat, "ada", _cases(A))
    add_scored(plat, "bob", _cases(B))
    add_scored(plat, "cyd", _cases(C))
    for team, err in (("ada", 1.0), ("bob", 3.0)):
        add_scored(
            plat,
            team,
            {"c1": {"abs_error": err}, "c2": {"abs_error": err + 1}},
            track="age",
            primary="abs_error",
            task="regression",
        )
    seg = _board(plat)
    with plat.sessions() as s:
        age = build_leaderboard(s, plat.store, plat.spec, plat.challenge_id, "prelim", "age")
    comb = combined_leaderboard([seg, age])
    got = {r.team: (r.rank, r.mean_rank, r.track_ranks) for r in comb.rows}
    # seg: cyd 1, ada 2, bob 3; age: ada 1, bob 2, cyd absent -> 3 (last rank + 1)
    assert got["ada"] == (1, 1.5, {"seg": 2, "age": 1})
    assert got["cyd"] == (2, 2.0, {"seg": 1, "age": None})
    assert got["bob"] == (3, 2.5, {"seg": 3, "age": 2})


def test_exports_round_trip(plat: Platform) -> None:
    add_scored(plat, "ada", _cases(A))
    add_scored(plat, "bob", _cases(B))
    board = _board(plat)
    rows = list(csv.DictReader(io.StringIO(board_csv(board))))
    assert [r["team"] for r in rows] == ["ada", "bob"]
    assert float(rows[0]["dice"]) == pytest.approx(0.75)
    assert (rows[0]["rank_low"], rows[0]["rank_high"]) == ("1", "1")
    data = board_json(board)
    assert Leaderboard.model_validate(data).rows[1].team == "bob"
    svg = ET.fromstring(board_svg(board))
    assert svg.tag.endswith("svg")
    assert len([e for e in svg.iter() if e.tag.endswith("circle")]) == 4


def test_empty_board(plat: Platform) -> None:
    board = _board(plat)
    assert board.rows == [] and board_csv(board).count("\n") == 1
    ET.fromstring(board_svg(board))

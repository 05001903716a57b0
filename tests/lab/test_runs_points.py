"""The curve points file of a lab run: appended by workers, read incrementally by polls."""

from __future__ import annotations

import json
from pathlib import Path

from medarena.lab.runs import MAX_LOSS_POINTS, POINTS_FILE, append_points, read_points


def _loss(step: int, value: float) -> dict[str, float]:
    return {"epoch": 1, "step": step, "loss": value}


def test_incremental_reads_torn_lines_and_resumed_steps(tmp_path: Path) -> None:
    path = tmp_path / POINTS_FILE
    assert read_points(tmp_path) == {"loss": [], "metric": []}
    append_points(path, [_loss(1, 0.9), _loss(2, 0.8)])
    assert read_points(tmp_path)["loss"] == [[1, 0.9], [2, 0.8]]
    # a worker killed mid-write leaves half a line: not read until complete ...
    with path.open("a") as fh:
        fh.write(json.dumps(_loss(3, 0.7))[:20])
    assert read_points(tmp_path)["loss"] == [[1, 0.9], [2, 0.8]]
    # ... and the next attempt closes it before appending: the resumed steps 2, 3 count once,
    # the later report winning
    append_points(
        path, [_loss(2, 0.75), _loss(3, 0.65), {"epoch": 1, "metric": 0.5, "name": "dice"}]
    )
    assert path.read_text().count("\n") == 6  # 2 lines, the torn one, 3 lines
    points = read_points(tmp_path)
    assert points["loss"] == [[1, 0.9], [2, 0.75], [3, 0.65]]
    assert points["metric"] == [[1, 0.5]]
    # a replaced file is read again from its start
    path.write_text(json.dumps(_loss(1, 0.1)) + "\n")
    assert read_points(tmp_path) == {"loss": [[1, 0.1]], "metric": []}


def test_long_curves_are_thinned_keeping_the_last_point(tmp_path: Path) -> None:
    n = 2 * MAX_LOSS_POINTS + 7
    append_points(tmp_path / POINTS_FILE, [_loss(s, 1.0 / s) for s in range(1, n + 1)])
    loss = read_points(tmp_path)["loss"]
    assert len(loss) <= MAX_LOSS_POINTS + 1
    assert loss[0] == [1, 1.0] and loss[-1] == [n, 1.0 / n]
    assert [s for s, _ in loss] == sorted({s for s, _ in loss})

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from medarena.cli.main import app
from medarena_testkit import PHI_ID, make_ct_series

runner = CliRunner()


def test_ingest_list_show_stats_split(tmp_path: Path) -> None:
    make_ct_series(tmp_path / "in" / "a", patient_id="A1", n=2)
    make_ct_series(tmp_path / "in" / "b", patient_id="B2", n=2, sex="M")
    (tmp_path / "in" / "junk.bin").write_bytes(b"junk")
    res = runner.invoke(app, ["ingest", str(tmp_path / "in"), "--dataset", "ct"])
    assert res.exit_code == 0, res.output
    assert "cases added" in res.output and "junk.bin" in res.output
    assert PHI_ID not in res.output
    res = runner.invoke(app, ["ingest", str(tmp_path / "in"), "--dataset", "ct", "--strict"])
    assert res.exit_code == 1  # junk.bin is rejected again
    res = runner.invoke(app, ["datasets", "list"])
    assert res.exit_code == 0 and "ct" in res.output
    res = runner.invoke(
        app, ["datasets", "split", "ct", "--ratios", "0.5,0,0.5", "--hidden", "test", "--seed", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "(hidden)" in res.output
    res = runner.invoke(app, ["datasets", "show", "ct", "--json"])
    records = json.loads(res.stdout)
    assert len(records) == 2 and all("default" in r["splits"] for r in records)
    plot = tmp_path / "ct.png"
    res = runner.invoke(app, ["datasets", "stats", "ct", "--plot", str(plot), "--json"])
    assert res.exit_code == 0 and plot.exists()
    assert json.loads(res.output[: res.output.rindex("}") + 1])["sex"] == {"F": 1, "M": 1}


def test_errors_are_clear_and_exit_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["datasets", "show", "nope"])
    assert res.exit_code == 2 and "no dataset named 'nope'" in res.output
    res = runner.invoke(app, ["datasets", "split", "nope", "--ratios", "a,b"])
    assert res.exit_code == 2 and "ratios must be comma-separated numbers" in res.output
    res = runner.invoke(
        app, ["ingest", str(tmp_path), "--dataset", "x", "--labels", str(tmp_path / "no.csv")]
    )
    assert res.exit_code == 2 and "labels CSV does not exist" in res.output


def test_every_command_has_help() -> None:
    for args in (
        [],
        ["ingest"],
        ["datasets"],
        ["datasets", "list"],
        ["datasets", "show"],
        ["datasets", "stats"],
        ["datasets", "split"],
        ["db"],
        ["db", "upgrade"],
        ["serve"],
    ):
        res = runner.invoke(app, [*args, "--help"])
        assert res.exit_code == 0, (args, res.output)
        assert "Usage" in res.output

"""`medarena evaluate` and `medarena rank` through typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from medarena.cli.main import app

runner = CliRunner()


def _regression_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    ref = tmp_path / "ref.csv"
    ref.write_text(
        "case_id,value\n" + "".join(f"c{i},{20 + i}\n" for i in range(12)), encoding="utf-8"
    )
    good = tmp_path / "good.csv"
    good.write_text(
        "case_id,value\n" + "".join(f"c{i},{20 + i + 0.5}\n" for i in range(12)), encoding="utf-8"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "case_id,value\n" + "".join(f"c{i},{20 + i + 4}\n" for i in range(11)), encoding="utf-8"
    )
    return ref, good, bad


def test_evaluate_and_rank_with_cli_runner(tmp_path: Path) -> None:
    ref, good, bad = _regression_files(tmp_path)
    attrs = tmp_path / "cases.csv"
    attrs.write_text(
        "case_id,sex\n" + "".join(f"c{i},{'FM'[i % 2]}\n" for i in range(12)), encoding="utf-8"
    )
    r1 = runner.invoke(
        app,
        [
            "evaluate",
            "--task",
            "regression",
            "--reference",
            str(ref),
            "--prediction",
            str(good),
            "--out",
            str(tmp_path / "good.json"),
            "--report",
            str(tmp_path / "good.html"),
            "--subgroups",
            str(attrs),
            "--by",
            "sex",
            "--bootstrap",
            "50",
        ],
    )
    assert r1.exit_code == 0, r1.output
    assert "abs_error" in r1.output
    data = json.loads((tmp_path / "good.json").read_text())
    assert data["task"] == "regression" and data["aggregate"]["abs_error"]["mean"] == 0.5
    assert data["subgroups"][0]["attribute"] == "sex"
    assert (tmp_path / "good.html").read_text().startswith("<!doctype html>")

    r2 = runner.invoke(
        app,
        [
            "evaluate",
            "--task",
            "regression",
            "--reference",
            str(ref),
            "--prediction",
            str(bad),
            "--out",
            str(tmp_path / "bad.json"),
        ],
    )
    assert r2.exit_code == 0, r2.output
    assert "1 missing" in r2.output

    r3 = runner.invoke(
        app,
        [
            "rank",
            str(tmp_path / "good.json"),
            str(tmp_path / "bad.json"),
            "--metric",
            "abs_error",
            "--bootstrap",
            "100",
            "--name",
            "good=Team Good",
            "--out",
            str(tmp_path / "ranking.json"),
            "--report",
            str(tmp_path / "ranking.html"),
        ],
    )
    assert r3.exit_code == 0, r3.output
    ranking = json.loads((tmp_path / "ranking.json").read_text())
    assert [t["team"] for t in ranking["teams"]] == ["Team Good", "bad"]
    assert ranking["teams"][0]["rank_interval"] == [1, 1]


def test_cli_errors_are_clean(tmp_path: Path) -> None:
    ref, good, _ = _regression_files(tmp_path)
    r = runner.invoke(
        app, ["evaluate", "--task", "nope", "--reference", str(ref), "--prediction", str(good)]
    )
    assert r.exit_code == 2 and "unknown task" in r.output
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--task",
            "regression",
            "--reference",
            str(ref),
            "--prediction",
            str(good),
            "--set",
            "value_colum=x",
            "--out",
            str(tmp_path / "x.json"),
        ],
    )
    assert r.exit_code == 2 and "value_colum" in r.output
    r = runner.invoke(app, ["rank", str(tmp_path / "missing.json"), "--metric", "mae"])
    assert r.exit_code == 2 and "missing.json" in r.output


def test_evaluate_as_a_real_subprocess(tmp_path: Path) -> None:
    ref, good, _ = _regression_files(tmp_path)
    exe = Path(sys.executable).parent / "medarena"
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            str(exe),
            "evaluate",
            "--task",
            "regression",
            "--reference",
            str(ref),
            "--prediction",
            str(good),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["dataset_metrics"]["mae"] == 0.5 and data["missing"] == []

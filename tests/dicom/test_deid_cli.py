"""`medarena deid IN OUT` end to end through the Typer app."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from deid_helpers import SECRET, sample
from pydicom import dcmread
from typer.testing import CliRunner

from medarena.cli.main import app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDARENA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDARENA_SECRET_KEY", SECRET.decode())
    src = tmp_path / "in" / "Doe^Jane"
    src.mkdir(parents=True)
    shutil.copy(sample("CT_small.dcm"), src / "ct.dcm")
    shutil.copy(sample("SC_rgb.dcm"), src / "sc.dcm")
    return tmp_path


def test_cli_deid_summary_and_strict(env: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["deid", str(env / "in"), str(env / "out"), "--no-retain-dates"])
    assert res.exit_code == 0, res.output
    assert "quarantined" in res.output and "Doe^Jane/sc.dcm" in res.output
    written = [p for p in (env / "out").rglob("*.dcm")]
    assert len(written) == 1
    ds = dcmread(written[0])
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    ct = dcmread(sample("CT_small.dcm"))
    assert str(ct.PatientName) not in res.output and ct.PatientID not in res.output
    strict = runner.invoke(app, ["deid", str(env / "in"), str(env / "out2"), "--strict"])
    assert strict.exit_code == 1


def test_cli_help_lists_options() -> None:
    res = CliRunner().invoke(
        app, ["deid", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    )
    assert res.exit_code == 0
    for flag in (
        "--retain-dates",
        "--clean-descriptors",
        "--allow-unknown-sop-classes",
        "--strict",
    ):
        assert flag in res.output

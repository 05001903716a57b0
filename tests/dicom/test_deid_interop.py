"""dciodvfy (dicom3tools) finds no error in the output that the input did not already have."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from deid_helpers import dataset_bytes, make_ctx, make_seg, sample
from pydicom import dcmread

pytestmark = pytest.mark.interop

_ADDRESS = re.compile(r"0x[0-9a-f]+|\d+")


def _errors(path: Path) -> set[str]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    # Values differ after de-identification; compare the error kinds and attributes.
    return {line.split(" = ")[0] for line in lines if line.startswith("Error")}


@pytest.fixture(scope="module")
def dciodvfy() -> None:
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy missing: apt-get install -y dicom3tools")


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "MR2_UNCR.dcm", "SEG"]
)
@pytest.mark.parametrize("flags", [{}, {"retain_modified_dates": False}])
def test_no_new_dciodvfy_errors(
    dciodvfy: None, name: str, flags: dict[str, bool], tmp_path: Path
) -> None:
    src = make_seg(sample("CT_small.dcm"), tmp_path / "seg.dcm") if name == "SEG" else sample(name)
    before = _errors(src)
    ds = dcmread(src)
    outcome = make_ctx(**flags).deidentify(ds)
    assert outcome.status == "done"
    dataset_bytes(outcome.dataset, tmp_path, "out.dcm")  # type: ignore[arg-type]
    after = _errors(tmp_path / "out.dcm")
    assert after <= before, sorted(after - before)

"""A labels CSV with NaN or inf cells ingests the same way on SQLite and PostgreSQL.

NaN is how many tools write a missing value: it becomes a missing label. An infinite label
is refused with the line, column and value. (PostgreSQL's json type has no NaN token, and
its float columns keep NaN where SQLite stores NULL.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medarena.datasets.catalogue import Catalogue, case_records
from medarena.datasets.ingest import IngestOptions, ingest
from medarena_testkit import write_nifti


def test_nan_is_missing_and_inf_is_refused(any_catalogue: Catalogue, tmp_path: Path) -> None:
    src = tmp_path / "vols"
    src.mkdir()
    for i in range(3):
        write_nifti(src / f"case{i}.nii.gz", np.full((4, 4, 3), float(i), np.float32))
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "case_id,grade,volume,age\ncase0,NaN,1.5,nan\ncase1,2,inf,40\ncase2,nan,-Infinity,\n"
    )
    summary = ingest(any_catalogue, src, "vols", IngestOptions(labels_csv=labels))
    assert summary.cases_added == 3 and summary.labels_applied == 3
    reasons = [i.reason for i in summary.issues]
    assert reasons == [
        "line 3: column 'volume' value 'inf' is not a finite number "
        "(leave the cell empty for a missing value)",
        "line 4: column 'volume' value '-Infinity' is not a finite number "
        "(leave the cell empty for a missing value)",
    ]
    recs = {r["case_key"]: r for r in case_records(any_catalogue, "vols")}
    assert recs["case0"]["labels"] == {"grade": None, "volume": 1.5}
    assert recs["case0"]["age_years"] is None
    assert recs["case1"]["labels"] == {"grade": 2}
    assert recs["case1"]["age_years"] == 40
    assert recs["case2"]["labels"] == {"grade": None}

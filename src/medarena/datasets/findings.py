"""Reference of a detection case (lung nodules), stored as one JSON object of the case.

A detection case is the CT (role ``image``, as ingested) plus one object of role
``findings`` (media type ``application/json``)::

    {"nodules": [{"x": 12.5, "y": -40.0, "z": 88.0, "diameter_mm": 6.2}, ...],
     "excluded": [{"x": ..., "y": ..., "z": ..., "diameter_mm": ...}, ...]}

in world millimetres of the image, as LUNA16's ``annotations.csv`` and
``annotations_excluded.csv``; empty lists for a scan without findings.

Why an object and not ``case.labels`` or ``case.extra``: a scan holds any number of nodules
(``labels`` is one flat value per name, written as one CSV row per case), and ``extra``
carries case attributes that pages and subgroup columns read. An object of its own role is
replaced whole, and the download and viewer rules already decide by role: the findings
go where a label map goes (training download, organizers' reference download) and nowhere
else, so a hidden case's findings are never offered to a participant.

:func:`attach_findings` stores them from the two CSV files (what the lung-nodule demo
generator writes); :func:`write_reference_csv` writes the CSV ``medarena evaluate --task
detection`` reads, with the excluded findings flagged in its ``excluded`` column.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from medarena.datasets.case_objects import NewObject, replace_objects
from medarena.datasets.catalogue import Catalogue
from medarena.db.models import Case, Dataset
from medarena.errors import InputError, NotFoundError
from medarena.storage import LocalObjectStore

FINDINGS_ROLE = "findings"
JSON_MEDIA_TYPE = "application/json"
REFERENCE_COLUMNS = ("case_id", "x", "y", "z", "diameter_mm", "excluded")
# column -> names accepted for it (ours, then LUNA16's)
_COLUMNS = {
    "case_id": ("case_id", "seriesuid"),
    "x": ("x", "coordX"),
    "y": ("y", "coordY"),
    "z": ("z", "coordZ"),
    "diameter_mm": ("diameter_mm",),
}
_POINT = ("x", "y", "z", "diameter_mm")

Point = dict[str, float]


def _column_map(fields: list[str], path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for col, names in _COLUMNS.items():
        name = next((n for n in names if n in fields), None)
        if name is None:
            raise InputError(
                f"line 1: needs a column {' or '.join(repr(n) for n in names)}",
                path=path,
                value=fields,
            )
        found[col] = name
    return found


def read_findings_csv(path: Path) -> dict[str, list[Point]]:
    """Findings per case id of a LUNA16-style CSV, every row checked.

    Columns ``case_id, x, y, z, diameter_mm`` (LUNA16's ``seriesuid, coordX, coordY,
    coordZ`` are accepted too). A row with empty x, y, z and diameter declares a case
    without findings. InputError names the file, the line and the value of the first bad
    row: a coordinate or diameter that is not a finite number, a negative diameter.
    """
    out: dict[str, list[Point]] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = _column_map(list(reader.fieldnames or []), path)
            for row in reader:
                line = reader.line_num
                cid = (row.get(cols["case_id"]) or "").strip()
                if not cid:
                    raise InputError(f"line {line}: empty case id", path=path)
                cells = {k: (row.get(cols[k]) or "").strip() for k in _POINT}
                points = out.setdefault(cid, [])
                if not any(cells.values()):
                    continue  # declares the case
                point: Point = {}
                for k, text in cells.items():
                    try:
                        v = float(text)
                    except ValueError:
                        v = math.nan
                    if not math.isfinite(v):
                        raise InputError(
                            f"line {line}: {k} must be a finite number (case {cid})",
                            path=path,
                            value=text,
                        )
                    point[k] = v
                if point["diameter_mm"] < 0:
                    raise InputError(
                        f"line {line}: diameter_mm must be >= 0 mm (case {cid})",
                        path=path,
                        value=cells["diameter_mm"],
                    )
                points.append(point)
    except OSError as exc:
        raise InputError(f"cannot read the findings file ({exc.strerror})", path=path) from None
    except UnicodeDecodeError:
        raise InputError("the findings file is not UTF-8 text", path=path) from None
    except csv.Error as exc:
        raise InputError(f"not a readable CSV ({exc})", path=path) from None
    return out


def findings_json(nodules: list[Point], excluded: list[Point]) -> bytes:
    """The stored form of one case's findings (canonical JSON: equal findings, equal digest)."""
    return json.dumps({"nodules": nodules, "excluded": excluded}, sort_keys=True).encode()


def load_findings(store: LocalObjectStore, case: Case) -> dict[str, list[Point]]:
    """The findings of ``case``; RuntimeError when it has none (an organizer's data problem)."""
    objects = [o for o in case.objects if o.role == FINDINGS_ROLE]
    if len(objects) != 1:
        raise RuntimeError(
            f"case {case.case_key!r} has {len(objects)} findings objects; exactly one is needed"
        )
    data: Any = json.loads(store.get_bytes(objects[0].digest))
    return {"nodules": list(data["nodules"]), "excluded": list(data["excluded"])}


def write_reference_csv(store: LocalObjectStore, cases: list[Case], path: Path) -> Path:
    """Write the detection reference of ``cases``: one row per finding, excluded flagged.

    A case without findings gets one row with empty coordinates (it declares the scan: its
    candidates are all false positives).
    """
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(REFERENCE_COLUMNS)
        for c in cases:
            found = load_findings(store, c)
            rows = [(p, 0) for p in found["nodules"]] + [(p, 1) for p in found["excluded"]]
            if not rows:
                w.writerow([c.case_key, "", "", "", "", ""])
            for p, flag in rows:
                w.writerow([c.case_key, *(repr(float(p[k])) for k in _POINT), flag])
    return path


@dataclass
class FindingsSummary:
    """What :func:`attach_findings` stored."""

    cases: int = 0
    nodules: int = 0
    excluded: int = 0


def attach_findings(
    cat: Catalogue, dataset: str, annotations: Path, excluded: Path | None = None
) -> FindingsSummary:
    """Store the findings of the cases named in ``annotations`` (and ``excluded``).

    Both files are read and checked first, and every case id must be a case of the dataset;
    on any problem InputError names the file, the line and the value, and nothing is
    stored. The two files are the complete findings of every case they name (a case named
    in one file only has no findings of the other kind): its earlier findings are replaced.
    Cases named in neither file keep theirs.
    """
    nodules = read_findings_csv(annotations)
    excl = read_findings_csv(excluded) if excluded is not None else {}
    keys = sorted(set(nodules) | set(excl))
    with cat.sessions() as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == dataset))
        if ds is None:
            raise NotFoundError(f"no dataset named {dataset!r}")
        known = set(
            s.scalars(
                select(Case.case_key).where(Case.dataset_id == ds.id, Case.case_key.in_(keys))
            )
        )
    for path, rows in ((annotations, nodules), (excluded, excl)):
        unknown = sorted(set(rows) - known)
        if unknown:
            raise InputError(
                f"case ids that are not cases of dataset {dataset!r}", path=path, value=unknown[:10]
            )
    summary = FindingsSummary()
    with cat.sessions() as s, s.begin():
        for case in s.scalars(
            select(Case)
            .where(Case.dataset_id == ds.id, Case.case_key.in_(keys))
            .options(selectinload(Case.objects))
        ):
            n, e = nodules.get(case.case_key, []), excl.get(case.case_key, [])
            new = NewObject(
                FINDINGS_ROLE,
                findings_json(n, e),
                JSON_MEDIA_TYPE,
                f"{case.case_key}.findings.json",
            )
            replace_objects(s, cat.store, case, lambda role: role == FINDINGS_ROLE, [new])
            summary.cases += 1
            summary.nodules += len(n)
            summary.excluded += len(e)
    return summary

"""Every row of PS3.15 Table E.1-1 (procedure v1), at top level and two sequences deep.

For each row the attribute is planted in a small CT dataset, once at top level and
once inside ReferencedSeriesSequence > ReferencedInstanceSequence (both not in the
table, so kept and walked), and the action the table prescribes is asserted.
"""

from __future__ import annotations

from datetime import date

import pytest
from deid_helpers import make_ctx
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from medarena.dicom.deid import DeidOptions, load_procedure
from medarena.dicom.deid.procedure import Op, Rule, op_for_rule

PROC = load_procedure()
# File meta (group 0002) rows are checked on written files in test_deid_files.py.
RULES = [r for r in PROC.rules if not r.tag.startswith("0002")]

_VALUES: dict[str, object] = {
    "AE": "SECRETAE",
    "AS": "045Y",
    "CS": "SECRETCS",
    "DA": "20200102",
    "DS": "1.5",
    "DT": "20200102101010",
    "IS": "12",
    "LO": "Secret John Doe",
    "LT": "Secret John Doe",
    "PN": "Doe^John",
    "SH": "SECRET SH",
    "ST": "Secret John Doe",
    "TM": "101010",
    "UC": "Secret John Doe",
    "UI": "1.2.3.4.5.6.7",
    "UT": "Secret John Doe",
    "US": 7,
    "UL": 7,
    "SS": 7,
    "SL": 7,
    "FL": 1.5,
    "FD": 1.5,
    "OB": b"\x01\x02",
    "OW": b"\x01\x02",
    "UN": b"\x01\x02",
}


def _value(vr: str) -> object:
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = "SECRET"
        return Sequence([item])
    return _VALUES[vr.split(" ")[0]]


def _base() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "MRN-4711"
    ds.PatientName = "Doe^John"
    return ds


def _plant(rule: Rule, where: str) -> tuple[Dataset, Dataset]:
    ds = _base()
    vr = rule.vr.split(" ")[0]
    holder = ds
    if where == "nested":
        outer, inner = Dataset(), Dataset()
        outer.ReferencedInstanceSequence = Sequence([inner])
        ds.ReferencedSeriesSequence = Sequence([outer])
        holder = inner
    holder.add(DataElement(rule.tag_int, vr, _value(rule.vr)))
    return ds, holder


def _is_empty(value: object) -> bool:
    return value in (None, "", b"") or (isinstance(value, Sequence) and len(value) == 0)


def _check(op: Op, rule: Rule, holder: Dataset, original: object, where: str) -> None:
    tag = rule.tag_int
    if rule.tag in ("00100020", "00100010") and where == "top":
        assert str(holder[tag].value).startswith("P")
        return
    if op is Op.REMOVE:
        assert tag not in holder
        return
    assert tag in holder, f"{rule.keyword} must stay present ({op})"
    value = holder[tag].value
    if op is Op.EMPTY:
        assert _is_empty(value)
    elif op is Op.DUMMY:
        assert not _is_empty(value) and value != original
    elif op is Op.UID:
        if isinstance(value, Sequence):
            assert len(value) == 1  # kept, walked inside
        else:
            assert str(value).startswith("2.25.") and value != original
    elif op is Op.KEEP:
        if isinstance(value, Sequence):
            assert len(value) == 1
        else:
            assert value == original
    elif op is Op.SHIFT_DATE:
        vr = holder[tag].VR
        if vr == "DA":
            shifted = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
            assert shifted != date(2020, 1, 2)
        elif vr == "DT":
            assert value != original and value.endswith("101010")
        else:
            assert value == original  # TM: whole-day shift leaves the time unchanged
    elif op is Op.SCRUB_TEXT and holder[tag].VR in ("LO", "LT", "ST", "UT", "UC", "SH"):
        assert "john" not in str(value).lower() and "doe" not in str(value).lower()
        if "Secret" in str(original):
            assert "Secret" in str(value)  # the rest of the text is kept


@pytest.mark.parametrize("where", ["top", "nested"])
@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.keyword)
def test_basic_profile_row(rule: Rule, where: str) -> None:
    options = DeidOptions(retain_modified_dates=False)
    ds, holder = _plant(rule, where)
    original = holder[rule.tag_int].value
    outcome = make_ctx(retain_modified_dates=False).deidentify(ds)
    assert outcome.status == "done"
    _check(op_for_rule(rule, options), rule, holder, original, where)


_COLUMNS = (
    "retain_modified_dates",
    "retain_full_dates",
    "retain_patient_characteristics",
    "retain_device_identity",
    "retain_institution_identity",
    "clean_descriptors",
)
_OPTION_CASES = [
    (rule, col)
    for rule in RULES
    for col in _COLUMNS
    if col in rule.options and rule.options[col] in ("K", "C")
]


@pytest.mark.parametrize(
    ("rule", "column"), _OPTION_CASES, ids=[f"{r.keyword}-{c}" for r, c in _OPTION_CASES]
)
def test_option_column_row(rule: Rule, column: str) -> None:
    flags = {"retain_modified_dates": False, column: True}
    options = DeidOptions(**flags)
    op = op_for_rule(rule, options)
    assert op in (Op.KEEP, Op.SHIFT_DATE, Op.SCRUB_TEXT, Op.UID)
    for where in ("top", "nested"):
        ds, holder = _plant(rule, where)
        original = holder[rule.tag_int].value
        assert make_ctx(**flags).deidentify(ds).status == "done"
        _check(op, rule, holder, original, where)


def test_table_covers_known_rows() -> None:
    keywords = {r.keyword for r in PROC.rules}
    for kw in ("PatientName", "PatientID", "StudyInstanceUID", "InstitutionName", "StudyDate"):
        assert kw in keywords
    assert len(PROC.rules) > 400
    for rule in PROC.rules:
        assert rule.justification
        if "/" in rule.basic:
            assert rule.resolution_note, rule.keyword

"""Value-level operations: dummy values per VR, date shifting and descriptor scrubbing."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, timedelta

# Dummy values (action D) must be non-empty and valid for their VR.
DUMMY_BY_VR: dict[str, object] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "TM": "000000",
    "UC": "ANONYMIZED",
    "UR": "urn:anonymized",
    "UT": "ANONYMIZED",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "OB": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}

TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN"})


class UnshiftableDate(ValueError):
    """A DA/DT value that cannot be parsed, so it cannot be shifted safely."""


def _shift_yyyymmdd(text: str, days: int) -> str:
    # Partial dates (YYYY, YYYYMM) are shifted from their first day and kept at the
    # same precision, so a year-only value may move by one year more or less than
    # the exact shift; full dates move by exactly ``days``.
    if len(text) == 8:
        y, m, d = int(text[:4]), int(text[4:6]), int(text[6:8])
        return (date(y, m, d) + timedelta(days=days)).strftime("%Y%m%d")
    if len(text) == 6:
        shifted = date(int(text[:4]), int(text[4:6]), 1) + timedelta(days=days)
        return shifted.strftime("%Y%m")
    if len(text) == 4:
        return (date(int(text), 1, 1) + timedelta(days=days)).strftime("%Y")
    raise UnshiftableDate(text)


def shift_da(value: str, days: int) -> str:
    """Shift one DA value (also a query range ``A-B`` or legacy ``YYYY.MM.DD``)."""
    text = value.strip()
    if not text:
        return text
    if "-" in text:
        return "-".join(shift_da(part, days) if part else "" for part in text.split("-"))
    text = text.replace(".", "")
    if len(text) != 8 or not text.isdigit():
        raise UnshiftableDate(value)
    try:
        return _shift_yyyymmdd(text, days)
    except ValueError:
        raise UnshiftableDate(value) from None


_DT_RE = re.compile(r"^(\d{4}(?:\d{2}(?:\d{2})?)?)(\d*(?:\.\d+)?)([+-]\d{4})?$")


def shift_dt(value: str, days: int) -> str:
    """Shift one DT value by whole days; time of day, fraction and UTC offset are kept."""
    text = value.strip()
    if not text:
        return text
    m = _DT_RE.match(text)
    if m is None:
        raise UnshiftableDate(value)
    datepart, rest, tz = m.group(1), m.group(2), m.group(3) or ""
    try:
        return _shift_yyyymmdd(datepart, days) + rest + tz
    except ValueError:
        raise UnshiftableDate(value) from None


_WORD_RE = re.compile(r"[A-Za-z0-9]+")
# Tokens that look like dates or identifiers are removed whatever the dataset holds:
# a date in a description would undo the date shift, a long number is often an MRN.
_DATE_LIKE = re.compile(
    r"\b(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|(?:19|20)\d{6})\b"
)
_LONG_NUMBER = re.compile(r"\b\w*\d{5,}\w*\b")
_SPACES = re.compile(r"\s{2,}")


class DescriptorScrubber:
    """Removes identifying tokens, found elsewhere in the same dataset, from free text.

    What it does, in order, case-insensitively:
    1. every identifying value of three or more characters (patient name in
       ``Family^Given`` and ``Given Family`` forms, IDs, accession number, staff
       names, institution, ...) is cut out wherever it occurs;
    2. every word (run of letters/digits) of two or more characters that is a word
       of an identifying value is cut out;
    3. date-like tokens (2019-03-04, 04.03.2019, 20190304) and any word containing
       five or more consecutive digits are cut out;
    4. leftover runs of spaces are collapsed and the text is stripped.
    Everything else (e.g. "CT CHEST W CONTRAST") is kept.
    """

    def __init__(self, identifying_values: Iterable[str]) -> None:
        phrases: set[str] = set()
        words: set[str] = set()
        for raw in identifying_values:
            value = raw.strip()
            if not value:
                continue
            forms = {value}
            if "^" in value:
                parts = [p for p in value.split("^") if p]
                forms.add(" ".join(parts))
                forms.add(" ".join(reversed(parts[:2])))
                forms.add(", ".join(parts[:2]))
            for form in forms:
                if len(form) >= 3:
                    phrases.add(form.lower())
            words.update(w.lower() for w in _WORD_RE.findall(value) if len(w) >= 2)
        # Longest first, so "John Smith" is cut before "John".
        self._phrase_re = (
            re.compile("|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True)), re.I)
            if phrases
            else None
        )
        self._words = words

    def scrub(self, text: str) -> str:
        """Return ``text`` without identifying tokens (may be empty)."""
        out = text
        if self._phrase_re is not None:
            out = self._phrase_re.sub(" ", out)
        if self._words:
            out = _WORD_RE.sub(
                lambda m: " " if m.group(0).lower() in self._words else m.group(0), out
            )
        out = _DATE_LIKE.sub(" ", out)
        out = _LONG_NUMBER.sub(" ", out)
        return _SPACES.sub(" ", out).strip(" ,;:-_/^")

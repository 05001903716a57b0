"""Shared checks of the demo-generator tests: same-seed bytes, and ingest of a track as is."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medarena.config import get_settings
from medarena.datasets.catalogue import case_records, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.demo.generators.common import GeneratedTrack


def metadata(track: GeneratedTrack) -> dict[str, dict[str, str]]:
    """metadata.csv of a track by case id."""
    with open(track.ingest_dir / "metadata.csv", newline="") as fh:
        return {r["case_id"]: r for r in csv.DictReader(fh)}


def assert_same_bytes(track: GeneratedTrack, again: GeneratedTrack) -> None:
    """Two generations with one seed wrote the same files with the same bytes."""
    assert again.files == track.files
    for rel in track.files:
        assert (again.root / rel).read_bytes() == (track.root / rel).read_bytes(), rel
    assert (again.root / "track.json").read_bytes() == (track.root / "track.json").read_bytes()


def ingest_track(track: GeneratedTrack, data_dir: Path, dataset: str) -> dict[str, dict[str, Any]]:
    """Ingest ``track.ingest_dir`` into a fresh catalogue; its case records by case key."""
    cat = open_catalogue(get_settings(data_dir=data_dir))
    try:
        summary = ingest(cat, track.ingest_dir, dataset)
        assert not summary.issues, summary.issues
        assert summary.cases_added == len(track.train_ids) + len(track.test_ids)
        again = ingest(cat, track.ingest_dir, dataset)
        assert again.cases_added == 0  # idempotent: generated files are stable
        return {r["case_key"]: r for r in case_records(cat, dataset)}
    finally:
        cat.close()


def assert_metadata_arrived(
    track: GeneratedTrack,
    records: dict[str, dict[str, Any]],
    n_channels: int,
    vendor_of: Callable[[str], str],
) -> None:
    """Every case has its channels, one label object and the metadata attributes."""
    meta = metadata(track)
    assert set(records) == {*track.train_ids, *track.test_ids}
    for cid, rec in records.items():
        roles = [o["role"] for o in rec["objects"]]
        assert roles.count("image") == n_channels, cid
        assert roles.count("label") == 1, cid
        assert rec["sex"] == meta[cid]["sex"]
        assert rec["age_years"] == int(meta[cid]["age"])
        assert rec["site"] == meta[cid]["site"]
        assert rec["manufacturer"] == meta[cid]["manufacturer"] == vendor_of(rec["site"])
    assert {r["site"] for r in records.values()} == {"site-A", "site-B", "site-C"}

from __future__ import annotations

from pathlib import Path

import pytest

from medarena.datasets.catalogue import (
    Catalogue,
    case_records,
    dataset_stats,
    make_split,
    plot_stats,
)
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.errors import InputError, NotFoundError
from medarena_testkit import make_ct_series


@pytest.fixture
def ct_dataset(catalogue: Catalogue, tmp_path: Path) -> Catalogue:
    # 6 patients, patients 0 and 1 with two series each; alternating sex.
    for p in range(6):
        for s in range(2 if p < 2 else 1):
            make_ct_series(
                tmp_path / "in" / f"p{p}s{s}",
                patient_id=f"PAT-{p}",
                patient_name=f"Name^{p}",
                n=2,
                sex="F" if p % 2 else "M",
                birth_date=f"19{50 + 5 * p}0101",
            )
    ingest(catalogue, tmp_path / "in", "ct")
    return catalogue


def test_split_keeps_patients_together_and_marks_hidden(ct_dataset: Catalogue) -> None:
    spec = SplitSpec(ratios=(0.5, 0.0, 0.5), hidden=("test",), seed=1)
    counts = make_split(ct_dataset, "ct", spec)
    assert sum(counts.values()) == 8
    recs = case_records(ct_dataset, "ct")
    by_patient: dict[str, set[str]] = {}
    for r in recs:
        by_patient.setdefault(r["patient_pseudonym"], set()).add(r["splits"]["default"])
    assert len(by_patient) == 6
    assert all(len(v) == 1 for v in by_patient.values())
    # Deterministic: the same spec again (replace) gives the same assignment.
    make_split(ct_dataset, "ct", spec, replace=True)
    assert case_records(ct_dataset, "ct") == recs
    with pytest.raises(InputError, match="already has a split"):
        make_split(ct_dataset, "ct", spec)


def test_stats_counts_and_plot(ct_dataset: Catalogue, tmp_path: Path) -> None:
    make_split(ct_dataset, "ct", SplitSpec(stratify_by="sex"))
    stats = dataset_stats(ct_dataset, "ct")
    assert stats["n_cases"] == 8 and stats["patients"] == 6
    assert stats["modality"] == {"CT": 8}
    assert stats["sex"] == {"M": 4, "F": 4}
    assert sum(stats["age_band"].values()) == 8
    assert sum(stats["splits"]["default"].values()) == 8
    assert stats["size"]["median"] == [128, 128, 2]
    out = tmp_path / "stats.png"
    plot_stats(ct_dataset, "ct", str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_unknown_dataset_names_known_ones(ct_dataset: Catalogue) -> None:
    with pytest.raises(NotFoundError, match="known datasets: ct"):
        dataset_stats(ct_dataset, "nope")


def test_stratify_by_unknown_attribute(ct_dataset: Catalogue) -> None:
    with pytest.raises(InputError, match="stratify_by"):
        make_split(ct_dataset, "ct", SplitSpec(stratify_by="colour"))

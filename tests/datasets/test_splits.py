from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from medarena.datasets.splits import SplitCase, SplitSpec, assign


def _cases(n_patients: int = 40, per_patient: int = 3) -> list[SplitCase]:
    out = []
    for p in range(n_patients):
        for i in range(per_patient):
            out.append(
                SplitCase(key=f"p{p}_c{i}", group=f"p{p}", stratum="pos" if p % 4 == 0 else "neg")
            )
    return out


def test_deterministic_and_order_independent() -> None:
    cases = _cases()
    spec = SplitSpec(seed=3)
    a = assign(cases, spec)
    shuffled = cases[:]
    random.Random(1).shuffle(shuffled)
    assert assign(shuffled, spec) == a
    assert assign(cases, SplitSpec(seed=4)) != a


def test_no_group_in_two_subsets() -> None:
    cases = _cases()
    a = assign(cases, SplitSpec())
    by_group: dict[str, set[str]] = {}
    for c in cases:
        by_group.setdefault(c.group, set()).add(a[c.key])
    assert all(len(s) == 1 for s in by_group.values())


def test_ratios_and_stratification() -> None:
    cases = _cases(n_patients=100, per_patient=1)
    a = assign(cases, SplitSpec(ratios=(0.6, 0.2, 0.2)))
    counts = Counter(a.values())
    assert counts == {"train": 60, "validation": 20, "test": 20}
    # Positives (25 of 100) spread in the same proportions, within one case.
    pos = Counter(a[c.key] for c in cases if c.stratum == "pos")
    assert abs(pos["train"] - 15) <= 1 and abs(pos["test"] - 5) <= 1


def test_spec_validation_names_the_problem() -> None:
    with pytest.raises(ValidationError, match="3 subsets"):
        SplitSpec(ratios=(0.5, 0.5))
    with pytest.raises(ValidationError, match="hidden subsets"):
        SplitSpec(hidden=("holdout",))

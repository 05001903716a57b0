"""Deterministic train / validation / test assignment.

The assignment depends only on the seed, the ratios and the set of cases (their
keys, group values and strata), never on the order the cases were ingested in.
Grouping (by patient or site) keeps every group in one subset; stratification
(by a label or attribute) allocates each stratum's groups across subsets in the
given ratios. A group's stratum is the most frequent value among its cases.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from medarena.errors import InputError


class SplitSpec(BaseModel):
    """How to split a dataset; stored with the split so it can be reproduced."""

    name: str = "default"
    subsets: tuple[str, ...] = ("train", "validation", "test")
    ratios: tuple[float, ...] = (0.7, 0.1, 0.2)
    seed: int = 0
    stratify_by: str | None = Field(
        default=None, description="Case attribute or 'label:<name>' to stratify by."
    )
    group_by: str | None = Field(
        default="patient", description="'patient', 'site' or None (each case its own group)."
    )
    hidden: tuple[str, ...] = Field(default=(), description="Subsets participants never see.")

    @field_validator("ratios")
    @classmethod
    def _ratios_positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(r < 0 for r in v) or sum(v) <= 0:
            raise ValueError(f"ratios {v} must be non-negative and sum to more than 0")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SplitSpec:
        if len(self.subsets) != len(self.ratios):
            raise ValueError(
                f"{len(self.subsets)} subsets {self.subsets} but {len(self.ratios)} ratios"
            )
        unknown = set(self.hidden) - set(self.subsets)
        if unknown:
            raise ValueError(f"hidden subsets {sorted(unknown)} are not among {self.subsets}")
        return self


class SplitCase(BaseModel):
    key: str
    group: str
    stratum: str | None = None


def assign(cases: Sequence[SplitCase], spec: SplitSpec) -> dict[str, str]:
    """Return case key -> subset for ``cases`` under ``spec``."""
    keys = [c.key for c in cases]
    if len(set(keys)) != len(keys):
        dup = [k for k, n in Counter(keys).items() if n > 1][:5]
        raise InputError("case keys must be unique within a split", value=dup)
    groups: dict[str, list[SplitCase]] = defaultdict(list)
    for c in cases:
        groups[c.group].append(c)
    # Stratum of a group: its most frequent stratum value (ties: smallest value).
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for g, members in groups.items():
        counts = Counter(str(m.stratum) for m in members)
        top = max(counts.values())
        by_stratum[min(v for v, n in counts.items() if n == top)].append(g)

    ratios = np.asarray(spec.ratios, dtype=float)
    ratios = ratios / ratios.sum()
    subset_of_group: dict[str, str] = {}
    # Carry the rounding remainder across strata so small strata do not all round
    # the same way (which would starve the small subsets).
    carry = np.zeros(len(ratios))
    for stratum in sorted(by_stratum):
        gs = sorted(by_stratum[stratum], key=lambda g: _order_key(spec.seed, stratum, g))
        sizes = np.array([len(groups[g]) for g in gs], dtype=float)
        total = sizes.sum()
        target = ratios * total + carry
        filled = np.zeros(len(ratios))
        for g, size in zip(gs, sizes, strict=True):
            # Put the group where it most reduces the shortfall relative to target.
            deficit = target - filled
            idx = int(np.argmax(deficit))
            subset_of_group[g] = spec.subsets[idx]
            filled[idx] += size
        carry = target - filled
    return {c.key: subset_of_group[c.group] for c in cases}


def _order_key(seed: int, stratum: str, group: str) -> str:
    return hashlib.sha256(f"{seed}\x00{stratum}\x00{group}".encode()).hexdigest()


def group_value(case_attrs: Mapping[str, object], group_by: str | None, key: str) -> str:
    """The group a case belongs to; cases without the attribute form their own group."""
    if group_by is None:
        return key
    attr = {"patient": "patient_pseudonym"}.get(group_by, group_by)
    value = case_attrs.get(attr)
    return f"{group_by}={value}" if value not in (None, "") else f"case={key}"

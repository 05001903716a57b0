"""The dataset catalogue: open it, list and show datasets, make splits, compute statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from medarena.config import Settings
from medarena.datasets.splits import SplitCase, SplitSpec, assign, group_value
from medarena.db.engine import create_engine_for, session_factory, upgrade
from medarena.db.models import Case, Dataset, Split, SplitAssignment
from medarena.errors import InputError, NotFoundError
from medarena.storage import LocalObjectStore, open_store

CASE_ATTRIBUTES = (
    "modality",
    "body_part",
    "manufacturer",
    "manufacturer_model",
    "sex",
    "age_years",
    "site",
    "study_date",
)


@dataclass
class Catalogue:
    """Handles on the research database and the object store."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: LocalObjectStore

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s:
            yield s

    def close(self) -> None:
        self.engine.dispose()


def open_catalogue(settings: Settings, *, migrate: bool = True) -> Catalogue:
    """Open (and by default migrate) the configured database and store."""
    settings.ensure_dirs()
    url = settings.resolved_database_url
    if migrate:
        upgrade(url)
    engine = create_engine_for(url)
    return Catalogue(settings, engine, session_factory(engine), open_store(settings))


def get_dataset(session: Session, name: str) -> Dataset:
    ds = session.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()
    if ds is None:
        known = session.scalars(select(Dataset.name).order_by(Dataset.name)).all()
        raise NotFoundError(
            f"no dataset named {name!r}; known datasets: {', '.join(known) or '(none)'}"
        )
    return ds


@dataclass
class DatasetSummary:
    name: str
    description: str
    n_cases: int
    created_at: str
    splits: list[str] = field(default_factory=list)


def list_datasets(cat: Catalogue) -> list[DatasetSummary]:
    with cat.session() as s:
        rows = s.execute(
            select(Dataset, func.count(Case.id))
            .outerjoin(Case, Case.dataset_id == Dataset.id)
            .group_by(Dataset.id)
            .order_by(Dataset.name)
        ).all()
        out = []
        for ds, n in rows:
            splits = s.scalars(
                select(Split.name).where(Split.dataset_id == ds.id).order_by(Split.name)
            ).all()
            out.append(
                DatasetSummary(ds.name, ds.description, n, ds.created_at.isoformat(), list(splits))
            )
        return out


def case_records(cat: Catalogue, name: str) -> list[dict[str, Any]]:
    """All cases of a dataset as plain dicts (attributes, labels, subsets per split)."""
    with cat.session() as s:
        ds = get_dataset(s, name)
        cases = s.scalars(
            select(Case)
            .where(Case.dataset_id == ds.id)
            .options(selectinload(Case.objects))
            .order_by(Case.case_key)
        ).all()
        subsets: dict[int, dict[str, str]] = {}
        for split_name, case_id, subset in s.execute(
            select(Split.name, SplitAssignment.case_id, SplitAssignment.subset)
            .join(Split, Split.id == SplitAssignment.split_id)
            .where(Split.dataset_id == ds.id)
            .order_by(Split.name)
        ):
            subsets.setdefault(case_id, {})[split_name] = subset
        return [
            {
                "case_key": c.case_key,
                "patient_pseudonym": c.patient_pseudonym,
                "source_format": c.source_format,
                **{a: getattr(c, a) for a in CASE_ATTRIBUTES},
                "shape": list(c.shape),
                "spacing": list(c.spacing),
                "labels": dict(c.labels),
                "objects": [
                    {"role": o.role, "digest": o.digest, "size": o.size, "name": o.name}
                    for o in c.objects
                ],
                "splits": subsets.get(c.id, {}),
            }
            for c in cases
        ]


def make_split(
    cat: Catalogue, name: str, spec: SplitSpec, *, replace: bool = False
) -> Counter[str]:
    """Assign every case of dataset ``name`` to a subset and store the split."""
    with cat.session() as s, s.begin():
        ds = get_dataset(s, name)
        existing = s.scalars(
            select(Split).where(Split.dataset_id == ds.id, Split.name == spec.name)
        ).one_or_none()
        if existing is not None:
            if not replace:
                raise InputError(
                    f"dataset {name!r} already has a split named {spec.name!r}",
                    hint="choose another --name or pass --replace",
                )
            s.delete(existing)
            s.flush()
        cases = s.scalars(select(Case).where(Case.dataset_id == ds.id)).all()
        if not cases:
            raise InputError(f"dataset {name!r} has no cases to split")
        split_cases = []
        for c in cases:
            attrs = {a: getattr(c, a) for a in (*CASE_ATTRIBUTES, "patient_pseudonym")}
            split_cases.append(
                SplitCase(
                    key=c.case_key,
                    group=group_value(attrs, spec.group_by, c.case_key),
                    stratum=_stratum(c, spec.stratify_by),
                )
            )
        mapping = assign(split_cases, spec)
        split = Split(
            dataset_id=ds.id,
            name=spec.name,
            spec=spec.model_dump(mode="json"),
            hidden_subsets=list(spec.hidden),
        )
        s.add(split)
        s.flush()
        for c in cases:
            subset = mapping[c.case_key]
            s.add(
                SplitAssignment(
                    split_id=split.id, case_id=c.id, subset=subset, hidden=subset in spec.hidden
                )
            )
        return Counter(mapping.values())


def _stratum(case: Case, stratify_by: str | None) -> str | None:
    if stratify_by is None:
        return None
    if stratify_by.startswith("label:"):
        return str(case.labels.get(stratify_by.removeprefix("label:")))
    if stratify_by == "age_band":
        return age_band(case.age_years)
    if stratify_by not in CASE_ATTRIBUTES:
        raise InputError(
            "stratify_by must be a case attribute, 'age_band' or 'label:<name>'",
            value=stratify_by,
            hint=f"attributes: {', '.join(CASE_ATTRIBUTES)}",
        )
    return str(getattr(case, stratify_by))


def age_band(age: float | None) -> str:
    """Decade bands ('40-49'); ages of 90 and over are one band, as HIPAA requires."""
    if age is None:
        return "unknown"
    if age >= 90:
        return "90+"
    lo = int(age // 10) * 10
    return f"{lo}-{lo + 9}"


def dataset_stats(cat: Catalogue, name: str) -> dict[str, Any]:
    """Counts by modality, sex, age band, site and split subset; size and spacing distributions."""
    records = case_records(cat, name)
    stats: dict[str, Any] = {"dataset": name, "n_cases": len(records)}
    for key in ("modality", "sex", "site", "manufacturer", "source_format"):
        stats[key] = dict(Counter(str(r[key] or "unknown") for r in records).most_common())
    stats["age_band"] = dict(sorted(Counter(age_band(r["age_years"]) for r in records).items()))
    split_counts: dict[str, dict[str, int]] = {}
    for r in records:
        for split_name, subset in r["splits"].items():
            split_counts.setdefault(split_name, Counter())[subset] += 1
    stats["splits"] = {k: dict(v) for k, v in split_counts.items()}
    stats["size"] = _distribution([r["shape"] for r in records])
    stats["spacing"] = _distribution([r["spacing"] for r in records])
    stats["patients"] = len({r["patient_pseudonym"] for r in records if r["patient_pseudonym"]})
    return stats


def _distribution(rows: list[list[float]]) -> dict[str, Any]:
    """Per-axis min / median / max over cases that share the most common dimensionality."""
    rows = [r for r in rows if r]
    if not rows:
        return {}
    ndim = Counter(len(r) for r in rows).most_common(1)[0][0]
    arr = np.array([r for r in rows if len(r) == ndim], dtype=float)
    return {
        "ndim": ndim,
        "n": len(arr),
        "min": arr.min(axis=0).round(4).tolist(),
        "median": np.median(arr, axis=0).round(4).tolist(),
        "max": arr.max(axis=0).round(4).tolist(),
    }


def plot_stats(cat: Catalogue, name: str, path: str) -> None:
    """Write the distributions of a dataset as one figure (PNG, SVG or PDF by suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = case_records(cat, name)
    stats = dataset_stats(cat, name)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, key in zip(axes[0], ("modality", "sex", "site"), strict=True):
        counts = stats[key]
        ax.bar(list(counts), list(counts.values()), color="#3a7ca5")
        ax.set_title(f"cases by {key}")
        ax.tick_params(axis="x", rotation=30)
    ax = axes[1][0]
    ax.bar(list(stats["age_band"]), list(stats["age_band"].values()), color="#81c3d7")
    ax.set_title("cases by age band")
    ax.tick_params(axis="x", rotation=30)
    for ax, key, title in (
        (axes[1][1], "shape", "image size"),
        (axes[1][2], "spacing", "spacing (mm)"),
    ):
        values = [r[key] for r in records if r[key]]
        if values:
            ndim = min(len(v) for v in values)
            arr = np.array([v[:ndim] for v in values], dtype=float)
            ax.boxplot(
                [arr[:, i] for i in range(ndim)], tick_labels=[f"axis {i}" for i in range(ndim)]
            )
        ax.set_title(title)
    fig.suptitle(f"dataset {name}: {len(records)} cases")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

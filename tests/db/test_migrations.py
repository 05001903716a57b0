from __future__ import annotations

from sqlalchemy import inspect, select

from medarena.db.engine import create_engine_for, current_revision, session_factory, upgrade
from medarena.db.models import Case, Dataset, Split, SplitAssignment


def test_upgrade_creates_schema_and_is_idempotent(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    rev = current_revision(db_url)
    assert rev is not None
    upgrade(db_url)  # second run changes nothing
    assert current_revision(db_url) == rev
    engine = create_engine_for(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {"datasets", "cases", "case_objects", "ingested_sources", "splits"} <= tables
    assert {
        "users",
        "api_tokens",
        "challenges",
        "teams",
        "team_members",
        "submissions",
        "jobs",
        "audit_events",
    } <= tables
    engine.dispose()


def test_models_round_trip_and_cascade(db_url: str) -> None:
    upgrade(db_url)
    engine = create_engine_for(db_url)
    Session = session_factory(engine)
    with Session.begin() as s:
        ds = Dataset(name="chest", description="x")
        case = Case(
            case_key="c1", source_format="dicom", modality="CT", shape=[4, 4, 2], spacing=[1, 1, 2]
        )
        ds.cases.append(case)
        split = Split(name="default", spec={"seed": 1}, hidden_subsets=["test"])
        ds.splits.append(split)
        s.add(ds)
        s.flush()
        split.assignments.append(SplitAssignment(case_id=case.id, subset="test", hidden=True))
    with Session() as s:
        case = s.scalars(select(Case)).one()
        assert case.shape == [4, 4, 2] and case.spacing == [1, 1, 2]
        s.delete(s.scalars(select(Dataset)).one())
        s.commit()
        assert s.scalars(select(Case)).all() == []
        assert s.scalars(select(SplitAssignment)).all() == []
    engine.dispose()


def test_case_key_unique_per_dataset(db_url: str) -> None:
    import pytest
    from sqlalchemy.exc import IntegrityError

    upgrade(db_url)
    engine = create_engine_for(db_url)
    Session = session_factory(engine)
    with Session.begin() as s:
        s.add(Dataset(name="a", cases=[Case(case_key="k", source_format="nifti")]))
    with pytest.raises(IntegrityError), Session.begin() as s:
        ds = s.scalars(select(Dataset)).one()
        ds.cases.append(Case(case_key="k", source_format="nifti"))
    engine.dispose()


def test_downgrade_to_base_and_back(db_url: str) -> None:
    upgrade(db_url)
    from alembic import command
    from alembic.config import Config

    from medarena.db.engine import _MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    command.downgrade(cfg, "base")
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == "0004"

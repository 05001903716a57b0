"""Fixtures for challenge tests: a catalogue with a small split dataset, users, a spec."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import psycopg
import pytest
from sqlalchemy import make_url
from sqlalchemy.orm import Session

from medarena.challenges.spec import ChallengeSpec, parse_spec
from medarena.config import get_settings
from medarena.datasets.catalogue import Catalogue, make_split, open_catalogue
from medarena.datasets.ingest import ingest
from medarena.datasets.splits import SplitSpec
from medarena.db.engine import upgrade
from medarena.db.platform_models import User

N_CASES = 10
SECRET = "challenge-tests-secret-" + "x" * 32
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

SPEC_YAML = (Path(__file__).parent / "spec_small.yaml").read_text()


def write_dataset(root: Path, n: int = N_CASES) -> None:
    """``n`` tiny NIfTI cases with label maps and a grade column, in the generic layout."""
    (root / "labels").mkdir(parents=True)
    rows = ["case_id,grade"]
    for i in range(n):
        rng = np.random.default_rng(i)
        img = rng.normal(100, 10, (6, 5, 4)).astype(np.float32)
        lab = np.zeros((6, 5, 4), np.uint8)
        lab[1 : 2 + i % 3, 1:3, 1:3] = 1
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(img, affine), root / f"case{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), root / "labels" / f"case{i:02d}.nii.gz")
        rows.append(f"case{i:02d},{i % 4}")
    (root / "grades.csv").write_text("\n".join(rows) + "\n")


def _build_world(data_dir: Path, src: Path, **settings: object) -> None:
    """Ingest the tiny dataset as 'brain' and make split 'challenge' (test hidden)."""
    cat = open_catalogue(get_settings(data_dir=data_dir, **settings))
    try:
        summary = ingest(cat, src, "brain")
        assert summary.cases_added == N_CASES and not summary.issues
        make_split(
            cat,
            "brain",
            SplitSpec(name="challenge", ratios=(0.6, 0.2, 0.2), group_by=None, hidden=("test",)),
        )
    finally:
        cat.close()


@pytest.fixture(scope="session")
def _template_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data dir with dataset 'brain' and split 'challenge' (test hidden), built once."""
    base = tmp_path_factory.mktemp("challenge-template")
    write_dataset(base / "src")
    _build_world(base / "data", base / "src")
    return base / "data"


def _admin(server_url: str) -> psycopg.Connection:
    dsn = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(dsn, autocommit=True)


@contextmanager
def _pg_clone(server: str, template: str) -> Iterator[str]:
    """The URL of a new database copied from ``template``, dropped afterwards."""
    name = f"medarena_t_{uuid.uuid4().hex[:12]}"
    with _admin(server) as conn:
        conn.execute(f'create database "{name}" template "{template}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin(server) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def _pg_template(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """(template database, data dir of its object store): the same world on PostgreSQL.

    Built once per session; each test clones it with CREATE DATABASE ... TEMPLATE. Measured
    (A/B, two rounds, load 5-9 on 2 cores, 30 tests): set-up and tear-down cost 9-12 s with
    the clone, 26-36 s with a fresh schema migrated and ingested again per test (alembic
    and the ingest are CPU-bound Python; the clone is server-side I/O, 0.37 s idle).
    """
    server = postgres_server
    name = f"medarena_tpl_{uuid.uuid4().hex[:12]}"
    with _admin(server) as conn:
        conn.execute(f'create database "{name}"')
    try:
        base = tmp_path_factory.mktemp("challenge-template-pg")
        write_dataset(base / "src")
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        _build_world(base / "data", base / "src", database_url=url, secret_key=SECRET)
        yield name, base / "data"
    finally:
        with _admin(server) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(params=BACKENDS)
def catalogue(
    request: pytest.FixtureRequest, _template_data_dir: Path, tmp_path: Path
) -> Iterator[Catalogue]:
    """A private copy of the template world: on SQLite (file and object store copied),
    then on PostgreSQL (a database cloned from the template, the object store copied)."""
    if request.param == "sqlite":
        shutil.copytree(_template_data_dir, tmp_path / "data")
        cat = open_catalogue(get_settings(data_dir=tmp_path / "data"))
        yield cat
        cat.close()
        return
    server = request.getfixturevalue("postgres_server")
    template, template_dir = request.getfixturevalue("_pg_template")
    with _pg_clone(server, template) as url:
        shutil.copytree(template_dir, tmp_path / "data")
        cat = open_catalogue(  # the clone is at the head revision already
            get_settings(data_dir=tmp_path / "data", database_url=url, secret_key=SECRET),
            migrate=False,
        )
        yield cat
        cat.close()


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database at the head revision, built once."""
    path = tmp_path_factory.mktemp("migrated") / "empty.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=BACKENDS)
def platform_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of one's own for make_platform: a copy of a migrated
    SQLite file (make_platform's upgrade is then a no-op), then a fresh PostgreSQL schema.

    Measured (A/B, two rounds, load 3-4 on 2 cores, 29 tests): cloning a migrated
    PostgreSQL database cost 22-30 s in all, a schema migrated by make_platform 18-25 s.
    """
    if request.param == "sqlite":
        path = tmp_path / "platform.db"
        shutil.copyfile(request.getfixturevalue("_migrated_sqlite"), path)
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def session(catalogue: Catalogue) -> Iterator[Session]:
    with catalogue.sessions() as s:
        yield s


@pytest.fixture
def spec_yaml() -> str:
    return SPEC_YAML


@pytest.fixture
def spec() -> ChallengeSpec:
    return parse_spec(SPEC_YAML, "spec.yaml")


UserFactory = Callable[..., User]


@pytest.fixture
def make_user(session: Session) -> UserFactory:
    """Add a user row (password hashing is the accounts package's concern, not tested here)."""

    def make(email: str, *, admin: bool = False) -> User:
        u = User(email=email, display_name=email.split("@")[0], password_hash="x", is_admin=admin)
        session.add(u)
        session.flush()
        return u

    return make

"""The identity map (pseudonym -> original Patient ID / name, original -> new Study UID).

It is the only place where de-identified data can be linked back to a person, so it
lives in its own database, never in the research database: its own SQLAlchemy
metadata (not part of the Alembic chain), created with ``metadata.create_all`` on
open, at ``Settings.resolved_identity_database_url``. The embedded default is a
SQLite file ``<data_dir>/identity/identity.db`` in a directory of mode 0700 and a
file of mode 0600: only the account that runs de-identification (the data steward
/ admin) can open it; research users and services run as other accounts and never
get the file. With a server URL, give that database its own role that only admins
hold. Nothing here is logged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    select,
)
from sqlalchemy.engine import make_url

from medarena.config import Settings
from medarena.errors import ConfigError

metadata = MetaData()

patients = Table(
    "deid_patients",
    metadata,
    Column("pseudonym", String(32), primary_key=True),
    Column("original_patient_id", String(256), nullable=False),
    Column("original_patient_name", String(512), nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
)

studies = Table(
    "deid_studies",
    metadata,
    Column("original_study_uid", String(64), primary_key=True),
    Column("new_study_uid", String(64), nullable=False, index=True),
    Column("pseudonym", String(32), ForeignKey("deid_patients.pseudonym"), nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
)


class IdentityMap:
    """Records and looks up pseudonym <-> original identity in the identity database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def record_patient(
        self, pseudonym: str, *, original_patient_id: str, original_patient_name: str
    ) -> None:
        """Store a patient's pseudonym once (later calls for the same pseudonym change nothing)."""
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(patients.c.pseudonym).where(patients.c.pseudonym == pseudonym)
            ).first()
            if exists is None:
                conn.execute(
                    insert(patients).values(
                        pseudonym=pseudonym,
                        original_patient_id=original_patient_id,
                        original_patient_name=original_patient_name,
                        first_seen=datetime.now(UTC),
                    )
                )

    def record_study(self, pseudonym: str, original_study_uid: str, new_study_uid: str) -> None:
        """Store the original -> de-identified Study Instance UID of a patient's study once."""
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(studies.c.original_study_uid).where(
                    studies.c.original_study_uid == original_study_uid
                )
            ).first()
            if exists is None:
                conn.execute(
                    insert(studies).values(
                        original_study_uid=original_study_uid,
                        new_study_uid=new_study_uid,
                        pseudonym=pseudonym,
                        first_seen=datetime.now(UTC),
                    )
                )

    def original_patient_id(self, pseudonym: str) -> str | None:
        """The original Patient ID behind ``pseudonym`` (admins only: re-identification)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(patients.c.original_patient_id).where(patients.c.pseudonym == pseudonym)
            ).first()
        return None if row is None else str(row[0])

    def iter_patients(self) -> Iterator[tuple[str, str]]:
        """(pseudonym, original Patient ID) for every recorded patient."""
        with self.engine.connect() as conn:
            for row in conn.execute(select(patients.c.pseudonym, patients.c.original_patient_id)):
                yield str(row[0]), str(row[1])

    def close(self) -> None:
        self.engine.dispose()


def _prepare_sqlite_file(path: Path) -> None:
    # Create the directory and the file with their final modes before SQLite opens
    # them, so the map is never readable by others, not even for a moment.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"{path}: identity database has mode {oct(mode)}; it must be readable by its "
            f"owner only (chmod 600 {path})"
        )


def open_identity_map(settings: Settings) -> IdentityMap:
    """Open (and create if needed) the identity database named by Settings."""
    url = settings.resolved_identity_database_url
    if url == settings.resolved_database_url:
        raise ConfigError(
            "MEDARENA_IDENTITY_DATABASE_URL must differ from MEDARENA_DATABASE_URL: the "
            "identity map is kept apart from research data"
        )
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        _prepare_sqlite_file(Path(parsed.database))
    return IdentityMap(create_engine(url))

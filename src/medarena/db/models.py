"""Research-data tables. The identity map lives in a separate database (see identity.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)  # naive means UTC
    return value.astimezone(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is an aware UTC datetime in Python on every backend.

    SQLite has no time zone type: it stores the wall time, drops the offset and returns
    naive values, so a value written with another offset would be read (and compared in
    SQL) as the wrong instant. PostgreSQL answers in the session's TimeZone. Converting
    to UTC on the way in and out gives one behaviour everywhere.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return _as_utc(value)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        return _as_utc(value)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # De-identification procedure (name + version) every DICOM object went through.
    deid_procedure: Mapped[str | None] = mapped_column(String(100), nullable=True)

    cases: Mapped[list[Case]] = relationship(
        back_populates="dataset", cascade="all, delete", passive_deletes=True
    )
    splits: Mapped[list[Split]] = relationship(
        back_populates="dataset", cascade="all, delete", passive_deletes=True
    )


class Case(Base):
    """One unit of analysis: an image (series or volume) with its labels and metadata."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("dataset_id", "case_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    case_key: Mapped[str] = mapped_column(String(200))
    patient_pseudonym: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    study_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    series_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source_format: Mapped[str] = mapped_column(String(20))  # dicom | nifti | image
    modality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    body_part: Mapped[str | None] = mapped_column(String(64), nullable=True)
    manufacturer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    manufacturer_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    sex: Mapped[str | None] = mapped_column(String(8), nullable=True)
    age_years: Mapped[float | None] = mapped_column(Float, nullable=True)
    site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    study_date: Mapped[str | None] = mapped_column(String(8), nullable=True)  # shifted, YYYYMMDD
    shape: Mapped[list[Any]] = mapped_column(JSON, default=list)
    spacing: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Case-level labels: class labels or values from a CSV (name -> value).
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="cases")
    objects: Mapped[list[CaseObject]] = relationship(
        back_populates="case", cascade="all, delete", passive_deletes=True, order_by="CaseObject.id"
    )


class CaseObject(Base):
    """A stored object of a case: a de-identified DICOM instance, a NIfTI volume, a mask."""

    __tablename__ = "case_objects"
    __table_args__ = (UniqueConstraint("case_id", "role", "digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))  # dicom | image | label | seg
    digest: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255), default="")

    case: Mapped[Case] = relationship(back_populates="objects")


class IngestedSource(Base):
    """A source file already ingested into a dataset, by content hash (makes ingest idempotent)."""

    __tablename__ = "ingested_sources"
    __table_args__ = (UniqueConstraint("dataset_id", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), nullable=True
    )
    outcome: Mapped[str] = mapped_column(String(16))  # stored | quarantined | rejected
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Split(Base):
    __tablename__ = "splits"
    __table_args__ = (UniqueConstraint("dataset_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    hidden_subsets: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="splits")
    assignments: Mapped[list[SplitAssignment]] = relationship(
        back_populates="split", cascade="all, delete", passive_deletes=True
    )


class SplitAssignment(Base):
    __tablename__ = "split_assignments"
    __table_args__ = (UniqueConstraint("split_id", "case_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    split_id: Mapped[int] = mapped_column(ForeignKey("splits.id", ondelete="CASCADE"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    subset: Mapped[str] = mapped_column(String(32))
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)

    split: Mapped[Split] = relationship(back_populates="assignments")


# The platform tables share this Base; importing them here registers them on its metadata.
from medarena.db import platform_models as _platform_models  # noqa: E402,F401

"""Tables of the lab: the model registry (migration 0003) and training runs (0004)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from medarena.db.models import Base, UTCDateTime, utcnow
from medarena.db.platform_models import ScoreMap


class LabModel(Base):
    """One trained model: recipe, data it saw, metrics, curves, card and stored files."""

    __tablename__ = "lab_models"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), index=True)  # the recipe's name
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per name
    task: Mapped[str] = mapped_column(String(32))
    dataset_name: Mapped[str] = mapped_column(String(200))
    dataset_split: Mapped[str] = mapped_column(String(200))
    dataset_version: Mapped[str] = mapped_column(String(64))  # digest of cases + subsets used
    recipe_yaml: Mapped[str] = mapped_column(Text)
    recipe_digest: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(ScoreMap, default=dict)  # validation
    curves: Mapped[list[Any]] = mapped_column(JSON, default=list)  # per epoch
    model_card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    weights_digest: Mapped[str] = mapped_column(String(64))  # model.pt in the object store
    onnx_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    onnx_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    export: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # parity figures
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LabRun(Base):
    """A training run launched as a job (web UI, API or ``medarena lab runs submit``).

    ``status``: queued -> running -> succeeded | failed | cancelled. The last progress
    report (epoch, step, loss, validation metric) is copied here at most about once a
    second; the curve points themselves live in ``out_dir`` (``points.jsonl``).
    """

    __tablename__ = "lab_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))  # the recipe's name
    recipe_yaml: Mapped[str] = mapped_column(Text)
    recipe_digest: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    out_dir: Mapped[str] = mapped_column(String(1000), default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    metric_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_ref: Mapped[str | None] = mapped_column(String(120), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

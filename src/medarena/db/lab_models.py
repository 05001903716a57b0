"""Tables of the lab's model registry (same declarative Base, migration 0003)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, Text, UniqueConstraint
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

"""Database layer: SQLAlchemy 2 models, engine factory and Alembic migrations."""

from medarena.db.engine import create_engine_for, session_factory, upgrade

__all__ = ["create_engine_for", "session_factory", "upgrade"]

"""Alembic environment: runs migrations against the URL set by medarena.db.upgrade."""

from alembic import context

from medarena.db.engine import create_engine_for
from medarena.db.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set (use medarena.db.upgrade)"

engine = create_engine_for(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()

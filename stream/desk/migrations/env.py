"""Alembic's entry point: run the revisions on the connection :func:`stream.desk.database.upgrade`
hands over (``config.attributes["connection"]``), or on the configured URL otherwise."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from stream.desk.tables import Base

config = context.config
target_metadata = Base.metadata

connection = config.attributes.get("connection")
if connection is not None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as own:
        context.configure(connection=own, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()

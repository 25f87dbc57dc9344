"""Alembic environment: migrations run on the connection handed over by ``store.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from syncline.store._engine import database_url
from syncline.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    # `alembic` command line (autogenerate while developing): use SYNCLINE_DATABASE_URL.
    engine = create_engine(database_url())
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()

"""Alembic environment: benchsuite passes an open connection in config.attributes."""

from alembic import context

from benchsuite.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `bench db upgrade`, which supplies the connection")
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: the connection comes from the store that runs the upgrade."""

from alembic import context

from shipline.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

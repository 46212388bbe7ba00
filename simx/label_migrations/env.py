"""Alembic environment of the label database: always run on the connection :func:`simx.label_migrations.upgrade`
passes in (no URL in a config file, no offline SQL generation)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()

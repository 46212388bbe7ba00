"""Alembic revisions of the label database schema, oldest first (0001, 0002, ...)."""

"""Versioned schema of the label database, migrated with Alembic.

The schema version is the Alembic revision stored in the database's ``alembic_version`` table. Opening a store
brings its database to :data:`HEAD` (:func:`upgrade`): a new database is created by the revisions in
``versions/``, an older one is migrated in place, and a database created before simx used migrations (simx 0.1 made
its tables with ``create_all``; they are exactly revision ``0001``) is first marked as ``0001``. A database newer
than this copy of simx is refused rather than written with an older idea of the schema.

Concurrency: the migration runs in one transaction that takes the database's write lock first (``BEGIN
IMMEDIATE`` on SQLite through the store's engine, an advisory lock on PostgreSQL), so two processes opening a new
database at once create it once.

A developer adds a revision with ``alembic -c simx/label_migrations/alembic.ini revision -m "..."`` and writes its
``upgrade``/``downgrade`` by hand; it must also update the table definitions in :mod:`simx.labels`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
#: The newest revision this copy of simx knows.
HEAD = "0002"
#: The revision that equals the tables simx 0.1 created without migrations.
LEGACY = "0001"
#: Arbitrary constant key of the PostgreSQL advisory lock held while migrating.
PG_LOCK_KEY = 7_246_319


def _config(connection: Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(connection: Connection) -> str | None:
    """The revision stored in the database (None for a database without ``alembic_version``)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def known_revisions() -> list[str]:
    """Every revision in ``versions/``, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(HERE))
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def upgrade(engine: Engine) -> str:
    """Bring the database of ``engine`` to :data:`HEAD`; returns the revision it is at afterwards.

    Raises ``RuntimeError`` for a database at a revision this copy of simx does not know (a newer simx wrote it)."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        rev = current_revision(conn)
        if rev is not None and rev not in known_revisions():
            raise RuntimeError(f"the label database is at schema revision {rev}, newer than this simx knows "
                               f"(up to {HEAD}); upgrade simx")
        cfg = _config(conn)
        if rev is None and inspect(conn).has_table("labels"):
            command.stamp(cfg, LEGACY)  # made by create_all before migrations existed: it is revision 0001
        if rev != HEAD:
            command.upgrade(cfg, "head")
        return current_revision(conn) or ""

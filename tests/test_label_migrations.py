"""The label database's schema is versioned (Alembic revisions in simx/label_migrations) and migrated in place."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import create_engine

from simx import labels as labels_mod
from simx.label_migrations import HEAD, known_revisions
from simx.labels import LabelError, LabelStore


def _fresh(url: str) -> LabelStore:
    labels_mod._ENGINES.pop(url, None)  # a new process would not have the engine cached
    return LabelStore(url)


def test_a_new_database_is_created_at_the_newest_revision(tmp_path):
    store = _fresh(f"sqlite:///{tmp_path / 'new.sqlite'}")
    assert store.schema_version == HEAD == known_revisions()[-1]
    lab = store.put("idx", "q", "n", "bad", user="ana", model="m", rank=3, score=0.25)
    (event,) = store.history(label_id=lab.id)
    assert (event["model"], event["rank"], event["score"]) == ("m", 3, 0.25)


def test_a_database_from_before_migrations_keeps_its_labels(tmp_path):
    """simx 0.1 made the tables with create_all (revision 0001, no alembic_version table): opening it stamps it
    and migrates it, and every label and event stays."""
    path = tmp_path / "old.sqlite"
    from alembic import command
    from alembic.config import Config

    from simx.label_migrations import HERE

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(HERE))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    engine.dispose()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE alembic_version")
    db.execute("INSERT INTO labels (index_name, model, query_id, neighbour_id, rank, score, verdict, reason, note, "
               "user, created, updated) VALUES ('idx', 'm', 'q1', 'n1', 1, 0.9, 'bad', 'other', 'old note', 'ana', "
               "'2026-01-02 03:04:05', '2026-01-02 03:04:05')")
    db.execute("INSERT INTO label_events (label_id, action, index_name, query_id, neighbour_id, verdict, reason, "
               "note, user, at) VALUES (1, 'put', 'idx', 'q1', 'n1', 'bad', 'other', 'old note', 'ana', "
               "'2026-01-02 03:04:05')")
    db.commit()
    db.close()
    store = _fresh(f"sqlite:///{path}")
    assert store.schema_version == HEAD
    (old,) = store.list(index="idx")
    assert (old.query_id, old.verdict, old.reason, old.note, old.user) == ("q1", "bad", "other", "old note", "ana")
    (event,) = store.history(index="idx")
    assert event["note"] == "old note" and event["score"] is None  # unknown for events logged before 0002
    store.put("idx", "q1", "n1", "good", user="ana", rank=1, score=0.9)
    assert store.get(old.id).verdict == "good" and len(store.history(index="idx")) == 2


def test_a_database_from_a_newer_simx_is_refused(tmp_path):
    path = tmp_path / "future.sqlite"
    _fresh(f"sqlite:///{path}")
    db = sqlite3.connect(path)
    db.execute("UPDATE alembic_version SET version_num = '0999'")
    db.commit()
    db.close()
    with pytest.raises(LabelError, match="schema revision 0999, newer than this simx knows"):
        _fresh(f"sqlite:///{path}")


def test_two_processes_creating_one_database_at_once(tmp_path):
    """Three separate processes open the same new database at the same moment: each creates or finds the schema
    once, and every label is kept."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    url = f"sqlite:///{tmp_path / 'both.sqlite'}"
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from simx.labels import LabelStore; LabelStore(sys.argv[1]).put('idx', 'q', 'n', 'good', user=sys.argv[2])"
    procs = [subprocess.Popen([sys.executable, "-c", code, url, f"user{i}"], env=env) for i in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store = _fresh(url)
    assert store.schema_version == HEAD and sorted(store.users()) == ["user0", "user1", "user2"]

"""The label store on a real PostgreSQL server (any SQLAlchemy URL works; PostgreSQL is the shared-team case).

A throw-away server is started from Debian's ``postgresql`` binaries in a temporary folder, listening on a Unix
socket only; without them (``apt-get install postgresql``, done by ``scripts/setup.sh --test`` as root) the tests
are skipped. As root the server runs as the ``postgres`` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from simx.labels import LabelStore
from tests.test_labels import write_concurrently

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = pytest.mark.skipif(not BIN or not shutil.which("pg_isready", path=BIN[-1] if BIN else None),
                                reason="PostgreSQL server binaries are missing (apt-get install postgresql)")


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    return (["runuser", "-u", user, "--"] + cmd) if user else cmd


@pytest.fixture(scope="module")
def pg_url():
    pytest.importorskip("psycopg", reason="the psycopg driver is in requirements.txt")
    bin_dir = Path(BIN[-1])
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        user = "postgres"
    base = Path(tempfile.mkdtemp(prefix="simx-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if user:
        shutil.chown(base, user)
        shutil.chown(sock, user)
    subprocess.run(_as_user([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "simx", "--no-sync"],
                            user), check=True, capture_output=True)
    port = "54329"
    log = base / "server.log"
    server = subprocess.Popen(_as_user([str(bin_dir / "postgres"), "-D", str(data), "-k", str(sock), "-p", port,
                                        "-c", "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=40"],
                                       user), stdout=subprocess.DEVNULL, stderr=open(log, "wb"))  # noqa: SIM115
    try:
        deadline = time.time() + 60
        while subprocess.run([str(bin_dir / "pg_isready"), "-h", str(sock), "-p", port],
                             capture_output=True).returncode != 0:
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"PostgreSQL did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        for db in ("labels", "busy", "race"):
            subprocess.run([str(bin_dir / "createdb"), "-h", str(sock), "-p", port, "-U", "simx", db], check=True,
                           capture_output=True)
        yield f"postgresql+psycopg://simx@/{{db}}?host={sock}&port={port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(base, ignore_errors=True)


def test_labels_round_trip_on_postgresql(pg_url):
    store = LabelStore(pg_url.format(db="labels"))
    a = store.put("idx", "q1", "n1", "bad", reason="background shortcut", note="same grass", user="ana", rank=1,
                  score=0.91)
    again = store.put("idx", "q1", "n1", "good", user="ana", rank=1, score=0.91)  # upsert per pair and user
    assert again.id == a.id and store.get(a.id).verdict == "good"
    b = store.put("idx", "q1", "n2", "bad", reason="wrong category", user="bob", rank=2, score=0.5)
    assert store.count(index="idx", verdict="bad") == 1
    store.update(b.id, note="a dog, not a cat")  # reason kept
    assert store.get(b.id).note == "a dog, not a cat" and store.get(b.id).reason == "wrong_category"
    csv_text = store.export_csv(index="idx")
    rows = {r["neighbour_id"]: r for r in csv.DictReader(io.StringIO(csv_text))}
    assert set(rows) == {"n1", "n2"}
    assert (rows["n2"]["verdict"], rows["n2"]["reason"], rows["n2"]["note"]) == ("bad", "wrong_category",
                                                                               "a dog, not a cat")
    assert store.delete(b.id) and store.get(b.id) is None
    assert [h["action"] for h in store.history(index="idx")].count("delete") == 1


def test_concurrent_writers_lose_nothing_on_postgresql(pg_url):
    write_concurrently(pg_url.format(db="busy"))  # 8 threads x 500 labels, as on SQLite


def test_two_users_on_the_same_pair_at_once_on_postgresql(pg_url):
    from tests.test_labels import same_pair_race

    same_pair_race(pg_url.format(db="race"))


def test_postgresql_database_is_migrated_to_the_current_schema(pg_url):
    from simx.label_migrations import HEAD

    assert LabelStore(pg_url.format(db="labels")).schema_version == HEAD

"""The label store: upsert, edit, delete, filters, counts, exports and concurrent writers."""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import date, datetime, timedelta, timezone

import pytest

from simx.labels import COLUMNS, LabelError, LabelStore, default_url, open_labels


@pytest.fixture()
def store(tmp_path):
    return LabelStore(f"sqlite:///{tmp_path / 'labels.sqlite'}")


def test_default_location_is_beside_the_index(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMX_LABELS_URL", raising=False)
    url = default_url("scenes", root=tmp_path)
    assert url == f"sqlite:///{(tmp_path / 'scenes' / 'labels.sqlite').resolve()}"
    s = open_labels("scenes", root=tmp_path)
    s.put("scenes", "q", "n", "good")
    assert (tmp_path / "scenes" / "labels.sqlite").is_file()
    monkeypatch.setenv("SIMX_LABELS_URL", f"sqlite:///{tmp_path / 'team.sqlite'}")
    assert default_url("scenes", root=tmp_path) == f"sqlite:///{tmp_path / 'team.sqlite'}"


def test_sqlite_is_in_wal_mode(store):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
        assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar()) >= 1000


def test_put_is_an_upsert_per_pair_and_user(store):
    a = store.put("idx", "q1", "n1", "good", user="ann", model="default", rank=1, score=0.9)
    b = store.put("idx", "q1", "n1", "bad", reason="background shortcut", note="sky", user="ann", rank=1, score=0.9)
    assert a.id == b.id and b.verdict == "bad" and b.reason == "background_shortcut" and b.note == "sky"
    assert b.created == a.created and b.updated >= a.updated
    c = store.put("idx", "q1", "n1", "good", user="bob")
    assert c.id != a.id
    assert store.count(index="idx") == 2
    assert {lab.user: lab.verdict for lab in store.find("idx", "q1", "n1")} == {"ann": "bad", "bob": "good"}
    # history keeps both of ann's verdicts although the table holds only the current one
    assert [e["verdict"] for e in store.history(a.id)] == ["good", "bad"]


def test_validation(store):
    with pytest.raises(LabelError, match="verdict"):
        store.put("idx", "q", "n", "maybe")
    with pytest.raises(LabelError, match="reason"):
        store.put("idx", "q", "n", "bad", reason="ugly")
    with pytest.raises(LabelError, match="no label"):
        store.update(12345, verdict="good")
    assert store.delete(12345) is False


def test_edit_and_delete(store):
    lab = store.put("idx", "q", "n", "bad", reason="wrong_category", note="cat vs dog", user="ann")
    ed = store.update(lab.id, verdict="good", reason=None, note="same breed")
    assert (ed.verdict, ed.reason, ed.note) == ("good", None, "same breed")
    assert store.get(lab.id).verdict == "good"
    kept = store.update(lab.id, note="only the note")
    assert kept.verdict == "good" and kept.note == "only the note"
    assert store.delete(lab.id) is True
    assert store.get(lab.id) is None and store.count() == 0
    assert [e["action"] for e in store.history(lab.id)] == ["put", "update", "update", "delete"]


def test_filters_and_counts(store):
    store.put("idx", "q1", "n1", "good", user="ann")
    store.put("idx", "q1", "n2", "bad", reason="background_shortcut", user="ann")
    store.put("idx", "q2", "n3", "bad", reason="near_duplicate", user="bob")
    store.put("other", "q1", "n1", "bad", reason="other", user="bob")
    assert {(lab.query_id, lab.neighbour_id) for lab in store.list(index="idx", verdict="bad")} == {("q1", "n2"),
                                                                                                    ("q2", "n3")}
    assert [lab.neighbour_id for lab in store.list(index="idx", reason="near duplicate")] == ["n3"]
    assert {lab.index for lab in store.list(user="bob")} == {"idx", "other"}
    assert len(store.list(reason=["background_shortcut", "other"])) == 2
    today = datetime.now(timezone.utc).date()
    assert store.count(since=today) == 4
    assert store.count(until=today - timedelta(days=1)) == 0
    assert store.count(since=date(2000, 1, 1), until=today) == 4
    c = store.counts(index="idx")
    assert c["total"] == 3 and c["verdict"] == {"good": 1, "bad": 2}
    assert c["reason"] == {"none": 1, "background_shortcut": 1, "near_duplicate": 1}
    assert c["user"] == {"ann": 2, "bob": 1}
    assert store.labelled_pairs("idx") == {("q1", "n1"), ("q1", "n2"), ("q2", "n3")}
    assert store.labelled_pairs("idx", user="bob") == {("q2", "n3")}
    assert store.users() == ["ann", "bob"]
    assert [lab.neighbour_id for lab in store.list(index="idx", limit=1)] == ["n3"]  # newest first


def test_csv_and_jsonl_exports(store, tmp_path):
    store.put("idx", "q1", "n1", "good", user="ann", model="m", rank=1, score=0.5)
    store.put("idx", "q1", "n2", "bad", reason="partial_match", note='says "hi", ok', user="ann", rank=2, score=0.25)
    text = store.export_csv(tmp_path / "out.csv", index="idx")
    assert (tmp_path / "out.csv").read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0].keys()) == list(COLUMNS)
    by_n = {r["neighbour_id"]: r for r in rows}
    assert by_n["n2"]["note"] == 'says "hi", ok' and by_n["n2"]["reason"] == "partial_match"
    assert float(by_n["n1"]["score"]) == 0.5 and by_n["n1"]["rank"] == "1" and by_n["n1"]["model"] == "m"
    lines = store.export_jsonl(index="idx", verdict="bad").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["neighbour_id"] == "n2"


def test_triplets(store, tmp_path):
    store.put("idx", "q1", "good1", "good", user="ann")
    store.put("idx", "q1", "bad1", "bad", reason="background_shortcut", user="ann")
    store.put("idx", "q1", "bad2", "bad", reason="wrong_category", user="bob")
    store.put("idx", "q2", "bad3", "bad", user="ann")  # no positive at all -> no triplet without class labels
    store.put("idx", "q3", "good9", "good", user="ann")  # no negative -> no triplet
    rows = store.triplets("idx")
    assert [(r["query"], r["positive"], r["negative"]) for r in rows] == [
        ("q1", "good1", "bad1"), ("q1", "good1", "bad2")]
    assert rows[0]["reason"] == "background_shortcut" and rows[0]["positive_source"] == "good"
    # same-label neighbours become positives; a neighbour labelled bad never does, even with the same class
    item_labels = {"q2": "cat", "cat7": "cat", "dog1": "dog", "bad3": "cat", "q1": "x"}
    neighbours = {"q2": ["cat7", "dog1", "bad3"]}
    rows = store.triplets("idx", item_labels=item_labels, neighbours=neighbours)
    q2 = [(r["positive"], r["negative"], r["positive_source"]) for r in rows if r["query"] == "q2"]
    assert q2 == [("cat7", "bad3", "same_label")]
    text = store.export_triplets(tmp_path / "t.csv", index="idx", item_labels=item_labels, neighbours=neighbours,
                                 paths={"q2": "/g/q2.png", "cat7": "/g/cat7.png", "bad3": "/g/bad3.png"})
    got = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert text == (tmp_path / "t.csv").read_text() and len(got) == 3
    row = [r for r in got if r["query"] == "q2"][0]
    assert (row["query_path"], row["positive_path"], row["negative_path"]) == ("/g/q2.png", "/g/cat7.png",
                                                                               "/g/bad3.png")
    jl = store.export_triplets(tmp_path / "t.jsonl", index="idx")
    assert [json.loads(x)["negative"] for x in jl.splitlines()] == ["bad1", "bad2"]


def write_concurrently(url: str, threads: int = 8, per_thread: int = 500) -> None:
    """``threads`` threads, each with its own store object on ``url``, put ``per_thread`` labels at once; then
    every one of them is there."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(t: int) -> None:
        store = LabelStore(url)  # each thread its own store object on the shared database
        try:
            start.wait()
            for i in range(per_thread):
                store.put("idx", f"q{t}", f"n{i}", "good" if i % 2 else "bad",
                          reason=None if i % 2 else "other", user=f"user{t}", rank=i, score=i / per_thread)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    pool = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors, errors
    store = LabelStore(url)
    total = threads * per_thread
    assert store.count(index="idx") == total
    c = store.counts(index="idx")
    assert c["verdict"] == {"good": total // 2, "bad": total // 2}
    assert c["user"] == {f"user{t}": per_thread for t in range(threads)}
    assert len(store.labelled_pairs("idx")) == total
    assert len(store.history(index="idx")) == total


def test_concurrent_writers_lose_nothing(tmp_path):
    write_concurrently(f"sqlite:///{tmp_path / 'busy.sqlite'}")


def test_labels_survive_an_index_rebuild(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from simx.index import build_index

    monkeypatch.delenv("SIMX_LABELS_URL", raising=False)
    gallery = tmp_path / "g" / "a"
    gallery.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(gallery / f"{i}.png")
    root = tmp_path / "indexes"
    spec = "python:simx.models.toy:tiny_linear"
    build_index(tmp_path / "g", "t", model=spec, root=root, workers=0, progress=False)
    store = open_labels("t", root=root)
    store.put("t", "a/0.png", "a/1.png", "bad", reason="other", user="ann")
    build_index(tmp_path / "g", "t", model=spec, root=root, workers=0, progress=False)  # replaces the folder
    store.put("t", "a/0.png", "a/2.png", "good", user="ann")  # the open store keeps working
    again = LabelStore(default_url("t", root))
    assert {(lab.neighbour_id, lab.verdict) for lab in again.list(index="t")} == {("a/1.png", "bad"),
                                                                                  ("a/2.png", "good")}


def same_pair_race(url: str, users: int = 2, rounds: int = 60) -> None:
    """``users`` people, each in two threads (two tabs), label the same pair at the same moment, again and again:
    every write is logged, and the store ends with one row per user holding that user's last verdict."""
    errors: list[BaseException] = []
    start = threading.Barrier(users * 2)
    last: dict[str, str] = {}
    lock = threading.Lock()

    def writer(user: str, tab: int) -> None:
        store = LabelStore(url)
        try:
            start.wait()
            for i in range(rounds):
                verdict = "good" if (i + tab) % 2 else "bad"
                lab = store.put("idx", "q", "n", verdict, user=user, note=f"tab {tab} round {i}")
                with lock:
                    last[user] = lab.updated.isoformat() + "|" + lab.note
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    pool = [threading.Thread(target=writer, args=(f"user{u}", t)) for u in range(users) for t in range(2)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors, errors
    store = LabelStore(url)
    rows = store.find("idx", "q", "n")
    assert sorted(r.user for r in rows) == [f"user{u}" for u in range(users)]  # one row per user, no duplicates
    history = store.history(index="idx")
    assert len(history) == users * 2 * rounds  # nothing anyone said is lost
    for r in rows:  # the stored row is that user's last logged write
        mine = [h for h in history if h["user"] == r.user]
        assert (r.verdict, r.note) == (mine[-1]["verdict"], mine[-1]["note"])


def test_two_users_on_the_same_pair_at_once_sqlite(tmp_path):
    same_pair_race(f"sqlite:///{tmp_path / 'race.sqlite'}")

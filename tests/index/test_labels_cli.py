"""``simx labels export`` and ``simx labels import``: the files a team passes around hold every column, import
merges by recency, and a bad file changes nothing."""

from __future__ import annotations

import csv
import io
import json

import pytest

from simx.cli import main
from simx.labels import open_labels

from .conftest import TINY, make_gallery


@pytest.fixture
def labelled(tmp_path, capsys):
    root = tmp_path / "idx"
    gallery = make_gallery(tmp_path / "g", {"red": 3, "blue": 3})
    assert main(["index", "build", str(gallery), "--name", "g", "--model", TINY, "--root", str(root),
                 "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    store = open_labels("g", root=root)
    store.put("g", "red/0.png", "blue/1.png", "bad", reason="wrong category", note="*not* [a](http://x) link",
              user="ana", rank=1, score=0.8)
    store.put("g", "red/0.png", "red/1.png", "good", user="ana", rank=2, score=0.7)
    store.put("g", "blue/0.png", "red/2.png", "bad", reason="other", user="bob", rank=1, score=0.6)
    return root, store


def test_export_csv_jsonl_and_triplets(labelled, tmp_path, capsys):
    root, store = labelled
    assert main(["labels", "export", "g", "--root", str(root)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 and {r["user"] for r in rows} == {"ana", "bob"}
    note = next(r["note"] for r in rows if r["neighbour_id"] == "blue/1.png")
    assert note == "*not* [a](http://x) link"  # user text travels verbatim
    assert main(["labels", "export", "g", "--format", "jsonl", "--verdict", "bad", "--user", "bob",
                 "--root", str(root)]) == 0
    (only,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (only["query_id"], only["reason"], only["score"]) == ("blue/0.png", "other", 0.6)
    out = tmp_path / "t.csv"
    assert main(["labels", "export", "g", "--format", "triplets", "--out", str(out), "--root", str(root)]) == 0
    assert "written to" in capsys.readouterr().err
    trip = list(csv.DictReader(out.open()))
    # red/0 has a good neighbour (red/1) and a bad one (blue/1); blue/0's positives are its same-label neighbours
    assert any((t["query"], t["positive"], t["negative"]) == ("red/0.png", "red/1.png", "blue/1.png") for t in trip)
    assert all(t["negative"] != t["positive"] for t in trip)
    assert any(t["query"] == "blue/0.png" and t["negative"] == "red/2.png" and t["positive_source"] == "same_label"
               for t in trip)
    assert all(t["query_path"].endswith(t["query"]) for t in trip)


def test_import_merges_by_recency_and_refuses_bad_files(labelled, tmp_path, capsys):
    root, store = labelled
    exported = tmp_path / "all.jsonl"
    assert main(["labels", "export", "g", "--format", "jsonl", "--out", str(exported), "--root", str(root)]) == 0
    # a second index gets everything
    assert main(["index", "build", str(tmp_path / "g"), "--name", "h", "--model", TINY, "--root", str(root),
                 "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert main(["labels", "import", "h", str(exported), "--root", str(root)]) == 0
    assert "3 added, 0 replaced" in capsys.readouterr().out
    other = open_labels("h", root=root)
    assert sorted((lab.query_id, lab.neighbour_id, lab.verdict, lab.user) for lab in other.list(index="h")) == \
        sorted((lab.query_id, lab.neighbour_id, lab.verdict, lab.user) for lab in store.list(index="g"))
    # ana changes her mind in h after the export: importing the old file again keeps her newer verdict
    other.put("h", "red/0.png", "blue/1.png", "good", user="ana")
    assert main(["labels", "import", "h", str(exported), "--root", str(root)]) == 0
    assert "0 added, 0 replaced by newer verdicts, 3 kept" in capsys.readouterr().out
    assert other.find("h", "red/0.png", "blue/1.png", user="ana")[0].verdict == "good"
    # a file with one bad row imports nothing and names the row
    bad = tmp_path / "bad.csv"
    rows = list(csv.DictReader(io.StringIO(store.export_csv(index="g"))))
    rows[1]["verdict"] = "maybe"
    with bad.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    before = other.count(index="h")
    assert main(["labels", "import", "h", str(bad), "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "nothing imported, 1 bad row(s): row 2: unknown verdict 'maybe'" in err
    assert other.count(index="h") == before
    assert main(["labels", "import", "h", str(tmp_path / "none.csv"), "--root", str(root)]) == 1
    assert "label file not found" in capsys.readouterr().err

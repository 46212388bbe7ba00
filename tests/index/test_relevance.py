"""Multi-label relevance: items with several labels, relevant = sharing one (issue 12 item 5).

Exact metrics on a hand-made geometry under the new and the old (primary label only) definitions, the
manifest's ``labels`` column (CSV text and Parquet lists), the index manifest on disk (format 2 with ``labels``,
format 1 still opens), and the failure helpers the dashboard walks (Next failure, review queue, confusion).
"""

from __future__ import annotations

import json
import math
import shutil

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simx.data import Item, open_gallery
from simx.errors import GalleryError
from simx.index import build_index, evaluate, open_index
from simx.index.evaluation import failure_ids, label_confusion, next_failure, review_pairs
from simx.index.search import Index
from simx.relevance import item_labels, shares_label

from .conftest import TINY, draw


def circle_index(tmp_path, points) -> Index:
    """An in-memory cosine index of unit 2-D vectors: (id, labels, angle in degrees)."""
    vecs = np.array([[math.cos(math.radians(a)), math.sin(math.radians(a))] for _, _, a in points], np.float32)
    fidx = faiss.IndexFlatIP(2)
    fidx.add(vecs)
    items = [Item(id=i, path=f"/x/{i}.png", labels=labs) for i, labs, _ in points]
    meta = {"model": {"spec": "test", "metric": "cosine", "dim": 2}}
    return Index(tmp_path, meta, items, [None] * len(items), vecs, fidx)


# With k = 2 (self excluded), nearest first:
#   p0 {A,B} 0:    p1 (B: rel) p2 (no)       R = 2 (p1, p3)   AP = 1/2
#   p1 {B}   10:   p0 (rel)    p2 (no)       R = 1            AP = 1
#   p2 {C}   22:   p1 (no)     p0 (no)       R = 1 (p4)       AP = 0
#   p3 {A}   45:   p4 (no)     p2 (no)       R = 1 (p0)       AP = 0
#   p4 {C,D} 60:   p3 (no)     p2 (C: rel)   R = 2 (p2, p5)   AP = (1/2)/2
#   p5 {D}   200:  p4 (rel)    p3 (no)       R = 1            AP = 1
# Primary label only (A B C A C D): p1 and p5 are alone in theirs; p0 0, p2 0, p3 0, p4 (1/2)/1.
POINTS = [("p0", ["A", "B"], 0.0), ("p1", ["B"], 10.0), ("p2", ["C"], 22.0), ("p3", ["A"], 45.0),
          ("p4", ["C", "D"], 60.0), ("p5", ["D"], 200.0)]


def test_item_keeps_primary_label_first():
    it = Item(id="x", path="/x.png", label="b", labels=["a", "b", " ", "a"])
    assert it.label == "b" and it.labels == ["b", "a"]
    assert Item(id="y", path="/y.png", labels=["c", "d"]).label == "c"
    assert Item(id="z", path="/z.png", label="e").labels == ["e"]
    assert Item(id="n", path="/n.png").labels == [] and Item(id="n", path="/n.png").label is None


def test_shares_label():
    a = Item(id="a", path="/a", labels=["animals/birds", "food/fruit"])
    b = Item(id="b", path="/b", labels=["food/veg"])
    c = Item(id="c", path="/c", labels=["food/fruit"])
    assert shares_label(a, c) is True and shares_label(a, b) is False
    assert shares_label(a, b, level="top") is True
    assert shares_label(a, Item(id="u", path="/u")) is None
    assert item_labels(a, primary_only=True) == {"animals/birds"}


def test_multi_label_metrics_match_hand_computation(tmp_path):
    res = evaluate(circle_index(tmp_path, POINTS), k=2, cache=False)
    o = res.overall
    assert (o["n_queries"], o["n_skipped"], o["n_labels"], o["multi_label"]) == (6, 0, 4, True)
    assert o["relevance"] == "shares a label"
    assert o["precision@1"] == pytest.approx(3 / 6)
    assert o["mAP@k"] == pytest.approx((0.5 + 1 + 0 + 0 + 0.25 + 1) / 6)
    assert o["precision@k"] == pytest.approx(4 * 0.5 / 6)  # p2 and p3 find nothing
    assert o["recall@k"] == pytest.approx((0.5 + 1 + 0 + 0 + 0.5 + 1) / 6)
    q = res.per_query.set_index("id")
    assert q.loc["p0", "labels"] == ["A", "B"] and q.loc["p0", "label"] == "A"
    assert q.loc["p0", "neighbours"] == ["p1", "p2"] and q.loc["p0", "relevant"] == [True, False]
    assert q.loc["p4", "relevant"] == [False, True] and q.loc["p4", "n_relevant"] == 2
    lab = res.per_label.set_index("label")
    assert lab.loc["A", "map"] == pytest.approx(0.25) and lab.loc["B", "map"] == pytest.approx(0.75)
    assert lab.loc["C", "map"] == pytest.approx(0.125) and lab.loc["D", "map"] == pytest.approx(0.625)
    assert lab.loc["D", "n_items"] == 2 and lab.loc["A", "n_queries"] == 2


def test_primary_only_is_the_single_label_definition(tmp_path):
    res = evaluate(circle_index(tmp_path, POINTS), k=2, cache=False, primary_only=True)
    o = res.overall
    assert (o["n_queries"], o["n_skipped"], o["relevance"]) == (4, 2, "same primary label")
    assert o["precision@1"] == 0.0 and o["mAP@k"] == pytest.approx(0.5 / 4)


def test_single_label_gallery_is_unchanged(tmp_path):
    pts = [("a0", ["A"], 0.0), ("a1", ["A"], 11.0), ("b0", ["B"], 23.0), ("a2", ["A"], 34.0), ("b1", ["B"], 100.0)]
    multi = evaluate(circle_index(tmp_path, pts), k=3, cache=False)
    single = evaluate(circle_index(tmp_path, pts), k=3, cache=False, primary_only=True)
    assert multi.overall["multi_label"] is False and multi.overall["relevance"] == "same label"
    for key in ("precision@1", "precision@k", "recall@k", "mAP@k", "n_queries"):
        assert multi.overall[key] == single.overall[key]


def test_failure_helpers_follow_the_relevance(tmp_path):
    res = evaluate(circle_index(tmp_path, POINTS), k=2, cache=False)
    fails = failure_ids(res.per_query)
    assert fails[:2] == ["p2", "p3"] and set(fails) == {"p0", "p2", "p3", "p4"}  # p1 and p5 are perfect
    assert next_failure(res.per_query, "p2") == "p3"
    assert next_failure(res.per_query, fails[-1]) == fails[0]
    assert next_failure(res.per_query, "p1") == "p2"  # from a non-failure: the worst one
    assert next_failure(res.per_query.iloc[0:0], None) is None
    pairs = review_pairs(res.per_query, 2)
    assert pairs[:2] == [("p2", "p1", 1), ("p2", "p0", 2)] and len(pairs) == 12
    assert review_pairs(res.per_query, 1)[-1][2] == 1


def test_label_confusion_counts_shared_labels_on_the_diagonal():
    per_query = pd.DataFrame({"id": ["q"], "labels": [["A", "B"]], "neighbours": [["n1", "n2", "n3"]]})
    conf = label_confusion(per_query, {"n1": ["B"], "n2": "C", "n3": None}, normalise=False)
    assert conf.loc["B", "B"] == pytest.approx(0.5) and conf.loc["A", "B"] == pytest.approx(0.5)
    assert conf.loc["A", "C"] == pytest.approx(0.5) and conf.loc["A", "(none)"] == pytest.approx(0.5)
    assert conf.loc["A", "A"] == 0.0


def _scene_gallery(tmp_path, labels_cells):
    folder = tmp_path / "scenes"
    folder.mkdir()
    rows = []
    for i, cell in enumerate(labels_cells):
        draw((200, 30 * i % 255, 40), seed=i, size=64).save(folder / f"s{i}.png")
        rows.append({"path": f"s{i}.png", "labels": cell})
    return folder, rows


def test_manifest_labels_column_csv_and_parquet(tmp_path):
    folder, rows = _scene_gallery(tmp_path, ["cat|dog", "dog", None, "bird| cat "])
    pd.DataFrame(rows).to_csv(folder / "m.csv", index=False)
    items = open_gallery(folder / "m.csv")
    assert [it.labels for it in items] == [["cat", "dog"], ["dog"], [], ["bird", "cat"]]
    assert [it.label for it in items] == ["cat", "dog", None, "bird"]
    table = pa.table({"path": [r["path"] for r in rows], "label": ["dog", None, None, None],
                      "labels": [["cat", "dog"], ["dog"], None, ["bird", "cat"]]})
    pq.write_table(table, folder / "m.parquet")
    items = open_gallery(folder / "m.parquet")
    assert items[0].label == "dog" and items[0].labels == ["dog", "cat"] and items[2].labels == []
    pd.DataFrame({"path": ["s0.png"], "labels": [3]}).to_csv(folder / "bad.csv", index=False)
    pq.write_table(pa.table({"path": ["s0.png"], "labels": [3]}), folder / "bad.parquet")
    with pytest.raises(GalleryError, match="'labels' must be"):
        open_gallery(folder / "bad.parquet")


def test_index_stores_labels_and_old_format_still_opens(tmp_path):
    folder, rows = _scene_gallery(tmp_path, ["cat|dog", "dog", "bird|cat", "bird", "fish"])
    pd.DataFrame(rows).to_csv(folder / "m.csv", index=False)
    root = tmp_path / "indexes"
    build_index(folder / "m.csv", "multi", model=TINY, root=root, workers=0, progress=False)
    meta = json.loads((root / "multi" / "meta.json").read_text())
    assert meta["format_version"] == 2
    stored = pq.read_table(root / "multi" / "manifest.parquet")
    assert stored.schema.field("labels").type == pa.list_(pa.string())
    index = open_index("multi", root=root)
    assert [it.labels for it in index.items] == [["cat", "dog"], ["dog"], ["bird", "cat"], ["bird"], ["fish"]]
    res = evaluate(index, k=2)
    assert res.overall["multi_label"] and res.overall["n_queries"] == 4 and res.overall["n_skipped"] == 1

    # A format-1 index (no labels column) opens with one label per item and evaluates as before.
    old = root / "old"
    shutil.copytree(root / "multi", old)
    for cache in old.glob("eval_*.parquet"):
        cache.unlink()
    pq.write_table(stored.drop(["labels"]), old / "manifest.parquet")
    meta["format_version"] = 1
    (old / "meta.json").write_text(json.dumps(meta))
    index1 = open_index("old", root=root)
    assert [it.labels for it in index1.items] == [["cat"], ["dog"], ["bird"], ["bird"], ["fish"]]
    res1 = evaluate(index1, k=2)
    assert not res1.overall["multi_label"] and res1.overall["n_queries"] == 2


def test_triplet_positives_share_a_label(tmp_path):
    from simx.labels import LabelStore

    store = LabelStore(f"sqlite:///{tmp_path / 'labels.sqlite'}")
    store.put("idx", "q", "bad1", "bad", user="ann")
    item_labels = {"q": ["cat", "sofa"], "n1": ["sofa", "lamp"], "n2": ["dog"], "bad1": ["cat"]}
    rows = store.triplets("idx", item_labels=item_labels, neighbours={"q": ["n1", "n2", "bad1"]})
    assert [(r["positive"], r["negative"], r["positive_source"]) for r in rows] == [("n1", "bad1", "same_label")]

"""Leave-one-out retrieval metrics: exact values on a hand-made geometry, label levels, caching, edge cases."""

from __future__ import annotations

import json
import math

import faiss
import numpy as np
import pandas as pd
import pytest

from simx.data import Item
from simx.errors import SimxError
from simx.index import build_index, evaluate, open_index
from simx.index.evaluation import QUERY_COLUMNS
from simx.index.search import Index

from .conftest import TINY, make_gallery


def circle_index(tmp_path, points: list[tuple[str, str | None, float]]) -> Index:
    """An in-memory cosine index of unit 2-D vectors at the given angles (degrees): (id, label, angle)."""
    vecs = np.array([[math.cos(math.radians(a)), math.sin(math.radians(a))] for _, _, a in points], np.float32)
    fidx = faiss.IndexFlatIP(2)
    fidx.add(vecs)
    items = [Item(id=i, path=f"/x/{i}.png", label=lab) for i, lab, _ in points]
    meta = {"model": {"spec": "test", "metric": "cosine", "dim": 2}}
    return Index(tmp_path, meta, items, [None] * len(items), vecs, fidx)


# Angles chosen so no two distances tie. With k = 3 the neighbours (self excluded) are:
#   a0 (0):   u0 4, a1 11, b0 23      rel 0 1 0   R=2  AP = (1/2)/2 = 0.25
#   a1 (11):  u0 7, a0 11, b0 12      rel 0 1 0   R=2  AP = 0.25
#   a2 (34):  b0 11, a1 23, u0 30     rel 0 1 0   R=2  AP = 0.25
#   b0 (23):  a2 11, a1 12, u0 19     rel 0 0 0   R=1  AP = 0
#   b1 (100): a2 66, b0 77, a1 89     rel 0 1 0   R=1  AP = (1/2)/1 = 0.5
#   c0 is alone in its label (skipped), u0 has no label (never a query).
POINTS = [("a0", "A", 0.0), ("u0", None, 4.0), ("a1", "A", 11.0), ("b0", "B", 23.0), ("a2", "A", 34.0),
          ("b1", "B", 100.0), ("c0", "C", 200.0)]


def test_metrics_match_hand_computation(tmp_path):
    res = evaluate(circle_index(tmp_path, POINTS), k=3)
    o = res.overall
    assert (o["n_items"], o["n_queries"], o["n_skipped"], o["n_unlabelled"], o["n_labels"]) == (7, 5, 1, 1, 3)
    assert o["mAP@k"] == pytest.approx((0.25 * 3 + 0 + 0.5) / 5)
    assert o["precision@1"] == 0.0
    assert o["precision@k"] == pytest.approx((4 * (1 / 3) + 0) / 5)
    assert o["recall@k"] == pytest.approx((0.5 * 3 + 0 + 1.0) / 5)

    q = res.per_query.set_index("id")
    assert list(res.per_query.columns) == QUERY_COLUMNS
    assert q.loc["a0", "neighbours"] == ["u0", "a1", "b0"] and q.loc["b1", "neighbours"] == ["a2", "b0", "a1"]
    assert q.loc["a0", "ap"] == pytest.approx(0.25) and q.loc["b1", "ap"] == pytest.approx(0.5)
    assert q.loc["b1", "rk"] == 1.0 and q.loc["b0", "rk"] == 0.0 and q.loc["a2", "n_relevant"] == 2
    assert list(res.per_query["id"])[0] == "b0"  # worst first
    assert list(res.per_query["ap"]) == sorted(res.per_query["ap"])

    lab = res.per_label.set_index("label")
    assert lab.loc["A", "map"] == pytest.approx(0.25) and lab.loc["B", "map"] == pytest.approx(0.25)
    assert lab.loc["A", "n_items"] == 3 and lab.loc["B", "n_queries"] == 2
    assert lab.loc["C", "n_queries"] == 0 and np.isnan(lab.loc["C", "map"])


def test_perfect_retrieval_scores_one(tmp_path):
    pts = [(f"a{i}", "A", float(i)) for i in range(4)] + [(f"b{i}", "B", 90.0 + i) for i in range(4)]
    res = evaluate(circle_index(tmp_path, pts), k=5)
    # R = 3 < k: AP divides by min(R, k) = 3, so a perfect ranking has AP 1 while P@5 is 3/5.
    assert res.overall["mAP@k"] == pytest.approx(1.0) and res.overall["precision@1"] == 1.0
    assert res.overall["precision@k"] == pytest.approx(0.6) and res.overall["recall@k"] == pytest.approx(1.0)


def test_top_level_labels(tmp_path):
    pts = [("x1", "animals/cats", 0.0), ("x2", "animals/dogs", 5.0), ("x3", "food/fruit", 90.0),
           ("x4", "food/veg", 95.0)]
    index = circle_index(tmp_path, pts)
    with pytest.raises(SimxError, match="no label has two or more items"):  # every full label is a singleton
        evaluate(index, k=2, level="full")
    top = evaluate(index, k=2, level="top")
    assert top.overall["n_labels"] == 2 and top.overall["n_queries"] == 4
    assert top.overall["precision@1"] == 1.0 and top.overall["mAP@k"] == pytest.approx(1.0)
    assert set(top.per_label["label"]) == {"animals", "food"}


def test_no_labels_and_only_singletons_are_clear_errors(tmp_path):
    with pytest.raises(SimxError, match="has no labels"):
        evaluate(circle_index(tmp_path, [("a", None, 0.0), ("b", None, 10.0)]))
    with pytest.raises(SimxError, match="no label has two or more items"):
        evaluate(circle_index(tmp_path, [("a", "A", 0.0), ("b", "B", 10.0)]))
    with pytest.raises(SimxError, match="unknown label level"):
        evaluate(circle_index(tmp_path, POINTS), level="leaf")
    with pytest.raises(SimxError, match="k must be at least 1"):
        evaluate(circle_index(tmp_path, POINTS), k=0)


def test_result_is_cached_beside_the_index(tmp_path, monkeypatch):
    from simx.index import evaluation as eval_mod

    index = circle_index(tmp_path, POINTS)
    first = evaluate(index, k=3)
    cache = tmp_path / "eval_k3_full.parquet"
    assert cache.is_file()

    def boom(*a, **kw):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(eval_mod, "_per_query", boom)
    second = evaluate(index, k=3)
    pd.testing.assert_frame_equal(first.per_query, second.per_query)
    assert second.overall == first.overall
    with pytest.raises(AssertionError, match="recomputed"):
        evaluate(index, k=3, level="top")  # another level is another cache file


def test_to_dict_is_json_safe(tmp_path):
    d = evaluate(circle_index(tmp_path, POINTS), k=3).to_dict()
    text = json.dumps(d)
    back = json.loads(text)
    assert back["overall"]["n_queries"] == 5 and len(back["per_query"]) == 5
    assert back["per_query"][0]["neighbours"] == ["a2", "a1", "u0"]


def test_evaluate_a_built_index(tmp_path, root):
    """End to end on generated pictures: a colour-labelled gallery is far above chance even for a random CNN."""
    gal = make_gallery(tmp_path / "gal", {"red": 5, "green": 5, "blue": 5, "yellow": 5})
    build_index(gal, "colours", model=TINY, root=root, workers=0, progress=False)
    res = evaluate(open_index("colours", root=root), k=4)
    assert res.overall["n_queries"] == 20 and res.overall["n_labels"] == 4
    chance = 4 / 19
    assert res.overall["precision@k"] > chance
    assert (root / "colours" / "eval_k4_full.parquet").is_file()
    assert set(res.per_label["label"]) == {"red", "green", "blue", "yellow"}

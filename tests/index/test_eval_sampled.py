"""``simx eval --queries N`` (issue 16): a seeded sample of queries, confidence intervals, bounded batches."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from simx.cli import main
from simx.data import Item
from simx.errors import SimxError
from simx.index import evaluate
from simx.index.evaluation import confidence_interval, sample_queries
from simx.index.search import Index


def clustered_index(tmp_path, n: int = 600, labels: int = 6, noise: float = 0.9) -> Index:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(labels, 16))
    lab = rng.integers(0, labels, n)
    vecs = centres[lab] + noise * rng.normal(size=(n, 16))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    fidx = faiss.IndexFlatIP(16)
    fidx.add(vecs)
    items = [Item(id=f"i{j:04d}", path=f"/x/{j}.png", label=f"L{lab[j]}") for j in range(n)]
    folder = tmp_path / "clustered"
    folder.mkdir()
    return Index(folder, {"model": {"spec": "t", "metric": "cosine", "dim": 16}}, items, [None] * n, vecs, fidx)


def test_sample_is_seeded_and_the_interval_covers_the_full_value(tmp_path):
    index = clustered_index(tmp_path)
    full = evaluate(index, k=5, cache=False)
    calls = []
    a = evaluate(index, k=5, queries=150, seed=3, cache=False, batch=40, progress=calls.append)
    b = evaluate(index, k=5, queries=150, seed=3, cache=False)
    c = evaluate(index, k=5, queries=150, seed=4, cache=False)
    assert calls == [40, 40, 40, 30]  # batched searches, progress per batch
    assert a.overall["n_queries"] == 150 and a.overall["n_eligible"] == 600 and a.overall["sampled"]
    assert sorted(a.per_query["id"]) == sorted(b.per_query["id"]) != sorted(c.per_query["id"])
    assert a.overall["mAP@k"] == b.overall["mAP@k"]
    for name in ("precision@1", "precision@k", "recall@k", "mAP@k"):
        lo, hi = a.overall["ci95"][name]
        assert lo < a.overall[name] < hi and hi - lo < 0.25
        assert lo <= full.overall[name] <= hi, name  # the sample's interval covers the value over all queries
        flo, fhi = full.overall["ci95"][name]
        assert fhi - flo < hi - lo  # 4x the queries: a narrower interval
    assert not full.overall["sampled"] and full.overall["n_queries"] == 600
    # all queries when N is not smaller; the sample is cached under its own name
    assert evaluate(index, k=5, queries=10_000, cache=False).overall["n_queries"] == 600
    evaluate(index, k=5, queries=150, seed=3)
    assert (index.path / "eval_k5_full_q150_s3.parquet").is_file()


def test_interval_and_sample_helpers():
    assert confidence_interval([1.0]) == (1.0, 1.0)
    lo, hi = confidence_interval([0.0, 1.0] * 50)
    assert lo == pytest.approx(0.5 - 1.96 * 0.50252 / 10, abs=1e-3) and hi == pytest.approx(1 - lo, abs=1e-9)
    assert sample_queries([5, 6, 7], None) == [5, 6, 7]
    s = sample_queries(list(range(100)), 10, seed=1)
    assert len(s) == 10 and s == sorted(s) and s == sample_queries(list(range(100)), 10, seed=1)
    with pytest.raises(SimxError):
        sample_queries(list(range(100)), 0)


def test_cli_prints_intervals_for_a_sample(tmp_path, capsys):
    from .conftest import TINY, make_gallery

    gallery = make_gallery(tmp_path / "g", {"red": 6, "green": 6, "blue": 6})
    root = tmp_path / "idx"
    assert main(["index", "build", str(gallery), "--name", "g", "--model", TINY, "--root", str(root),
                 "--workers", "0", "-q"]) == 0
    capsys.readouterr()
    assert main(["eval", "g", "--root", str(root), "--queries", "8", "--seed", "2", "-k", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "queries 8 of 18 items" in out
    assert "95% confidence intervals over a seeded sample (seed 2) of 8 of the 18 queries" in out
    assert "mAP@3 [" in out

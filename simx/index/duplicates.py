"""Near-duplicates inside an index, and leaks between two indexes, by FAISS range search (never all pairs).

Every stored embedding asks a range query "which vectors score at least ``threshold`` with me?" against a
search structure over the target embeddings (the index itself, or ``other`` for leaks):

* up to :data:`EXACT_MAX` vectors an exact ``IndexFlat``;
* above it, for cosine and l2 indexes, an IVF index (4 x sqrt(n) lists, ``nprobe`` probed) over a PCA
  projection of the vectors to :data:`PROJECTED_DIMS` dimensions, searched by squared L2 distance. The projection
  is orthonormal, so it never lengthens a distance: with unit vectors, cosine >= t is distance^2 <= 2 - 2t, and
  every pair within that radius in the full space is within it after projecting (no pair is lost to the
  projection, only to unprobed lists). Near-duplicates are nearly the same vector, so they fall into the same or a
  neighbouring list. 64 of 1280 dimensions make the scan 20x cheaper and the structure 256 MB per million
  vectors: 1M synthetic 1280-d vectors took 85 s in all (1,000 of 1,000 planted pairs, no false pair), and on
  60k the range searches took 12 s against 232 s with IVF-SQ8 over all dimensions (benchmarks/bench_scale.py,
  docs/benchmarks.md);
* above it, for inner-product indexes (whose scores a projection does not bound), an IVF index with 8-bit
  scalar codes probed in ``nprobe`` lists, the range widened by :data:`SQ8_MARGIN` for the codes' rounding.

Every candidate is re-scored exactly from the stored (memory-mapped) embeddings before the threshold applies.

Queries run in batches, so memory holds one batch of results. Pairs are grouped with union-find (a group is a
connected set of near-identical items). Scores follow simx's convention (higher = more similar: cosine / inner
product, minus the squared distance for ``l2`` indexes), and so does ``threshold``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import SimxError
from .search import Index

#: Default similarity threshold for cosine indexes: resized and re-encoded copies of an image score above it with
#: the default model, distinct demo images below (tests/index/test_duplicates.py, docs/benchmarks.md).
DEFAULT_THRESHOLD = 0.95
#: Largest target searched exactly (Flat); above it an IVF structure with exact re-scoring.
EXACT_MAX = 50_000
#: How far below the threshold SQ8 scores are still re-scored (their rounding error is far smaller).
SQ8_MARGIN = 0.02
#: Dimensions of the projection the cosine / l2 structure searches in (PCA: an orthonormal projection, so a
#: distance never grows and no pair within the radius is lost; 64 dims cut the scan 20x for 1280-d vectors).
PROJECTED_DIMS = 64
#: Points the PCA projection is trained on.
PCA_TRAIN = 16_384
#: Training points per IVF list (k-means of 10 iterations).
TRAIN_PER_LIST = 32
#: Queries per range-search batch.
BATCH = 2048
PAIR_COLUMNS = ["a", "b", "score"]
#: How each structure is named in the results.
METHODS = {"exact": "exact range search (Flat)",
           "projected": f"IVF range search on a {PROJECTED_DIMS}-d PCA projection + exact re-scoring",
           "sq8": "IVF-SQ8 range search + exact re-scoring"}


@dataclass
class DuplicateResult:
    """Near-duplicate pairs of ``index`` (``other`` None) or leaks of ``index`` into ``other``.

    ``pairs``: DataFrame ``a, b, score`` (ids; ``a`` in ``index``, ``b`` in ``other`` or ``index``; best first).
    ``groups``: list of groups, each a dict ``ids`` (sorted), ``size``, ``min_score``, ``max_score``, largest first
    (within one index; across two indexes, the connected items of both). ``leaked``: ids of ``index`` with a
    near-duplicate in ``other`` (empty within one index). ``stats``: counts, method and time.
    """

    index: str
    other: str | None
    threshold: float
    pairs: pd.DataFrame
    groups: list[dict[str, Any]]
    leaked: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "other": self.other, "threshold": self.threshold, "stats": self.stats,
                "pairs": [{"a": a, "b": b, "score": float(s)} for a, b, s in self.pairs.itertuples(index=False)],
                "groups": self.groups, "leaked": self.leaked}


def _structure(vectors: np.ndarray, metric: str, nprobe: int) -> tuple[Any, str]:
    """The range-search structure over ``vectors`` and its kind: ``exact`` (Flat), ``projected`` (cosine and l2
    above :data:`EXACT_MAX`) or ``sq8`` (inner product above it); see the module docstring."""
    import faiss

    n, d = vectors.shape
    fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    if n <= EXACT_MAX:
        flat = faiss.IndexFlat(d, fmetric)
        for s in range(0, n, 65536):
            flat.add(np.ascontiguousarray(vectors[s : s + 65536], dtype=np.float32))
        return flat, "exact"
    rows = np.sort(np.random.default_rng(0).choice(n, min(n, max(TRAIN_PER_LIST * _lists(n, metric), 65536)),
                                                   replace=False))
    dims = min(d, PROJECTED_DIMS, len(rows))
    if metric == "ip":  # inner products do not survive a projection: 8-bit codes of every dimension
        index = faiss.index_factory(d, f"IVF{_lists(n, metric)},SQ8", fmetric)
        kind = "sq8"
    else:
        inner = faiss.IndexIVFFlat(faiss.IndexFlatL2(dims), dims, _lists(n, metric))
        if dims == d:
            index = inner
        else:  # the projection learns from a smaller sample than the lists (a d x d covariance needs no more)
            pca = faiss.PCAMatrix(d, dims)
            pca.train(np.ascontiguousarray(vectors[rows[:: max(1, len(rows) // PCA_TRAIN)]], dtype=np.float32))
            index = faiss.IndexPreTransform(pca, inner)
        kind = "projected"
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = 10
    index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    for s in range(0, n, 65536):
        index.add(np.ascontiguousarray(vectors[s : s + 65536], dtype=np.float32))
    ivf.nprobe = int(min(nprobe, ivf.nlist))
    return index, kind


def _lists(n: int, metric: str) -> int:
    """IVF lists: about 4 sqrt(n) for the projected structure (short lists: each query scans nprobe of them),
    2 sqrt(n) for 8-bit codes; a power of two, at least 64 and at most n / 8."""
    per = 2.0 if metric == "ip" else 4.0
    return int(min(max(64, 2 ** round(np.log2(per * np.sqrt(n)))), max(1, n // 8)))


def _radius(kind: str, metric: str, threshold: float) -> float:
    """The FAISS range radius that keeps every pair scoring at least ``threshold`` (and some below it).

    FAISS keeps inner products > radius, or squared L2 distances < radius (simx's l2 score is minus that). The
    projected structure measures squared L2 distances after an orthonormal projection, which never grow, so
    ``2 - 2 * threshold`` (cosine of unit vectors) or ``-threshold`` (l2) loses no pair; 8-bit codes widen the
    range by :data:`SQ8_MARGIN`; a tiny epsilon keeps scores equal to the threshold."""
    if kind == "projected":
        return (2.0 - 2.0 * threshold if metric == "cosine" else -threshold) + 1e-4
    margin = (SQ8_MARGIN if kind == "sq8" else 0.0) + 1e-6
    return -threshold + margin if metric == "l2" else threshold - margin


def _range_pairs(queries: np.ndarray, target: np.ndarray, metric: str, threshold: float, same: bool,
                 nprobe: int, progress: Callable[[int], Any] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """All (query row, target row, exact score) with score >= threshold; within one set only i < j."""
    index, kind = _structure(target, metric, nprobe)
    radius = _radius(kind, metric, threshold)
    qa, ta, sa = [], [], []
    for s in range(0, len(queries), BATCH):
        q = np.ascontiguousarray(queries[s : s + BATCH], dtype=np.float32)
        lims, _, ids = index.range_search(q, float(radius))
        ids = ids.astype(np.int64)
        rows = np.repeat(np.arange(len(q), dtype=np.int64), np.diff(lims.astype(np.int64))) + s
        if same:
            keep = rows < ids
            rows, ids = rows[keep], ids[keep]
        if len(ids):
            cand = np.asarray(target[ids], dtype=np.float32)
            qv = np.asarray(queries[rows], dtype=np.float32)
            score = np.einsum("nd,nd->n", cand, qv)
            if metric == "l2":
                score = -((cand - qv) ** 2).sum(axis=1)
            keep = score >= threshold
            qa.append(rows[keep])
            ta.append(ids[keep])
            sa.append(score[keep])
        if progress is not None:
            progress(len(q))
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    return cat(qa, np.int64), cat(ta, np.int64), cat(sa, np.float32), kind


def _groups(edges_a: list[str], edges_b: list[str], scores: np.ndarray) -> list[dict[str, Any]]:
    """Connected components of the pair graph (union-find), largest first."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(edges_a, edges_b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = {}
    for x in list(parent):
        members.setdefault(find(x), []).append(x)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for a, s in zip(edges_a, scores):
        r = find(a)
        lo[r] = min(lo.get(r, np.inf), float(s))
        hi[r] = max(hi.get(r, -np.inf), float(s))
    out = [{"ids": sorted(ids), "size": len(ids), "min_score": lo[r], "max_score": hi[r]}
           for r, ids in members.items()]
    return sorted(out, key=lambda g: (-g["size"], -g["max_score"], g["ids"][0]))


def _model_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    ma, mb = a.get("model", {}), b.get("model", {})
    return [f"{key}: {ma.get(key)!r} vs {mb.get(key)!r}" for key in ("spec", "layer", "metric", "dim", "preprocessing")
            if ma.get(key) != mb.get(key)]


def find_duplicates(index: Index, threshold: float | None = None, other: Index | None = None, nprobe: int = 16,
                    progress: Callable[[int], Any] | None = None) -> DuplicateResult:
    """Near-duplicate pairs within ``index`` or, with ``other``, items of ``index`` leaked into ``other``.

    ``threshold`` (default :data:`DEFAULT_THRESHOLD` for cosine indexes; required for ``ip`` and ``l2``) is a
    similarity in the index's score convention. ``nprobe``: lists probed per query when the target is large.
    ``progress(n)`` after each batch of queries. Raises :class:`SimxError` when the two indexes' vectors are not
    comparable (different model record).
    """
    t0 = time.perf_counter()
    metric = index.metric
    if threshold is None:
        if metric != "cosine":
            raise SimxError(f"index {index.name!r} uses the {metric} metric: give --threshold in its score units "
                            "(higher = more similar)")
        threshold = DEFAULT_THRESHOLD
    threshold = float(threshold)
    if metric == "cosine" and not -1.0 <= threshold <= 1.0:
        raise SimxError(f"a cosine threshold must lie in [-1, 1], got {threshold}")
    target = index if other is None else other
    if other is not None:
        diffs = _model_differences(index.meta, other.meta)
        if diffs:
            raise SimxError(f"indexes {index.name!r} and {other.name!r} were built with different models, so their "
                            "vectors are not comparable: " + "; ".join(diffs))
    qa, ta, sc, kind = _range_pairs(index.embeddings, target.embeddings, metric, threshold, other is None,
                                           nprobe, progress)
    order = np.lexsort((ta, qa, -sc))
    a_ids = [index.ids[i] for i in qa[order]]
    b_ids = [target.ids[i] for i in ta[order]]
    scores = sc[order]
    pairs = pd.DataFrame({"a": a_ids, "b": b_ids, "score": scores.astype(float)}, columns=PAIR_COLUMNS)
    if other is None:
        groups = _groups(a_ids, b_ids, scores)
        leaked: list[str] = []
    else:  # ids of two indexes may coincide: tag them by side for the components
        tagged = _groups([f"a\x00{a}" for a in a_ids], [f"b\x00{b}" for b in b_ids], scores)
        groups = [{**g, "ids": [i.split("\x00", 1)[1] for i in g["ids"]],
                   "sides": [("index" if i.startswith("a\x00") else "other") for i in g["ids"]]} for g in tagged]
        leaked = sorted(set(a_ids))
    stats = {"n_items": len(index), "n_other": None if other is None else len(other), "pairs": len(pairs),
             "groups": len(groups), "in_groups": int(sum(g["size"] for g in groups)), "leaked": len(leaked),
             "method": METHODS[kind], "nprobe": None if kind == "exact" else int(nprobe),
             "seconds": round(time.perf_counter() - t0, 3)}
    return DuplicateResult(index=index.name, other=None if other is None else other.name, threshold=threshold,
                           pairs=pairs, groups=groups, leaked=leaked, stats=stats)


def cache_path(index: Index, threshold: float, other: Index | None = None):
    """Where :func:`save` keeps a result beside the index (the dashboard's Duplicates page reads it)."""
    across = "" if other is None else f"_across_{other.name}"
    return index.path / f"duplicates{across}_t{threshold:.4f}.parquet"


def save(result: DuplicateResult, index: Index, other: Index | None = None) -> None:
    """Write the pairs beside the index (atomically; silently skipped for a read-only index folder)."""
    path = cache_path(index, result.threshold, other)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        result.pairs.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)

"""Leave-one-out retrieval metrics of an index whose items carry labels.

Relevance is :mod:`simx.relevance`'s: a neighbour is relevant to a query when the two share at least one label
(an item may carry several, :attr:`simx.data.Item.labels`; with one label per item this is "same label").
Every labelled item with at least one other relevant item is a query; its own entry is excluded from its
results. Items without a label are never queries but stay in the gallery as (irrelevant) neighbours. For a
query with R other relevant items and relevance rel_1..rel_k of its k results:

* P@1 = rel_1, P@k = (sum rel_j) / k, R@k = (sum rel_j) / R,
* AP@k = sum_j P@j * rel_j / min(R, k), and mAP@k is its mean over queries.

``level="top"`` keeps only the first path component of each label (``animals/birds`` -> ``animals``);
``primary_only=True`` uses each item's primary ``label`` alone (the single-label definition, to compare with).
The per-query table is cached in the index folder as ``eval_k{k}_{level}.parquet`` (``..._primary.parquet``
with ``primary_only``); the folder is replaced as a whole by every rebuild, so the cache can never describe
another build.

The failure helpers (:func:`failure_ids`, :func:`next_failure`, :func:`review_pairs`, :func:`label_confusion`)
turn the per-query table into what the dashboard walks: the Failures page, "Next failure" and the review queue.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import SimxError
from ..relevance import LEVELS, at_level, check_level, item_labels  # noqa: F401 - LEVELS re-exported
from .search import Index

#: Columns of :attr:`EvalResult.per_query`, in order.
QUERY_COLUMNS = ["id", "label", "labels", "ap", "p1", "pk", "rk", "n_relevant", "neighbours", "relevant"]


@dataclass
class EvalResult:
    """Metrics at ``k`` for label ``level``.

    ``overall``: ``precision@1``, ``precision@k``, ``recall@k``, ``mAP@k`` (means over queries), the counts
    ``n_items``, ``n_queries``, ``n_skipped`` (labelled items that share no label with any other item),
    ``n_unlabelled``, ``n_labels``, and ``multi_label`` (some item has several labels) and ``relevance`` (the
    definition in words). ``per_label``: one row per label (``label, n_items, n_queries, p1, pk, rk, map``; a
    query with several labels counts in each of its labels' rows), worst mAP first. ``per_query``: one row per
    query (:data:`QUERY_COLUMNS`: its primary ``label``, all its ``labels``, the metrics, the ``neighbours``
    and whether each is ``relevant``), worst first by AP then P@1.
    """

    k: int
    level: str
    overall: dict[str, Any]
    per_label: pd.DataFrame
    per_query: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``--json``)."""
        return {
            "k": self.k,
            "level": self.level,
            "overall": self.overall,
            "per_label": _records(self.per_label),
            "per_query": _records(self.per_query),
        }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in df.to_dict(orient="records"):
        clean = {}
        for key, val in row.items():
            if isinstance(val, np.generic):
                val = val.item()
            elif isinstance(val, np.ndarray):
                val = val.tolist()
            clean[key] = val
        out.append(clean)
    return out


def level_labels(index: Index, level: str = "full") -> list[str | None]:
    """Each item's primary label at ``level`` (None for unlabelled items)."""
    check_level(level)
    return [None if it.label in ("", None) else at_level(it.label, level) for it in index.items]


def label_sets(index: Index, level: str = "full", primary_only: bool = False) -> list[frozenset[str]]:
    """Each item's labels at ``level`` (empty for unlabelled items): what relevance compares."""
    check_level(level)
    return [item_labels(it, level, primary_only) for it in index.items]


class _Relevance:
    """Label sets coded as integer signatures, so the relevance of many (query, neighbour) pairs is a lookup.

    With one label per item a signature is a label and relevance is equality of codes; with several, each
    distinct (query signature, neighbour signature) pair is intersected once per batch.
    """

    def __init__(self, sets: list[frozenset[str]]):
        codes: dict[frozenset[str], int] = {}
        self.sig = np.array([-1 if not st else codes.setdefault(st, len(codes)) for st in sets], dtype=np.int64)
        self.sets = list(codes)
        self.single = all(len(st) <= 1 for st in self.sets)
        counts = np.bincount(self.sig[self.sig >= 0], minlength=len(self.sets))
        by_label: dict[str, list[int]] = {}
        for code, st in enumerate(self.sets):
            for lab in st:
                by_label.setdefault(lab, []).append(code)
        # other items sharing a label with an item of each signature
        others = np.array([sum(int(counts[t]) for t in set().union(*(by_label[lab] for lab in st))) - 1
                           for st in self.sets], dtype=np.int64)
        self.n_relevant = np.where(self.sig >= 0, others[np.maximum(self.sig, 0)] if len(others) else 0, 0)
        self.label_items = Counter(lab for st in sets for lab in st)

    def relevant(self, queries: list[int], pos: np.ndarray) -> np.ndarray:
        """bool (len(queries), k): does neighbour ``pos[j, r]`` share a label with query ``queries[j]``."""
        sq = np.repeat(self.sig[queries][:, None], pos.shape[1], axis=1)
        sp = np.where(pos >= 0, self.sig[np.where(pos >= 0, pos, 0)], -1)
        valid = (sq >= 0) & (sp >= 0)
        if self.single:
            return valid & (sq == sp)
        rel = np.zeros(pos.shape, dtype=bool)
        n = len(self.sets)
        uniq, inverse = np.unique(sq[valid] * n + sp[valid], return_inverse=True)
        shared = np.array([not self.sets[c // n].isdisjoint(self.sets[c % n]) for c in uniq.tolist()], dtype=bool)
        rel[valid] = shared[inverse.reshape(-1)] if len(uniq) else False
        return rel


def _per_query(index: Index, sets: list[frozenset[str]], relevance: _Relevance, primary: list[str | None], k: int,
               level: str, batch: int, queries: list[int],
               progress: Callable[[int], Any] | None = None) -> pd.DataFrame:
    rows = []
    for start in range(0, len(queries), batch):
        q = queries[start : start + batch]
        vecs = np.ascontiguousarray(np.asarray(index.embeddings[q], dtype=np.float32))
        pos, _ = index.search_positions(vecs, k, exclude=q)
        kk = pos.shape[1]
        rel_bool = relevance.relevant(q, pos)
        rel = rel_bool.astype(np.float64)
        hits = rel.cumsum(axis=1)
        precision_at = hits / np.arange(1, kk + 1)[None, :]
        n_rel = relevance.n_relevant[q].astype(np.float64)
        ap = (precision_at * rel).sum(axis=1) / np.minimum(n_rel, k)
        for j, i in enumerate(q):
            found = pos[j] >= 0
            rows.append({
                "id": index.ids[i],
                "label": primary[i] if primary[i] is not None else sorted(sets[i])[0],
                "labels": _ordered_labels(index.items[i], sets[i], level),
                "ap": float(ap[j]),
                "p1": float(rel[j, 0]) if kk else 0.0,
                "pk": float(hits[j, -1] / k) if kk else 0.0,
                "rk": float(hits[j, -1] / n_rel[j]) if kk else 0.0,
                "n_relevant": int(n_rel[j]),
                "neighbours": [index.ids[p] for p in pos[j][found]],
                "relevant": [bool(v) for v in rel_bool[j][found]],
            })
        if progress is not None:
            progress(len(q))
    df = pd.DataFrame(rows, columns=QUERY_COLUMNS)
    return df.sort_values(["ap", "p1", "id"], kind="stable").reset_index(drop=True)


def _ordered_labels(item: Any, labels: frozenset[str], level: str) -> list[str]:
    """``labels`` in the item's own order (primary first), as a list."""
    seen = [lab for lab in dict.fromkeys(at_level(x, level) for x in item.labels) if lab in labels]
    return seen + sorted(labels - set(seen))


def _cache_path(index: Index, k: int, level: str, primary_only: bool = False, sample: str = ""):
    return index.path / f"eval_k{k}_{level}{'_primary' if primary_only else ''}{sample}.parquet"


#: ``simx eval`` evaluates every query up to this many, else a seeded sample of this size.
DEFAULT_MAX_QUERIES = 50_000
#: Two-sided 95% normal quantile of the confidence intervals.
Z95 = 1.959963984540054


def sample_queries(eligible: list[int], n: int | None, seed: int = 0) -> list[int]:
    """``n`` of the ``eligible`` query positions drawn without replacement with ``seed`` (all of them when
    ``n`` is None or not smaller), in gallery order, so the same arguments always evaluate the same queries."""
    if n is None or n >= len(eligible):
        return list(eligible)
    if n < 1:
        raise SimxError(f"--queries must be at least 1, got {n}")
    chosen = np.random.default_rng(seed).choice(len(eligible), size=int(n), replace=False)
    return [eligible[i] for i in np.sort(chosen)]


def confidence_interval(values: Any, z: float = Z95) -> tuple[float, float]:
    """The 95% interval of a mean over queries (normal approximation, sample standard deviation): what the
    metric would be, on average, over all queries like these. A single query gives a zero-width interval."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    half = z * float(v.std(ddof=1)) / np.sqrt(v.size) if v.size > 1 else 0.0
    m = float(v.mean())
    return (max(0.0, m - half), min(1.0, m + half))


def _read_cache(path) -> pd.DataFrame | None:
    import pyarrow.parquet as pq

    try:
        df = pd.DataFrame(pq.read_table(path).to_pylist())
    except Exception:  # noqa: BLE001 - a missing or unreadable cache is simply recomputed
        return None
    return df if list(df.columns) == QUERY_COLUMNS else None


def _write_cache(path, df: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        schema = pa.schema([("id", pa.string()), ("label", pa.string()), ("labels", pa.list_(pa.string())),
                            ("ap", pa.float64()), ("p1", pa.float64()), ("pk", pa.float64()), ("rk", pa.float64()),
                            ("n_relevant", pa.int64()), ("neighbours", pa.list_(pa.string())),
                            ("relevant", pa.list_(pa.bool_()))])
        pq.write_table(pa.Table.from_pylist(_records(df), schema=schema), tmp)
        os.replace(tmp, path)
    except OSError:  # a read-only index folder: no cache, same result
        try:
            tmp.unlink()
        except OSError:
            pass


def evaluate(index: Index, k: int = 10, level: str = "full", cache: bool = True, batch: int = 1024,
             primary_only: bool = False, queries: int | None = None, seed: int = 0,
             progress: Callable[[int], Any] | None = None) -> EvalResult:
    """Leave-one-out precision@1, precision@k, recall@k and mAP@k of ``index`` (see the module docstring):
    relevant = sharing a label, or the primary label alone with ``primary_only``.

    ``queries``: evaluate a seeded sample (``seed``) of that many queries instead of all (a 1M gallery is
    measured on 50k in minutes); ``overall["ci95"]`` gives each metric's 95% confidence interval, and
    ``overall["n_eligible"]`` the number of queries sampled from. Searches run ``batch`` queries at a time, so
    memory stays bounded by one batch of results; ``progress(n)`` is called after each batch.

    Raises :class:`SimxError` when no item has a label, or no item shares a label with another.
    """
    if int(k) < 1:
        raise SimxError(f"k must be at least 1, got {k}")
    k = int(k)
    sets = label_sets(index, level, primary_only)
    primary = level_labels(index, level)
    n_unlabelled = sum(not st for st in sets)
    if n_unlabelled == len(sets):
        raise SimxError(
            f"index {index.name!r} has no labels: evaluation needs labelled items (a folder gallery's sub-folders "
            "or a manifest 'label' or 'labels' column)"
        )
    relevance = _Relevance(sets)
    n_skipped = int(sum(1 for i, st in enumerate(sets) if st and relevance.n_relevant[i] < 1))
    if n_skipped == len(sets) - n_unlabelled:
        raise SimxError(f"index {index.name!r}: no label has two or more items (no item shares a label with "
                        "another), so no query has a relevant neighbour to find")
    eligible = [i for i in range(len(sets)) if relevance.n_relevant[i] >= 1]
    chosen = sample_queries(eligible, queries, seed)
    sampled = len(chosen) < len(eligible)
    path = _cache_path(index, k, level, primary_only, f"_q{len(chosen)}_s{seed}" if sampled else "")
    per_query = _read_cache(path) if cache else None
    if per_query is None:
        per_query = _per_query(index, sets, relevance, primary, k, level, batch, chosen, progress)
        if cache:
            _write_cache(path, per_query)

    multi = not relevance.single
    counts = relevance.label_items
    overall = {
        "k": k,
        "level": level,
        "n_items": len(sets),
        "n_queries": int(len(per_query)),
        "n_skipped": n_skipped,
        "n_unlabelled": int(n_unlabelled),
        "n_labels": len(counts),
        "multi_label": bool(multi),
        "relevance": ("same primary label" if primary_only else "shares a label" if multi else "same label"),
        "precision@1": float(per_query["p1"].mean()),
        "precision@k": float(per_query["pk"].mean()),
        "recall@k": float(per_query["rk"].mean()),
        "mAP@k": float(per_query["ap"].mean()),
        "n_eligible": len(eligible),
        "sampled": bool(sampled),
        "seed": int(seed) if sampled else None,
        "ci95": {name: list(confidence_interval(per_query[col]))
                 for name, col in (("precision@1", "p1"), ("precision@k", "pk"), ("recall@k", "rk"),
                                   ("mAP@k", "ap"))},
    }
    exploded = per_query.drop(columns=["label"]).explode("labels").rename(columns={"labels": "label"})
    grouped = exploded.groupby("label", sort=True).agg(
        n_queries=("id", "size"), p1=("p1", "mean"), pk=("pk", "mean"), rk=("rk", "mean"), map=("ap", "mean")
    )
    per_label = pd.DataFrame({"label": sorted(counts)}).set_index("label")
    per_label["n_items"] = [counts[lab] for lab in per_label.index]
    per_label = per_label.join(grouped)
    per_label["n_queries"] = per_label["n_queries"].fillna(0).astype(int)
    per_label = per_label.reset_index()[["label", "n_items", "n_queries", "p1", "pk", "rk", "map"]]
    per_label = per_label.sort_values(["map", "label"], kind="stable", na_position="last").reset_index(drop=True)
    return EvalResult(k=k, level=level, overall=overall, per_label=per_label, per_query=per_query)


# --------------------------------------------------------------------------------------------- failures


def failure_ids(per_query: pd.DataFrame) -> list[str]:
    """Queries that are failures under the evaluation's relevance (AP@k below 1: an irrelevant neighbour ranks
    above a relevant one, or relevant items are missing from the top k), worst first."""
    if per_query is None or len(per_query) == 0:
        return []
    return [str(i) for i, ap in zip(per_query["id"], per_query["ap"]) if ap < 1.0 - 1e-12]


def next_failure(per_query: pd.DataFrame, current: str | None) -> str | None:
    """The failure after ``current`` in worst-first order (wrapping around), the worst one when ``current`` is
    not a failure, None when there is none."""
    order = failure_ids(per_query)
    if not order:
        return None
    if current in order:
        return order[(order.index(current) + 1) % len(order)]
    return order[0]


def review_pairs(per_query: pd.DataFrame, k: int | None = None) -> list[tuple[str, str, int]]:
    """The review queue's order: (query, neighbour, 1-based rank) for the top ``k`` neighbours of every query,
    the worst queries first (the evaluation's order) and, within a query, by rank."""
    out: list[tuple[str, str, int]] = []
    if per_query is None or len(per_query) == 0:
        return out
    for qid, nbs in zip(per_query["id"], per_query["neighbours"]):
        for r, nid in enumerate(list(nbs)[: k if k else None]):
            out.append((str(qid), str(nid), r + 1))
    return out


def label_confusion(per_query: pd.DataFrame, item_labels: dict[str, Any], normalise: bool = True) -> pd.DataFrame:
    """Query label (rows) x neighbour label (columns) over the retrieved neighbours of every query.

    ``item_labels`` maps an id to its labels (a list, or one label; missing or empty: ``(none)``). Each
    retrieved neighbour counts 1, split evenly over the query's labels; for a query label the neighbour also
    carries, that share lands on the diagonal (a correct retrieval), else it is split evenly over the
    neighbour's labels. With one label per item these are plain counts. With ``normalise`` each row sums to 1.
    """
    def labels_of(item_id: Any) -> list[str]:
        value = item_labels.get(item_id)
        value = [value] if isinstance(value, str) else list(value or [])
        return [str(v) for v in value if v not in (None, "")] or ["(none)"]

    counts: dict[tuple[str, str], float] = {}
    qcol = "labels" if "labels" in per_query.columns else "label"
    for qlabs, nbs in zip(per_query[qcol], per_query["neighbours"]):
        qlabs = [qlabs] if isinstance(qlabs, str) else [str(x) for x in qlabs]
        for n in list(nbs):
            nlabs = labels_of(n)
            for a in qlabs:
                targets = [a] if a in nlabs else nlabs
                for b in targets:
                    counts[(a, b)] = counts.get((a, b), 0.0) + 1.0 / (len(qlabs) * len(targets))
    if not counts:
        return pd.DataFrame()
    rows = sorted({a for a, _ in counts})
    cols = sorted({b for _, b in counts} | set(rows))
    df = pd.DataFrame(0.0, index=rows, columns=cols)
    for (a, b), n in counts.items():
        df.loc[a, b] = n
    if normalise:
        df = df.div(df.sum(axis=1).where(lambda x: x > 0, 1), axis=0)
    return df

"""Leave-one-out retrieval metrics of an index whose items carry labels.

Every labelled item whose label has at least one other member is a query; its own entry is excluded from its
results, and a neighbour is relevant when it has the same label. Items without a label are never queries but stay
in the gallery as (irrelevant) neighbours. For a query with R other relevant items and relevance rel_1..rel_k of
its k results:

* P@1 = rel_1, P@k = (sum rel_j) / k, R@k = (sum rel_j) / R,
* AP@k = sum_j P@j * rel_j / min(R, k), and mAP@k is its mean over queries.

``level="top"`` keeps only the first path component of each label (``animals/birds`` -> ``animals``).
The per-query table is cached in the index folder as ``eval_k{k}_{level}.parquet``; the folder is replaced as a
whole by every rebuild, so the cache can never describe another build.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SimxError
from .search import Index

LEVELS = ("full", "top")
#: Columns of :attr:`EvalResult.per_query`, in order.
QUERY_COLUMNS = ["id", "label", "ap", "p1", "pk", "rk", "n_relevant", "neighbours"]


@dataclass
class EvalResult:
    """Metrics at ``k`` for label ``level``.

    ``overall``: ``precision@1``, ``precision@k``, ``recall@k``, ``mAP@k`` (means over queries) and the counts
    ``n_items``, ``n_queries``, ``n_skipped`` (labelled items alone in their label), ``n_unlabelled``,
    ``n_labels``. ``per_label``: one row per label (``label, n_items, n_queries, p1, pk, rk, map``), worst mAP
    first. ``per_query``: one row per query (:data:`QUERY_COLUMNS`), worst first by AP then P@1.
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
    """Each item's label at ``level`` (None for unlabelled items)."""
    if level not in LEVELS:
        raise SimxError(f"unknown label level {level!r}; choose one of {', '.join(LEVELS)}")
    labels = [it.label if it.label not in ("", None) else None for it in index.items]
    if level == "top":
        labels = [None if lab is None else lab.split("/")[0] for lab in labels]
    return labels


def _per_query(index: Index, labels: list[str | None], counts: Counter, k: int, batch: int) -> pd.DataFrame:
    queries = [i for i, lab in enumerate(labels) if lab is not None and counts[lab] >= 2]
    lab_arr = np.array([lab if lab is not None else "\x00<none>" for lab in labels], dtype=object)
    rows = []
    for start in range(0, len(queries), batch):
        q = queries[start : start + batch]
        vecs = np.ascontiguousarray(np.asarray(index.embeddings[q], dtype=np.float32))
        pos, _ = index.search_positions(vecs, k, exclude=q)
        kk = pos.shape[1]
        qlab = lab_arr[q][:, None]
        rel = (pos >= 0) & (lab_arr[np.where(pos >= 0, pos, 0)] == qlab)
        rel = rel.astype(np.float64)
        hits = rel.cumsum(axis=1)
        precision_at = hits / np.arange(1, kk + 1)[None, :]
        n_rel = np.array([counts[labels[i]] - 1 for i in q], dtype=np.float64)
        ap = (precision_at * rel).sum(axis=1) / np.minimum(n_rel, k)
        for j, i in enumerate(q):
            rows.append({
                "id": index.ids[i],
                "label": labels[i],
                "ap": float(ap[j]),
                "p1": float(rel[j, 0]) if kk else 0.0,
                "pk": float(hits[j, -1] / k) if kk else 0.0,
                "rk": float(hits[j, -1] / n_rel[j]) if kk else 0.0,
                "n_relevant": int(n_rel[j]),
                "neighbours": [index.ids[p] for p in pos[j] if p >= 0],
            })
    df = pd.DataFrame(rows, columns=QUERY_COLUMNS)
    return df.sort_values(["ap", "p1", "id"], kind="stable").reset_index(drop=True)


def _cache_path(index: Index, k: int, level: str):
    return index.path / f"eval_k{k}_{level}.parquet"


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
        schema = pa.schema([("id", pa.string()), ("label", pa.string()), ("ap", pa.float64()), ("p1", pa.float64()),
                            ("pk", pa.float64()), ("rk", pa.float64()), ("n_relevant", pa.int64()),
                            ("neighbours", pa.list_(pa.string()))])
        pq.write_table(pa.Table.from_pylist(_records(df), schema=schema), tmp)
        os.replace(tmp, path)
    except OSError:  # a read-only index folder: no cache, same result
        try:
            tmp.unlink()
        except OSError:
            pass


def evaluate(index: Index, k: int = 10, level: str = "full", cache: bool = True, batch: int = 1024) -> EvalResult:
    """Leave-one-out precision@1, precision@k, recall@k and mAP@k of ``index`` (see the module docstring).

    Raises :class:`SimxError` when no item has a label, or no label has two members.
    """
    if int(k) < 1:
        raise SimxError(f"k must be at least 1, got {k}")
    k = int(k)
    labels = level_labels(index, level)
    n_unlabelled = sum(lab is None for lab in labels)
    if n_unlabelled == len(labels):
        raise SimxError(
            f"index {index.name!r} has no labels: evaluation needs labelled items (a folder gallery's sub-folders "
            "or a manifest 'label' column)"
        )
    counts = Counter(lab for lab in labels if lab is not None)
    n_skipped = sum(1 for lab in labels if lab is not None and counts[lab] < 2)
    if n_skipped == len(labels) - n_unlabelled:
        raise SimxError(f"index {index.name!r}: no label has two or more items, so no query has a relevant "
                        "neighbour to find")
    per_query = _read_cache(_cache_path(index, k, level)) if cache else None
    if per_query is None:
        per_query = _per_query(index, labels, counts, k, batch)
        if cache:
            _write_cache(_cache_path(index, k, level), per_query)

    overall = {
        "k": k,
        "level": level,
        "n_items": len(labels),
        "n_queries": int(len(per_query)),
        "n_skipped": int(n_skipped),
        "n_unlabelled": int(n_unlabelled),
        "n_labels": len(counts),
        "precision@1": float(per_query["p1"].mean()),
        "precision@k": float(per_query["pk"].mean()),
        "recall@k": float(per_query["rk"].mean()),
        "mAP@k": float(per_query["ap"].mean()),
    }
    grouped = per_query.groupby("label", sort=True).agg(
        n_queries=("id", "size"), p1=("p1", "mean"), pk=("pk", "mean"), rk=("rk", "mean"), map=("ap", "mean")
    )
    per_label = pd.DataFrame({"label": sorted(counts)}).set_index("label")
    per_label["n_items"] = [counts[lab] for lab in per_label.index]
    per_label = per_label.join(grouped)
    per_label["n_queries"] = per_label["n_queries"].fillna(0).astype(int)
    per_label = per_label.reset_index()[["label", "n_items", "n_queries", "p1", "pk", "rk", "map"]]
    per_label = per_label.sort_values(["map", "label"], kind="stable", na_position="last").reset_index(drop=True)
    return EvalResult(k=k, level=level, overall=overall, per_label=per_label, per_query=per_query)

"""From the label store to training triplets, and the held-out split of labelled queries.

Labels are read, never changed: the store is only queried (:meth:`simx.labels.LabelStore.list` and
:meth:`~simx.labels.LabelStore.triplets`). Negatives are the neighbours someone labelled *bad*; positives the
neighbours labelled *good* and, with ``same_label`` and gallery class labels, the query's top-``pool`` neighbours
that are relevant by the one definition of :mod:`simx.relevance` (they share a class label with the query) and
that nobody labelled bad for it. Ids that are not (or no longer) in the gallery, e.g. uploaded queries, are left
out and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..labels import LabelStore
from .split import TrainingError

HOW_TO_LABEL = (
    "label some matches first: in the dashboard (Explore, or the review queue) mark wrong neighbours as bad "
    "(thumb down, e.g. reason 'background shortcut') and right ones as good, or import labels with "
    "`simx labels import`; then run `simx train` again"
)


@dataclass
class TripletSet:
    """Triplets as gallery positions, with their query split and what was used."""

    ids: list[str]  # gallery ids of every image used, position = index in the arrays below
    train: np.ndarray  # (T, 3) int: query, positive, negative (indices into ids)
    val: np.ndarray  # (V, 3)
    train_queries: list[str]
    val_queries: list[str]
    record: dict[str, Any] = field(default_factory=dict)


def collect_triplets(store: LabelStore, index, same_label: bool = True, pool: int = 20,
                     users: list[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The store's triplets for ``index`` restricted to gallery ids, and a record of the labels behind them."""
    labels = store.list(index=index.name, user=users or None)
    if not labels:
        raise TrainingError(f"index {index.name!r} has no labels in {store!r}: " + HOW_TO_LABEL)
    in_gallery = [lab for lab in labels if lab.query_id in index and lab.neighbour_id in index]
    rows = store.triplets(index.name, user=users or None)
    rows = [r for r in rows if r["query"] in index and r["positive"] in index and r["negative"] in index]
    if same_label:
        rows += _same_label_rows(index, rows, in_gallery, pool)
    record = {
        "labels": len(labels),
        "labels_in_gallery": len(in_gallery),
        "labels_outside_gallery": len(labels) - len(in_gallery),
        "verdicts": dict(Counter(lab.verdict for lab in in_gallery)),
        "reasons": dict(Counter(lab.reason or "none" for lab in in_gallery if lab.verdict == "bad")),
        "users": sorted({lab.user for lab in in_gallery}),
        "label_ids": sorted(lab.id for lab in in_gallery),
        "pairs": sorted([lab.query_id, lab.neighbour_id, lab.verdict, lab.user] for lab in in_gallery),
        "same_label_positives": bool(same_label),
        "positive_sources": dict(Counter(r["positive_source"] for r in rows)),
    }
    if not rows:
        n_bad = sum(lab.verdict == "bad" for lab in in_gallery)
        n_good = len(in_gallery) - n_bad
        raise TrainingError(
            f"index {index.name!r}: {n_bad} bad and {n_good} good labels give no triplet: a query needs at least "
            "one bad neighbour and one positive (a neighbour labelled good"
            + (", or one with its class label" if same_label else "")
            + "). Label a right neighbour as good for the queries whose bad matches you labelled"
        )
    return rows, record


def _same_label_rows(index, rows: list[dict[str, Any]], labels: list, pool: int) -> list[dict[str, Any]]:
    """Triplets whose positive is one of the query's top-``pool`` neighbours sharing a class label with it."""
    from ..relevance import shares_label

    bad: dict[str, dict[str, str | None]] = {}
    for lab in labels:
        if lab.verdict == "bad":
            bad.setdefault(lab.query_id, {}).setdefault(lab.neighbour_id, lab.reason)
    have = {(r["query"], r["positive"]) for r in rows}
    out = []
    for q in sorted(bad):
        query = index.item(q)
        for h in index.search_id(q, pool):
            if h.id in bad[q] or (q, h.id) in have or not shares_label(query, index.item(h.id)):
                continue
            out += [{"query": q, "positive": h.id, "negative": n, "positive_source": "same_label",
                     "reason": reason or ""} for n, reason in sorted(bad[q].items(), key=lambda kv: kv[0])]
    return out


def split_triplets(rows: list[dict[str, Any]], val_share: float = 0.2, seed: int = 0,
                   min_val_queries: int = 2) -> TripletSet:
    """Split by query (a query's triplets are all train or all validation), seeded. With fewer than
    ``2 * min_val_queries`` queries there is no validation split (recorded)."""
    queries = sorted({r["query"] for r in rows})
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(queries)))
    n_val = int(round(val_share * len(queries))) if len(queries) >= 2 * min_val_queries else 0
    n_val = max(n_val, min_val_queries) if n_val else 0
    val_q = sorted(queries[i] for i in order[:n_val])
    train_q = sorted(queries[i] for i in order[n_val:])
    ids = sorted({r[role] for r in rows for role in ("query", "positive", "negative")})
    pos = {i: j for j, i in enumerate(ids)}
    val_set = set(val_q)

    def arr(keep: bool) -> np.ndarray:
        sel = [[pos[r["query"]], pos[r["positive"]], pos[r["negative"]]] for r in rows
               if (r["query"] in val_set) == keep]
        return np.asarray(sel, dtype=np.int64).reshape(-1, 3)

    train, val = arr(False), arr(True)
    record = {"seed": int(seed), "val_share": float(val_share), "train_queries": train_q, "val_queries": val_q,
              "train_triplets": int(len(train)), "val_triplets": int(len(val)), "images": len(ids)}
    return TripletSet(ids, train, val, train_q, val_q, record)


def query_weights(triplets: np.ndarray) -> np.ndarray:
    """1 / (number of triplets of the same query): every query weighs the same, however many pairs it has."""
    if not len(triplets):
        return np.zeros(0, dtype=np.float32)
    counts = Counter(triplets[:, 0].tolist())
    return np.asarray([1.0 / counts[q] for q in triplets[:, 0].tolist()], dtype=np.float32)

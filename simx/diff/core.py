"""Model A/B over one gallery: what changed query by query, and which labelled pairs moved.

:func:`compare_indexes` takes two indexes built from the same gallery (the same ids, and the same file wherever
both recorded a fingerprint; anything else is refused with the ids that differ) and returns an
:class:`IndexDiff`:

The files are compared by content (size and a hash of their head, as recorded at build time), not by modification
time, so a copied or regenerated identical gallery compares.

* ``per_query``: one row per gallery item: its top-k neighbours under A and B, what *entered* and *left* the
  top-k, the top-k overlap, and, for items that are queries of the leave-one-out evaluation (a class label shared
  with another item), P@1, P@k and AP@k under both models and their changes, taken from
  :func:`simx.index.evaluate` (the same numbers ``simx eval`` prints). Rows are sorted worst change first (AP@k,
  then P@1, then P@k, then overlap).
* ``pairs``: every labelled pair (from the label stores of both indexes; a pair anyone called bad counts as bad)
  with its exact rank under A and B (1 + the number of other items more similar to the query, by brute force over
  the stored embeddings, so it holds beyond the top-k and for approximate FAISS indexes) and a status: a bad
  match that left the top-k is *fixed*, one that entered it a *regression*; a good match that left is a
  *regression*, one that entered *fixed*; otherwise *unchanged* (the rank may still have moved).
* ``overall``: metrics of A and B and their change, counts of queries better/worse/unchanged, the mean top-k
  overlap, and the pair counts per status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..errors import SimxError

#: Columns of :attr:`IndexDiff.per_query` that are always present.
BASE_COLUMNS = ["id", "label", "overlap", "entered", "left", "neighbours_a", "neighbours_b"]
METRIC_COLUMNS = ["p1_a", "p1_b", "d_p1", "pk_a", "pk_b", "d_pk", "ap_a", "ap_b", "d_ap"]
PAIR_COLUMNS = ["query", "neighbour", "verdict", "rank_a", "rank_b", "in_top_a", "in_top_b", "status", "gain",
                "users"]


class DiffError(SimxError):
    """Two indexes cannot be compared (different galleries, bad k)."""


@dataclass
class IndexDiff:
    """The comparison of index ``a`` (before) with index ``b`` (after); see the module docstring."""

    a: str
    b: str
    k: int
    level: str
    overall: dict[str, Any]
    per_query: pd.DataFrame
    pairs: pd.DataFrame
    models: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def has_metrics(self) -> bool:
        return "d_ap" in self.per_query.columns

    def worst(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` queries that changed most for the worse (rows with a metric change below zero first)."""
        if self.has_metrics:
            rows = self.per_query[self.per_query["d_ap"].notna()]
            return rows[(rows["d_ap"] < 0) | (rows["d_p1"] < 0) | (rows["d_pk"] < 0)].head(n)
        return self.per_query[self.per_query["overlap"] < 1].head(n)

    def sorted_deltas(self) -> tuple[str, np.ndarray, list[str]]:
        """What the summary plot draws: (name, per-query values sorted ascending, their ids). AP@k change when
        the gallery has class labels, else the top-k overlap."""
        if self.has_metrics:
            rows = self.per_query[self.per_query["d_ap"].notna()].sort_values(["d_ap", "id"], kind="stable")
            return f"change of AP@{self.k} (B - A)", rows["d_ap"].to_numpy(float), rows["id"].tolist()
        rows = self.per_query.sort_values(["overlap", "id"], kind="stable")
        return f"top-{self.k} overlap of A and B", rows["overlap"].to_numpy(float), rows["id"].tolist()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``simx diff --json``)."""
        from ..index.evaluation import _records

        return {"a": self.a, "b": self.b, "k": self.k, "level": self.level, "models": self.models,
                "overall": self.overall, "notes": self.notes, "per_query": _records(self.per_query),
                "pairs": _records(self.pairs)}


def check_same_gallery(a, b) -> None:
    """Raise :class:`DiffError` unless ``a`` and ``b`` hold the same ids (and the same file contents where both
    recorded a fingerprint)."""
    ids_a, ids_b = set(a.ids), set(b.ids)
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)

        def few(ids: list[str]) -> str:
            return ", ".join(ids[:3]) + (" ..." if len(ids) > 3 else "")

        raise DiffError(
            f"indexes {a.name!r} ({len(ids_a)} items) and {b.name!r} ({len(ids_b)} items) are not over the same "
            f"gallery: {len(only_a)} ids only in {a.name!r}" + (f" ({few(only_a)})" if only_a else "")
            + f", {len(only_b)} only in {b.name!r}" + (f" ({few(only_b)})" if only_b else "")
            + ". Build both from the same source (simx index build SOURCE --name NAME --model SPEC)"
        )
    fp_b = dict(zip(b.ids, b.fingerprints))
    changed = sorted(i for i, f in zip(a.ids, a.fingerprints)
                     if f and fp_b.get(i) and _content(f) != _content(fp_b[i]))
    if changed:
        raise DiffError(f"indexes {a.name!r} and {b.name!r} have the same ids but {len(changed)} different files "
                        f"(first: {', '.join(changed[:3])}); rebuild one with --update so both see the same gallery")


def _content(fingerprint: str) -> str:
    """The content part of a file fingerprint (size and head hash, :func:`simx.data.file_fingerprint`), without
    the modification time: a gallery copied or regenerated byte for byte is the same gallery."""
    parts = str(fingerprint).split(":")
    return f"{parts[0]}:{parts[2]}" if len(parts) == 3 else str(fingerprint)


def _similarity_rows(index, rows: np.ndarray) -> np.ndarray:
    """Similarity of the items at ``rows`` to every item, by brute force in the index's metric."""
    emb = np.asarray(index.embeddings, dtype=np.float32)
    q = emb[rows]
    if index.metric == "l2":
        return -(np.square(q).sum(1)[:, None] - 2 * q @ emb.T + np.square(emb).sum(1)[None, :])
    return q @ emb.T


def exact_ranks(index, pairs: Iterable[tuple[str, str]], batch: int = 256) -> np.ndarray:
    """1-based rank of each neighbour among its query's neighbours (the query itself excluded): one plus the
    number of other items strictly more similar to the query."""
    pairs = list(pairs)
    out = np.zeros(len(pairs), dtype=np.int64)
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        qrows = np.array([index.position(q) for q, _ in chunk])
        nrows = np.array([index.position(n) for _, n in chunk])
        sims = _similarity_rows(index, qrows)
        target = sims[np.arange(len(chunk)), nrows][:, None]
        better = sims > target
        better[np.arange(len(chunk)), qrows] = False
        out[start : start + len(chunk)] = better.sum(1) + 1
    return out


def neighbour_lists(index, ids: list[str], k: int, batch: int = 1024) -> dict[str, list[str]]:
    """Top-``k`` neighbour ids of every gallery id in ``ids`` (each item excluded from its own list)."""
    out: dict[str, list[str]] = {}
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        rows = [index.position(i) for i in chunk]
        vecs = np.ascontiguousarray(np.asarray(index.embeddings[rows], dtype=np.float32))
        pos, _ = index.search_positions(vecs, k, exclude=rows)
        for i, r in zip(chunk, pos):
            out[i] = [index.ids[p] for p in r if p >= 0]
    return out


def _metrics(a, b, k: int, level: str) -> tuple[pd.DataFrame | None, dict[str, Any] | None, str | None]:
    from ..index import evaluate

    try:
        ra, rb = evaluate(a, k=k, level=level), evaluate(b, k=k, level=level)
    except SimxError as exc:
        return None, None, f"no retrieval metrics: {exc}"
    cols = ["id", "p1", "pk", "ap"]
    m = ra.per_query[cols].merge(rb.per_query[cols], on="id", suffixes=("_a", "_b"))
    for c in ("p1", "pk", "ap"):
        m[f"d_{c}"] = m[f"{c}_b"] - m[f"{c}_a"]
    overall = {}
    for key in ("precision@1", "precision@k", "recall@k", "mAP@k"):
        overall[key] = {"a": ra.overall[key], "b": rb.overall[key], "delta": rb.overall[key] - ra.overall[key]}
    return m[["id", *METRIC_COLUMNS]], overall, None


def _labelled_pairs(stores: list[Any], names: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    seen: set[tuple[str, int]] = set()
    for store in stores:
        for lab in store.list(index=names):
            key = (store.url, lab.id)
            if key in seen:
                continue
            seen.add(key)
            p = pairs.setdefault((lab.query_id, lab.neighbour_id), {"verdicts": set(), "users": set()})
            p["verdicts"].add(lab.verdict)
            p["users"].add(lab.user)
    return pairs


def _pair_table(a, b, k: int, stores: list[Any]) -> pd.DataFrame:
    raw = _labelled_pairs(stores, [a.name, b.name])
    keys = [key for key in sorted(raw) if key[0] in a and key[1] in a and key[0] != key[1]]
    if not keys:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    ra, rb = exact_ranks(a, keys), exact_ranks(b, keys)
    rows = []
    for (q, n), x, y in zip(keys, ra, rb):
        verdict = "bad" if "bad" in raw[(q, n)]["verdicts"] else "good"
        in_a, in_b = bool(x <= k), bool(y <= k)
        if in_a == in_b:
            status = "unchanged"
        elif verdict == "bad":
            status = "fixed" if in_a else "regressed"
        else:
            status = "regressed" if in_a else "fixed"
        gain = int(y - x) if verdict == "bad" else int(x - y)
        rows.append({"query": q, "neighbour": n, "verdict": verdict, "rank_a": int(x), "rank_b": int(y),
                     "in_top_a": in_a, "in_top_b": in_b, "status": status, "gain": gain,
                     "users": ", ".join(sorted(raw[(q, n)]["users"]))})
    df = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    order = df["status"].map({"regressed": 0, "unchanged": 1, "fixed": 2})
    return df.assign(_o=order).sort_values(["_o", "gain", "query", "neighbour"], kind="stable").drop(
        columns="_o").reset_index(drop=True)


def _relabelled(a, b) -> list[str]:
    """Ids whose class labels differ between the two indexes (the gallery's manifest changed between builds)."""
    from ..relevance import item_labels

    return sorted(it.id for it in a.items if item_labels(it) != item_labels(b.item(it.id)))


def comparable_indexes(index, root=None) -> list[str]:
    """Names of the other readable indexes under ``root``, those built from the same source as ``index`` first
    (read from their ``meta.json`` only: no model is loaded)."""
    from pathlib import Path

    from ..index import list_indexes
    from ..index.layout import read_meta

    source = index.meta.get("source")
    ranked = []
    for entry in list_indexes(root):
        if not entry.get("ok") or entry["name"] == index.name:
            continue
        try:
            same = read_meta(Path(entry["path"])).get("source") == source
        except SimxError:
            continue
        ranked.append((not same, entry["name"]))
    return [name for _, name in sorted(ranked)]


def label_stores(a, b) -> list[Any]:
    """The label stores of both indexes (one when ``$SIMX_LABELS_URL`` names a shared database)."""
    from ..labels import default_url, open_labels

    urls = {default_url(ix.name, ix.path.parent): ix for ix in (a, b)}
    return [open_labels(ix.name, root=ix.path.parent, url=url) for url, ix in urls.items()
            if not url.startswith("sqlite:///") or (ix.path / "labels.sqlite").exists()]


def compare_indexes(a, b, k: int = 10, level: str = "full", stores: list[Any] | None = None) -> IndexDiff:
    """Compare index ``a`` (before) with index ``b`` (after) over their common gallery (see module docstring).

    ``stores``: label stores whose pairs are tracked (default: :func:`label_stores` of both indexes).
    """
    if int(k) < 1:
        raise DiffError(f"k must be at least 1, got {k}")
    k = int(k)
    check_same_gallery(a, b)
    ids = list(a.ids)
    na, nb = neighbour_lists(a, ids, k), neighbour_lists(b, ids, k)
    labels = {it.id: it.label for it in a.items}
    rows = []
    for i in ids:
        la, lb = na[i], nb[i]
        sa, sb = set(la), set(lb)
        rows.append({"id": i, "label": labels.get(i), "overlap": len(sa & sb) / max(len(la), 1),
                     "entered": [x for x in lb if x not in sa], "left": [x for x in la if x not in sb],
                     "neighbours_a": la, "neighbours_b": lb})
    table = pd.DataFrame(rows, columns=BASE_COLUMNS)
    metrics, overall_metrics, note = _metrics(a, b, k, level)
    notes = [note] if note else []
    relabelled = _relabelled(a, b)
    if metrics is not None and relabelled:
        notes.append(f"{len(relabelled)} items carry other class labels in {b.name!r} than in {a.name!r} (first: "
                     f"{', '.join(relabelled[:3])}): each index's metrics use its own labels, so their change mixes "
                     "the model's effect with the relabelling")
    if metrics is not None:
        table = table.merge(metrics, on="id", how="left")
        table = table.sort_values(["d_ap", "d_p1", "d_pk", "overlap", "id"], kind="stable", na_position="last")
    else:
        table = table.sort_values(["overlap", "id"], kind="stable")
    table = table.reset_index(drop=True)
    pairs = _pair_table(a, b, k, label_stores(a, b) if stores is None else stores)
    overall: dict[str, Any] = {"k": k, "level": level, "n_items": len(ids), "metrics": overall_metrics,
                               "mean_overlap": float(table["overlap"].mean()) if len(table) else float("nan"),
                               "top1_changed": int(sum(1 for i in ids if na[i][:1] != nb[i][:1]))}
    if metrics is not None:
        d = table["d_ap"].dropna()
        overall["queries"] = {"n": int(len(d)), "better": int((d > 0).sum()), "worse": int((d < 0).sum()),
                              "unchanged": int((d == 0).sum())}
    overall["pairs"] = {s: int((pairs["status"] == s).sum()) for s in ("fixed", "regressed", "unchanged")}
    models = {"a": a.meta["model"]["spec"], "b": b.meta["model"]["spec"]}
    return IndexDiff(a.name, b.name, k, level, overall, table, pairs, models, notes)


def explain_both(a, b, query: str, neighbour: str, method: str = "gradcam", seed: int = 0, **params: Any):
    """The same method's explanation of one gallery pair under model A and under model B: (exp_a, exp_b)."""
    from ..data import load_image
    from ..explain import explain

    check_same_gallery(a, b)
    out = []
    for ix in (a, b):
        qimg, nimg = load_image(ix.item(query).path), load_image(ix.item(neighbour).path)
        out.append(explain(ix.model, qimg, [nimg], method=method, side="both", seed=seed, **params))
    return out[0], out[1]


def pair_pictures(exp_a, exp_b, per_map: bool = False) -> dict[str, Any]:
    """Overlays of both sides of a pair under A and B drawn by the one colour rule (:mod:`simx.render`): one
    absolute scale for the four maps (or per map), with its legend. Keys ``a`` and ``b`` hold ``query``,
    ``neighbour`` (RGB uint8) and ``similarity``; ``legend`` an RGB picture; ``note`` the scale's caption."""
    from ..render import legend, map_limit, overlay, scale_note, shared_limit

    def side(exp, which):
        maps = exp.query_maps if which == "query" else exp.neighbour_maps
        img = exp.query_image if which == "query" else exp.neighbour_images[0]
        base = float(getattr(exp, f"{which}_baseline", 0.0) or 0.0)
        return img, None if maps is None else np.asarray(maps[0]), base

    views = {name: {s: side(exp, s) for s in ("query", "neighbour")} for name, exp in (("a", exp_a), ("b", exp_b))}
    baseline = views["a"]["query"][2]
    limit = shared_limit([v[s][1] for v in views.values() for s in v], baseline)
    out: dict[str, Any] = {}
    for name, exp in (("a", exp_a), ("b", exp_b)):
        out[name] = {"similarity": float(exp.similarities[0])}
        for s, (img, heat, base) in views[name].items():
            lim = map_limit(heat, base) if per_map and heat is not None else limit
            out[name][s] = overlay(img, heat, limit=lim, baseline=base)
    out["legend"] = legend(limit, baseline, per_map=per_map)
    out["note"] = scale_note(limit, baseline, per_map=per_map)
    return out

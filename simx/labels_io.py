"""Labels in and out of files, for people and for retraining: what ``simx labels export|import`` and the Labels page
call.

* :func:`index_triplets`: the hard-negative triplets of an index, with the gallery's class labels as extra
  positives (the neighbours a query retrieves that share its label) and the images' paths;
* :func:`export_labels`: CSV, JSONL or triplets of one index's labels, to a file (atomically) or as text;
* :func:`read_label_file`: the rows of a CSV or JSONL export, for :meth:`simx.labels.LabelStore.import_labels`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import IO, Any, Sequence

from .labels import LabelError, LabelStore

FORMATS = ("csv", "jsonl", "triplets")


def index_triplets(store: LabelStore, index, k: int = 10, user: str | Sequence[str] | None = None,
                   target: str | os.PathLike | IO[str] | None = None, fmt: str | None = None) -> str:
    """Hard-negative triplets of ``index`` (an open :class:`simx.index.Index`): negatives are the neighbours
    labelled bad, positives those labelled good plus, in a labelled gallery, the top-``k`` neighbours that share
    the query's class label; with each image's path. CSV unless ``fmt="jsonl"``."""
    from .errors import SimxError

    try:
        from .index import evaluate

        per_query = evaluate(index, k=k).per_query
        neighbours = {q: list(n) for q, n in zip(per_query["id"], per_query["neighbours"])}
    except SimxError:  # an unlabelled gallery has no evaluation: good labels are the only positives
        neighbours = None
    return store.export_triplets(target, index=index.name, item_labels={it.id: it.labels for it in index.items},
                                 neighbours=neighbours, paths={it.id: it.path for it in index.items}, fmt=fmt,
                                 user=user or None)


def export_labels(store: LabelStore, index, fmt: str = "csv", target: str | os.PathLike | IO[str] | None = None,
                  k: int = 10, **filters: Any) -> str:
    """One index's labels as ``fmt`` (csv, jsonl or triplets), written to ``target`` when given; returns the text.
    ``filters`` are those of :meth:`LabelStore.list` (verdict, reason, user, since, until)."""
    if fmt not in FORMATS:
        raise LabelError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "triplets":
        jsonl = isinstance(target, (str, os.PathLike)) and str(target).endswith(".jsonl")
        return index_triplets(store, index, k=k, user=filters.get("user"), target=target,
                              fmt="jsonl" if jsonl else "csv")
    export = store.export_csv if fmt == "csv" else store.export_jsonl
    return export(target, index=index.name, **filters)


def read_label_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a label export: JSON lines (``.jsonl``/``.json``) or CSV (anything else)."""
    p = Path(path)
    if not p.is_file():
        raise LabelError(f"label file not found: {p}")
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise LabelError(f"{p}: line {n} is not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise LabelError(f"{p}: line {n} is not a JSON object")
                rows.append(row)
        return rows
    reader = csv.DictReader(io.StringIO(text))
    missing = {"query_id", "neighbour_id", "verdict", "user"} - set(reader.fieldnames or ())
    if missing:
        raise LabelError(f"{p}: not a simx label export (missing column(s) {', '.join(sorted(missing))})")
    return list(reader)


__all__ = ["FORMATS", "export_labels", "index_triplets", "read_label_file"]

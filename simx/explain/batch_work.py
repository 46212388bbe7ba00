"""The unit of work of ``simx explain-batch``: one query explained against its top neighbours, its maps shrunk to
the stored size. Both engines run it (the local loop in :mod:`simx.explain.batch`, the Ray actors in
:mod:`simx.explain.batch_ray`), so both store the same thing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Side of the stored maps (float16): 64 x 64 keeps 500 queries x 8 neighbours x 2 sides at ~65 MB.
MAP_SIZE = 64


def _shrink(maps: np.ndarray | None) -> np.ndarray | None:
    if maps is None:
        return None
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(MAP_SIZE, MAP_SIZE), mode="area")[:, 0].numpy().astype(np.float16)


@dataclass
class QueryMaps:
    """One query's stored part: a row per neighbour (ids, rank, similarity, faithfulness numbers), its maps shrunk
    to MAP_SIZE (``(top, S, S)`` float16, None for a side not explained) and the method's effective parameters."""

    rows: list[dict[str, Any]]
    query_maps: np.ndarray | None
    neighbour_maps: np.ndarray | None
    params: dict[str, Any]
    faithfulness: dict[str, Any] = field(default_factory=dict)


def explain_query(index: Any, query: str, neighbours: list[str], method: str, side: str, seed: int,
                  params: dict[str, Any], faithfulness: bool) -> QueryMaps:
    """Explain ``query`` against ``neighbours`` (one :func:`simx.explain.explain` call: the engine batches the
    pairs) and score the maps; the unit of work of both engines, so they store the same thing."""
    from . import explain
    from .metrics import faithfulness as faithfulness_of

    model = index.model
    exp = explain(model, index.item(query).path, [index.item(n).path for n in neighbours], method=method, side=side,
                  seed=seed, **params)
    scores = faithfulness_of(exp, model) if faithfulness else {}
    rows = []
    for r, nid in enumerate(neighbours):
        row = {"query": query, "neighbour": nid, "rank": r + 1, "similarity": float(exp.similarities[r])}
        for s in ("query", "neighbour"):
            if exp.maps(s) is not None:
                row[f"{s}_baseline"] = exp.baseline(s, r)  # the maps' "no effect" value (drawn relative to it)
            if s in scores:
                row[f"{s}_insertion"] = float(scores[s]["insertion"][r])
                row[f"{s}_deletion"] = float(scores[s]["deletion"][r])
        rows.append(row)
    info = {key: scores[key] for key in ("steps", "background", "direction", "random_margin") if key in scores}
    return QueryMaps(rows, _shrink(exp.query_maps), _shrink(exp.neighbour_maps), dict(exp.params), info)

"""JSON summaries of explanations, for the CLI (``simx explain --json``), reports and notebooks.

Pictures of explanations are drawn by :mod:`simx.render` (the one renderer); this module only says in JSON what an
explanation holds: the method, similarities, effective parameters, cost, baselines, faithfulness scores with
their direction and flags (when :func:`simx.explain.metrics.faithfulness` ran), map shapes, small extras.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..render.panels import faithfulness_of as faithfulness_scores
from .base import Explanation
from .metrics import _jsonable


def _small(value: Any, limit: int = 1024) -> Any:
    """Arrays bigger than ``limit`` elements are summarised by shape and dtype instead of listed."""
    arr = np.asarray(value) if isinstance(value, np.ndarray) or hasattr(value, "shape") else None
    if arr is not None and arr.size > limit:
        return {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if isinstance(value, dict):
        return {str(k): _small(v, limit) for k, v in value.items()}
    return value


def explanation_to_json(explanation: Explanation, k: int | None = None, maps: bool = False) -> dict[str, Any]:
    """A JSON-safe summary: method, similarities, effective parameters, cost, each map's baseline, faithfulness
    scores with their direction and flags (when computed), map shapes and extras (small ones as lists); with ``maps`` the (H, W) maps as nested lists.
    ``k`` restricts everything per-pair to neighbour ``k``. NaN becomes null."""
    pairs = range(explanation.k) if k is None else [k]
    if k is not None and not 0 <= k < explanation.k:
        raise IndexError(f"pair {k} out of range: the explanation has {explanation.k} neighbour(s)")
    out: dict[str, Any] = {
        "method": explanation.method,
        "k": explanation.k,
        "params": _jsonable(explanation.params),
        "cost": explanation.cost.to_dict(),
        "sides": [s for s, m in (("query", explanation.query_maps), ("neighbour", explanation.neighbour_maps))
                  if m is not None],
        "map_size": None,
        "pairs": [],
    }
    for m in (explanation.query_maps, explanation.neighbour_maps):
        if m is not None:
            out["map_size"] = list(np.asarray(m).shape[-2:])
            break
    fs = faithfulness_scores(explanation)
    for i in pairs:
        pair: dict[str, Any] = {"neighbour": int(i), "similarity": _jsonable(explanation.similarities[i])}
        for side in out["sides"]:
            pair[f"{side}_baseline"] = explanation.baseline(side, i)
            if fs and side in fs:
                pair[f"{side}_insertion"] = fs[side]["insertion"][i]
                pair[f"{side}_deletion"] = fs[side]["deletion"][i]
                for key in ("better_than_random", "padding_share", "padding_warning"):
                    if key in fs[side]:
                        pair[f"{side}_{key}"] = fs[side][key][i]
            if maps:
                m = explanation.query_maps if side == "query" else explanation.neighbour_maps
                pair[f"{side}_map"] = _jsonable(np.asarray(m[i], dtype=np.float32))
        out["pairs"].append(pair)
    out["similarities"] = [p["similarity"] for p in out["pairs"]]
    if fs:
        summary = {key: fs.get(key) for key in ("background", "background_source", "steps", "estimate",
                                                 "direction", "random_margin")}
        for side in out["sides"]:
            if side in fs:
                summary[side] = {"insertion_mean": fs[side]["insertion_mean"],
                                 "deletion_mean": fs[side]["deletion_mean"]}
        out["faithfulness"] = summary
    other = {key: v for key, v in explanation.scores.items() if not key.startswith("faithfulness")}
    if other:
        out["scores"] = _jsonable(_small(other))
    if explanation.extras:
        out["extras"] = _jsonable(_small(explanation.extras))
    return out


__all__ = ["explanation_to_json", "faithfulness_scores"]

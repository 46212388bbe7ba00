"""Explanations in bulk: maps and faithfulness of the worst queries' top neighbours, precomputed beside the index.

``simx explain-batch INDEX --worst 500 --top 8 --method sbsm`` evaluates the index (a seeded sample of queries
for large ones), takes the ``worst`` queries (lowest AP@k, then P@1), explains each against its ``top`` first
neighbours with :func:`simx.explain.explain` (one call per query: the engine batches the K pairs) and scores every
map's faithfulness (insertion/deletion AUC, methods.md 7.1). Everything is stored in
``ROOT/NAME/explanations/<method>-<key>/``::

    params.json     method, effective parameters (seed included), side, k, worst, top, model record, when, counts
    pairs.parquet   one row per (query, neighbour): rank, similarity, faithfulness numbers, row in maps.npz
    maps.npz        query_maps / neighbour_maps float16 (P, S, S) at MAP_SIZE, row = pairs.parquet's ``row``

``<key>`` hashes the method and its parameters, so runs with other parameters sit side by side and a reader can
ask for exactly the parameters it wants (:func:`load_precomputed`). Writes go to a temp folder renamed into
place. The folder lives inside the index folder and is replaced with it by a rebuild (its maps would describe
another model's vectors).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import SimxError

#: Side of the stored maps (float16): 64 x 64 keeps 500 queries x 8 neighbours x 2 sides at ~65 MB.
MAP_SIZE = 64
FOLDER = "explanations"
#: Where the explanations are computed: this process, or a Ray actor pool (one model per actor).
ENGINES = ("local", "ray")


def run_key(method: str, params: dict[str, Any], side: str) -> str:
    """The folder key of a run: method, side and every parameter (seed included)."""
    text = json.dumps({"method": method, "side": side, "params": params}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


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
            if s in scores:
                row[f"{s}_insertion"] = float(scores[s]["insertion"][r])
                row[f"{s}_deletion"] = float(scores[s]["deletion"][r])
        rows.append(row)
    return QueryMaps(rows, _shrink(exp.query_maps), _shrink(exp.neighbour_maps), dict(exp.params))


def worst_queries(index: Any, worst: int, top: int, k: int, seed: int,
                  queries: int | None) -> tuple[list[tuple[str, list[str]]], Any]:
    """The ``worst`` queries (lowest AP@k, then P@1) with their ``top`` first neighbours, and the evaluation."""
    from ..index.evaluation import evaluate

    if worst < 1 or top < 1:
        raise SimxError(f"--worst and --top must be at least 1, got {worst} and {top}")
    result = evaluate(index, k=max(k, top), queries=queries, seed=seed)
    chosen = result.per_query.head(int(worst))
    jobs = [(str(q), [str(n) for n in list(nbs)[:top]]) for q, nbs in zip(chosen["id"], chosen["neighbours"])]
    return [(q, nbs) for q, nbs in jobs if nbs], result


def explain_worst(index: Any, worst: int = 500, top: int = 8, method: str = "sbsm", side: str = "both",
                  k: int = 10, seed: int = 0, queries: int | None = 50_000, faithfulness: bool = True,
                  params: dict[str, Any] | None = None, progress: Callable[[int], Any] | None = None,
                  engine: str = "local", ray_address: str | None = None, actors: int | None = None,
                  num_gpus_per_worker: float = 0.0) -> Path:
    """Precompute and store the explanations of the ``worst`` queries' ``top`` neighbours; returns the folder.

    ``engine="ray"`` spreads the queries over a Ray actor pool (:mod:`simx.explain.batch_ray`: a local Ray, or
    the cluster at ``ray_address``); the stored result is the local engine's."""
    if engine not in ENGINES:
        raise SimxError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    params = dict(params or {})
    t0 = time.perf_counter()
    jobs, result = worst_queries(index, worst, top, k, seed, queries)
    if not jobs:
        raise SimxError(f"index {index.name!r}: no query with neighbours to explain")
    run_info: dict[str, Any] = {"engine": engine}
    if engine == "ray":
        from .batch_ray import explain_on_ray

        parts, plan = explain_on_ray(index, jobs, method=method, side=side, seed=seed, params=params,
                                     faithfulness=faithfulness, address=ray_address, actors=actors,
                                     num_gpus_per_worker=num_gpus_per_worker, progress=progress)
        run_info["ray"] = plan
    else:
        parts = []
        for qid, nbs in jobs:
            parts.append(explain_query(index, qid, nbs, method, side, seed, params, faithfulness))
            if progress is not None:
                progress(1)
    meta = {"method": method, "params": parts[0].params, "side": side, "k": k, "worst": int(worst),
            "top": int(top), "seed": seed, "faithfulness": faithfulness, "map_size": MAP_SIZE,
            "model": index.meta.get("model"), "index_built_at": index.meta.get("built_at"), "queries": len(parts),
            "pairs": sum(len(p.rows) for p in parts),
            "evaluation": {"sampled": result.overall.get("sampled"), "n_queries": result.overall["n_queries"]},
            "seconds": round(time.perf_counter() - t0, 2), **run_info,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return _store(index, parts, meta)


def _store(index: Any, parts: list[QueryMaps], meta: dict[str, Any]) -> Path:
    """Write the run into its folder (a temp folder renamed into place): maps.npz, pairs.parquet, params.json."""
    import pandas as pd

    rows = [{**row, "row": i} for i, row in enumerate(r for p in parts for r in p.rows)]
    key = run_key(meta["method"], meta["params"], meta["side"])
    final = Path(index.path) / FOLDER / f"{meta['method']}-{key}"
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = {}
    for name in ("query_maps", "neighbour_maps"):
        maps = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        if maps:
            arrays[name] = np.concatenate(maps)
    np.savez_compressed(tmp / "maps.npz", **arrays)
    pd.DataFrame(rows).to_parquet(tmp / "pairs.parquet", index=False)
    (tmp / "params.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final


def list_precomputed(index: Any) -> list[dict[str, Any]]:
    """``params.json`` of every stored run of ``index`` (with its ``folder``), newest first."""
    base = Path(index.path) / FOLDER
    out = []
    if base.is_dir():
        for folder in base.iterdir():
            if folder.name.startswith(".") or not (folder / "params.json").is_file():
                continue
            meta = json.loads((folder / "params.json").read_text(encoding="utf-8"))
            out.append({**meta, "folder": str(folder)})
    return sorted(out, key=lambda m: m.get("created_at", ""), reverse=True)


def load_precomputed(index: Any, query: str, neighbour: str, method: str,
                     params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The stored maps and numbers of one pair, or None: from the newest run of ``method`` (whose parameters
    include ``params``, when given) that explained this pair. Returns ``query_map``/``neighbour_map`` (float32
    MAP_SIZE x MAP_SIZE or None), the pair's row (similarity, faithfulness) and the run's ``params.json``."""
    import pandas as pd

    for run in list_precomputed(index):
        if run["method"] != method or (params and any(run["params"].get(k) != v for k, v in params.items())):
            continue
        pairs = pd.read_parquet(Path(run["folder"]) / "pairs.parquet")
        hit = pairs[(pairs["query"] == query) & (pairs["neighbour"] == neighbour)]
        if hit.empty:
            continue
        row = hit.iloc[0].to_dict()
        with np.load(Path(run["folder"]) / "maps.npz") as maps:
            get = (lambda name: maps[name][int(row["row"])].astype(np.float32) if name in maps.files else None)
            return {"query_map": get("query_maps"), "neighbour_map": get("neighbour_maps"), "pair": row, "run": run}
    return None

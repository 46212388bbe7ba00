"""Explanations in bulk: maps and faithfulness of the worst queries' top neighbours, precomputed beside the index.

``simx explain-batch INDEX --worst 500 --top 8 --method sbsm`` evaluates the index (a seeded sample of queries
for large ones), takes the ``worst`` queries (lowest AP@k, then P@1), explains each against its ``top`` first
neighbours with :func:`simx.explain.explain` (one call per query: the engine batches the K pairs) and scores every
map's faithfulness (insertion/deletion AUC, methods.md 7.1). Everything is stored in
``ROOT/NAME/explanations/<method>-<key>/``::

    params.json     method, effective parameters (seed included), side, k, worst, top, model record, when, counts,
                    engine (local or ray) and the faithfulness scoring (steps, fill)
    pairs.parquet   one row per (query, neighbour): rank, similarity, map baselines, faithfulness numbers, row in
                    maps.npz
    maps.npz        query_maps / neighbour_maps float16 (P, S, S) at MAP_SIZE, row = pairs.parquet's ``row``

``<key>`` hashes the method and its parameters, so runs with other parameters sit side by side and a reader can
ask for exactly the parameters it wants (:func:`load_precomputed`). Writes go to a temp folder renamed into
place. The folder lives inside the index folder and is replaced with it by a rebuild (its maps would describe
another model's vectors).

Engines: ``local`` explains the queries one after another in this process; ``ray`` spreads them over a Ray actor
pool (:mod:`simx.explain.batch_ray`). Both run the same unit of work (:func:`simx.explain.batch_work.explain_query`)
and write through the same :func:`_store`, so the stored run is the same. A viewer reads a run once with
:class:`StoredRun` and gets any of its pairs as a plain Explanation (the dashboard's Explore page does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import SimxError
from .batch_work import MAP_SIZE, QueryMaps, explain_query

FOLDER = "explanations"
#: Where the explanations are computed: this process, or a Ray actor pool (one model per actor).
ENGINES = ("local", "ray")


def run_key(method: str, params: dict[str, Any], side: str) -> str:
    """The folder key of a run: method, side and every parameter (seed included)."""
    text = json.dumps({"method": method, "side": side, "params": params}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


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
            "top": int(top), "seed": seed, "faithfulness": faithfulness,
            "faithfulness_scoring": parts[0].faithfulness, "map_size": MAP_SIZE,
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


class StoredRun:
    """One stored run read once (its pair table and its maps, decompressed): what a viewer keeps in memory to open
    any of its pairs at once (~65 MB for 500 queries x 8 neighbours)."""

    def __init__(self, folder: str | os.PathLike):
        import pandas as pd

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "params.json").read_text(encoding="utf-8"))
        pairs = pd.read_parquet(self.folder / "pairs.parquet")
        self.rows = {(str(q), str(n)): row for q, n, row in zip(pairs["query"], pairs["neighbour"],
                                                                 pairs.to_dict("records"))}
        with np.load(self.folder / "maps.npz") as maps:
            self.maps = {name: maps[name] for name in maps.files}

    def pair(self, query: str, neighbour: str) -> dict[str, Any] | None:
        """The pair's stored numbers and maps (``query_map`` / ``neighbour_map`` float32 MAP_SIZE x MAP_SIZE, or
        None for a side not explained), or None when this run did not explain the pair."""
        row = self.rows.get((str(query), str(neighbour)))
        if row is None:
            return None
        get = (lambda name: self.maps[name][int(row["row"])].astype(np.float32) if name in self.maps else None)
        return {"query_map": get("query_maps"), "neighbour_map": get("neighbour_maps"), "pair": dict(row),
                "run": {**self.meta, "folder": str(self.folder)}}

    def explanation(self, index: Any, query: str, neighbour: str) -> Any | None:
        """The pair as a plain :class:`simx.explain.Explanation` (k = 1) that the renderer draws like a live one:
        the stored maps resized to the model's input, the pictures as the model sees them (preprocessing only, no
        forward pass), the stored baselines, and the stored insertion/deletion scores as its faithfulness."""
        from ..data import load_image
        from ..render.colours import resize_map
        from .base import Cost, Explanation
        from .engine import PairContext

        found = self.pair(query, neighbour)
        if found is None:
            return None
        row = found["pair"]
        ctx = PairContext(index.model, load_image(index.item(query).path), [load_image(index.item(neighbour).path)])
        size = tuple(ctx.size)

        def side_maps(side: str) -> np.ndarray | None:
            m = found[f"{side}_map"]
            return None if m is None else resize_map(m, size)[None].astype(np.float32)

        scores: dict[str, Any] = {}
        info = self.meta.get("faithfulness_scoring") or {}
        sides = [s for s in ("query", "neighbour") if f"{s}_insertion" in row]
        if sides and info:
            scores["faithfulness"] = {**info, "estimate": False, "stored": True, **{
                s: {"insertion": [row[f"{s}_insertion"]], "deletion": [row[f"{s}_deletion"]],
                    "margin": [row[f"{s}_insertion"] - row[f"{s}_deletion"]],
                    "better_than_random": [bool(row[f"{s}_insertion"] - row[f"{s}_deletion"]
                                                > info.get("random_margin", 0.0))]} for s in sides}}
        baseline = (lambda s: None if f"{s}_baseline" not in row else np.asarray([row[f"{s}_baseline"]], np.float32))
        return Explanation(
            method=self.meta["method"], similarities=np.asarray([row["similarity"]], np.float32),
            query_maps=side_maps("query"), neighbour_maps=side_maps("neighbour"), params=dict(self.meta["params"]),
            cost=Cost(), scores=scores, extras={"precomputed": {k: self.meta.get(k) for k in PROVENANCE}},
            query_image=ctx.display_image(ctx.query[0]), neighbour_images=ctx.display_image(ctx.neighbours[0])[None],
            query_baseline=baseline("query"), neighbour_baseline=baseline("neighbour"),
            query_box=None if ctx.query_box is None else np.asarray(ctx.query_box, np.int32),
            neighbour_boxes=None if ctx.neighbour_boxes[0] is None else np.asarray(ctx.neighbour_boxes, np.int32))


#: What a viewer says about a stored run: when, with which parameters, where, how big the maps are.
PROVENANCE = ("method", "params", "side", "created_at", "engine", "map_size", "worst", "top", "seed")


def load_precomputed(index: Any, query: str, neighbour: str, method: str,
                     params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The stored maps and numbers of one pair, or None: from the newest run of ``method`` (whose parameters
    include ``params``, when given) that explained this pair. Returns ``query_map``/``neighbour_map`` (float32
    MAP_SIZE x MAP_SIZE or None), the pair's row (similarity, faithfulness) and the run's ``params.json``."""
    for run in list_precomputed(index):
        if run["method"] != method or (params and any(run["params"].get(k) != v for k, v in params.items())):
            continue
        found = StoredRun(run["folder"]).pair(query, neighbour)
        if found is not None:
            return found
    return None


def describe_run(meta: dict[str, Any]) -> str:
    """One sentence saying where a stored map comes from: when, which method and parameters, map size, engine."""
    params = ", ".join(f"{k}={v}" for k, v in sorted((meta.get("params") or {}).items()))
    when = str(meta.get("created_at", "?")).replace("T", " ").replace("Z", " UTC")
    size = meta.get("map_size", MAP_SIZE)
    return (f"Precomputed by simx explain-batch at {when} ({meta.get('method')}: {params}; side {meta.get('side')}; "
            f"{size} x {size} maps; {meta.get('engine', 'local')} engine), opened from disk, not recomputed.")

"""``simx explain-batch --engine ray``: the worst queries explained on a Ray actor pool, stored as the local engine.

The driver picks the queries (:func:`simx.explain.batch.worst_queries`) and makes them a Ray dataset, one row per
query (its position, id and neighbour ids). ``Dataset.map_batches`` runs :class:`QueryExplainer` on an actor pool:
each actor opens the index once (one model per actor, on a GPU when the actors get one) and explains one query
per call with :func:`simx.explain.batch.explain_query`, the local engine's unit of work, returning one row per
pair with its maps. The driver puts the pairs back in query order, so the stored run (maps, numbers, parameters)
is the one the local engine writes.

A cluster's workers must see the index folder and the gallery images at the same paths (a shared file system)
and have simx and the model installed. The actors, CPUs per actor and Ray start-up follow
:mod:`simx.index.ray_engine` (one actor per CPU on this machine, or one per ``num_gpus_per_worker`` GPUs).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from ..errors import SimxError
from .batch_work import MAP_SIZE, QueryMaps, explain_query


class QueryExplainer:
    """The Ray Data actor: the index (and its model) opened once; a batch of queries -> one row per pair."""

    def __init__(self, index_path: str, method: str, side: str, seed: int, params_json: str, faithfulness: bool,
                 threads: int, device: str):
        import torch

        from ..index import open_index
        from ..models import load_model

        torch.set_num_threads(max(1, int(threads)))
        index = open_index(index_path)
        if device.startswith("cuda") and torch.cuda.is_available():
            m = index.meta["model"]
            index = open_index(index_path, model=load_model(m["spec"], layer=m["layer"], metric=m["metric"],
                                                            preprocessing=m["preprocessing"], device=device))
        self.index = index
        self.args = (method, side, int(seed), json.loads(params_json), bool(faithfulness))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {"order": [], "row": [], "params": [], "query_map": [], "neighbour_map": [],
                                "has_maps": []}
        empty = np.zeros((MAP_SIZE, MAP_SIZE), np.float16)
        for order, query, neighbours in zip(batch["order"], batch["query"], batch["neighbours"]):
            part = explain_query(self.index, str(query), json.loads(str(neighbours)), *self.args)
            for r, row in enumerate(part.rows):
                out["order"].append(int(order))
                out["row"].append(json.dumps(row))
                out["params"].append(json.dumps({"params": part.params, "faithfulness": part.faithfulness},
                                                sort_keys=True, default=str))
                out["query_map"].append(empty if part.query_maps is None else part.query_maps[r])
                out["neighbour_map"].append(empty if part.neighbour_maps is None else part.neighbour_maps[r])
                out["has_maps"].append([part.query_maps is not None, part.neighbour_maps is not None])
        return {"order": np.asarray(out["order"], np.int64), "row": np.asarray(out["row"], dtype=object),
                "params": np.asarray(out["params"], dtype=object),
                "has_maps": np.asarray(out["has_maps"], dtype=bool).reshape(-1, 2),
                "query_map": np.stack(out["query_map"]) if out["row"] else np.zeros((0, MAP_SIZE, MAP_SIZE)),
                "neighbour_map": np.stack(out["neighbour_map"]) if out["row"] else np.zeros((0, MAP_SIZE, MAP_SIZE))}


def explain_on_ray(index: Any, jobs: list[tuple[str, list[str]]], method: str, side: str, seed: int,
                   params: dict[str, Any], faithfulness: bool, address: str | None = None, actors: int | None = None,
                   num_gpus_per_worker: float = 0.0,
                   progress: Callable[[int], Any] | None = None) -> tuple[list[QueryMaps], dict[str, Any]]:
    """Explain ``jobs`` (query id, neighbour ids) on Ray; returns one :class:`QueryMaps` per job, in job order,
    and the resource plan used. Starts (and stops) a local Ray unless one runs or ``address`` names a cluster."""
    import pyarrow as pa

    from ..index import ray_engine

    ray = ray_engine._ray()
    started = ray_engine.connect(address)
    try:
        plan = ray_engine.plan_resources(1, num_gpus_per_worker, address, actors)
        plan.actors = max(1, min(plan.actors, len(jobs)))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        table = pa.table({"order": pa.array(range(len(jobs)), pa.int64()),
                          "query": pa.array([q for q, _ in jobs], pa.string()),
                          "neighbours": pa.array([json.dumps(n) for _, n in jobs], pa.string())})
        # one block per query, so that the actors share the queries instead of the first taking them all
        blocks = [table.slice(i, 1) for i in range(len(jobs))]
        ds = ray.data.from_arrow(blocks).map_batches(
            QueryExplainer,
            fn_constructor_kwargs={"index_path": str(index.path), "method": method, "side": side, "seed": seed,
                                   "params_json": json.dumps(params, sort_keys=True), "faithfulness": faithfulness,
                                   "threads": max(1, int(plan.cpus_per_actor)),
                                   "device": "cuda" if plan.gpus_per_actor > 0 else "cpu"},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=plan.cpus_per_actor,
            num_gpus=plan.gpus_per_actor or None,
        )
        got: dict[int, list[tuple[dict, str, np.ndarray | None, np.ndarray | None]]] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for order, row, p, qm, nm, has in zip(batch["order"], batch["row"], batch["params"], batch["query_map"],
                                                  batch["neighbour_map"], batch["has_maps"]):
                pairs = got.setdefault(int(order), [])
                pairs.append((json.loads(str(row)), str(p), qm if has[0] else None, nm if has[1] else None))
                if progress is not None and len(pairs) == len(jobs[int(order)][1]):
                    progress(1)
    finally:
        if started:
            ray.shutdown()
    missing = [i for i, (_, nbs) in enumerate(jobs) if len(got.get(i, [])) != len(nbs)]
    if missing:
        raise SimxError(f"Ray returned incomplete results for queries {[jobs[i][0] for i in missing[:5]]}")
    parts = []
    for i in range(len(jobs)):
        pairs = sorted(got[i], key=lambda t: t[0]["rank"])
        parts.append(QueryMaps(rows=[t[0] for t in pairs], query_maps=_stacked([t[2] for t in pairs]),
                               neighbour_maps=_stacked([t[3] for t in pairs]), **json.loads(pairs[0][1])))
    return parts, plan.to_dict()


def _stacked(maps: list[np.ndarray | None]) -> np.ndarray | None:
    return None if any(m is None for m in maps) else np.stack(maps).astype(np.float16)

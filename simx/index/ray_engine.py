"""Embedding a gallery on Ray Data: an actor pool of models, shards written by the driver as they complete.

The files still to embed (the shards :mod:`simx.index.shards` has no complete file for) become a Ray dataset of
``(shard, row, path)`` rows, one block per shard. ``Dataset.map_batches`` runs :class:`ShardEmbedder` on an actor
pool: each actor loads the model once and, per batch, decodes with the same safe loader and the same
:func:`simx.index.embed.embed_batch` the local engine's definition of an embedding rests on, so both engines give
the same vectors. The driver streams the results (``iter_batches``), fills one buffer per shard and writes a shard
the moment its last file arrives; a killed driver loses only the shards in flight.

Without an address a local Ray is started (and stopped afterwards) with every core of this machine; with
``address`` (``ray://host:10001`` or ``auto``) the same code runs on a cluster, whose workers need simx and its
model installed. An already initialised Ray (a notebook, the tests) is used as it is.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import SimxError
from .shards import Shard, ShardStore

#: CPUs given to each CPU actor: one model and one decoding loop per core. On the 2-core machine two such actors
#: embedded 2,000 demo scenes 14% faster than the local engine's one model with two threads and two decoding
#: workers (benchmarks/bench_ray.py, docs/benchmarks.md).
CPUS_PER_ACTOR = 1


@dataclass
class RayPlan:
    """How the work is spread: actors, CPUs and GPUs per actor, images per batch, and the cluster seen."""

    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    batch_size: int
    cluster_cpus: float
    cluster_gpus: float
    address: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data must be installed, not only ray core
    except ImportError as exc:
        raise SimxError(f"--engine ray needs Ray Data: pip install 'ray[data]' ({exc})") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to Ray: the running session if any, else ``address``, else a new local Ray. Returns True when this
    call started it (the caller then shuts it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        where = address or "a local Ray"
        raise SimxError(f"cannot start or reach {where}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    return True


def plan_resources(batch_size: int, num_gpus_per_worker: float, address: str | None,
                   actors: int | None = None) -> RayPlan:
    """Actors from the cluster's resources: one per ``num_gpus_per_worker`` GPUs when asked for GPUs, else one per
    :data:`CPUS_PER_ACTOR` CPUs; ``actors`` overrides the count."""
    ray = _ray()
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
    if num_gpus_per_worker and num_gpus_per_worker > 0:
        if gpus < num_gpus_per_worker:
            raise SimxError(f"--num-gpus-per-worker {num_gpus_per_worker} but the Ray cluster has {gpus:g} GPUs")
        n = int(gpus // num_gpus_per_worker)
    else:
        n = max(1, int(cpus // CPUS_PER_ACTOR))
    return RayPlan(actors=max(1, int(actors) if actors else n), cpus_per_actor=CPUS_PER_ACTOR,
                   gpus_per_actor=float(num_gpus_per_worker or 0), batch_size=int(batch_size),
                   cluster_cpus=cpus, cluster_gpus=gpus, address=address)


class ShardEmbedder:
    """The Ray Data actor: one model per actor, loaded once; a batch of ``(shard, row, path)`` -> vectors."""

    def __init__(self, model_spec: str, model_kwargs: dict[str, Any], threads: int):
        import torch

        from ..models import load_model
        from .embed import prepare_model

        torch.set_num_threads(max(1, int(threads)))
        self.model_spec = model_spec
        self.model_kwargs = dict(model_kwargs)
        if self.model_kwargs.get("device", "cpu").startswith("cuda") and not torch.cuda.is_available():
            self.model_kwargs["device"] = "cpu"
        self.dim = prepare_model(load_model(model_spec, **self.model_kwargs)).dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .embed import embed_batch

        paths = [str(p) for p in batch["path"]]
        vectors, reasons = embed_batch(self.model_spec, paths, self.model_kwargs)
        return {"shard": np.asarray(batch["shard"], dtype=np.int64), "row": np.asarray(batch["row"], dtype=np.int64),
                "vector": vectors.reshape(len(paths), self.dim),
                "reason": np.asarray([r or "" for r in reasons], dtype=object)}


def embed_shards(shards: Sequence[Shard], store: ShardStore, model_spec: str, model_kwargs: dict[str, Any],
                 dim: int, plan: RayPlan, on_shard: Callable[[Shard], Any] | None = None,
                 on_images: Callable[[int], Any] | None = None) -> None:
    """Embed every file of ``shards`` on the connected Ray and write each shard to ``store`` as it completes.

    ``on_images(n)`` is called as results arrive (progress), ``on_shard(shard)`` after a shard is written; an
    exception from either stops the job, keeping the shards already written.
    """
    import pyarrow as pa

    ray = _ray()
    if not shards:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    blocks = [pa.table({"shard": pa.array([s.number] * len(s), pa.int64()),
                        "row": pa.array(range(len(s)), pa.int64()), "path": pa.array(list(s.paths), pa.string())})
              for s in shards]
    kwargs = dict(model_kwargs)
    kwargs["device"] = "cuda" if plan.gpus_per_actor > 0 else "cpu"
    ds = ray.data.from_arrow(blocks).map_batches(
        ShardEmbedder,
        fn_constructor_kwargs={"model_spec": model_spec, "model_kwargs": kwargs,
                               "threads": max(1, int(plan.cpus_per_actor))},
        batch_size=plan.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.cpus_per_actor,
        num_gpus=plan.gpus_per_actor or None,
    )
    by_number = {s.number: s for s in shards}
    buffers: dict[int, tuple[np.ndarray, list[str | None], list[bool]]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        vectors = np.asarray(batch["vector"], dtype=np.float32).reshape(len(batch["row"]), dim)
        for number, row, vec, reason in zip(batch["shard"], batch["row"], vectors, batch["reason"]):
            shard = by_number[int(number)]
            buf = buffers.setdefault(shard.number, (np.zeros((len(shard), dim), np.float32),
                                                    [None] * len(shard), [False] * len(shard)))
            buf[0][int(row)] = vec
            buf[1][int(row)] = str(reason) or None
            buf[2][int(row)] = True
        if on_images is not None:
            on_images(len(batch["row"]))
        for number in [n for n, b in buffers.items() if all(b[2])]:
            vecs, reasons, _ = buffers.pop(number)
            store.write(by_number[number], vecs, reasons)
            if on_shard is not None:
                on_shard(by_number[number])
    if buffers:
        missing = sorted(buffers)
        raise SimxError(f"Ray returned incomplete shards {missing[:5]}: some rows never came back")

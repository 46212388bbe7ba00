"""Benchmark of issue 16: the Ray engine against the local engine, on the same gallery of real images.

Builds the same gallery (``--gallery``: a folder or manifest; default the demo scenes under ``$SIMX_DATA``) twice
with the default model, each from scratch into a temporary index root:

* ``local``: :func:`simx.index.build_index` as ``simx index build`` runs it (one model, decoding workers);
* ``ray``: the same call with ``engine="ray"``; a local Ray is started first (``ray.init``, timed on its own, as
  the CLI does it when no Ray runs) with every core, so the Ray figure is split into start-up and the build
  proper (actor start-up with one model per actor, Ray Data scheduling, shard writes, FAISS).

For each: wall seconds, embedding seconds (``meta.json``'s timing) and images/s; then the ratios Ray / local, end
to end (Ray start-up included) and without Ray start-up; the largest difference between the two engines' vectors
(the index must be the same); the per-actor embedding rate and the throughput it projects onto N nodes of this
kind (N x actors per node x per-actor rate, an upper bound: the driver only receives 5 KB per image and writes
shards). Load averages before and after are printed and stored, since the machine is shared.

    flock /work/helpers/bench.lock python benchmarks/bench_ray.py --gallery data/demo/scenes/manifest.csv
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def build(source: str, root: Path, name: str, **kwargs) -> dict:
    from simx.index import build_index

    t0 = time.perf_counter()
    res = build_index(source, name, root=root, progress=False, **kwargs)
    wall = time.perf_counter() - t0
    n = res.meta["counts"]["embedded"]
    embed_s = res.meta["timing"]["embed_s"]
    return {"wall_s": round(wall, 2), "embed_s": embed_s, "images": n, "images_per_s": round(n / wall, 2),
            "embed_images_per_s": round(n / embed_s, 2), "build": res.meta["build"]}


def duplicates_check(index) -> dict:
    """``simx duplicates`` at its default threshold on the benchmark gallery (distinct generated scenes: every
    pair reported is a false pair), with the highest cosine between two different items for comparison."""
    from simx.index.duplicates import find_duplicates

    res = find_duplicates(index)
    e = np.asarray(index.embeddings, dtype=np.float32)
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    top = np.sort(sims.max(axis=1))[::-1]
    return {"threshold": res.threshold, "pairs": len(res.pairs), "seconds": res.stats["seconds"],
            "top_pairs": res.pairs.head(5).to_dict("records"), "highest_distinct_cosine": float(top[0]),
            "items_with_a_neighbour_above": {t: int((top >= t).sum()) for t in (0.8, 0.85, 0.9, 0.95)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = Path(os.environ.get("SIMX_DATA", "data/demo"))
    ap.add_argument("--gallery", default=str(data / "scenes" / "manifest.csv"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch-size", type=int, default=None, help="images per batch (default: the build's)")
    ap.add_argument("--actors", type=int, default=None, help="Ray actors (default: one per CPU)")
    ap.add_argument("--nodes", type=int, nargs="*", default=[1, 4, 16, 64])
    ap.add_argument("--only", choices=("local", "ray"), default=None)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    import ray

    from simx.index import open_index

    extra = {} if args.batch_size is None else {"batch_size": args.batch_size}
    out: dict = {"gallery": args.gallery, "model": args.model, "cpus": os.cpu_count(), "load_before": loadavg()}
    log(f"load before: {out['load_before']}")
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        root = Path(tmp) / "indexes"
        if args.only in (None, "local"):
            log("local build")
            out["local"] = build(args.gallery, root, "local", model=args.model, **extra)
            log(f"local: {out['local']['images_per_s']} images/s")
        if args.only in (None, "ray"):
            t0 = time.perf_counter()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            init_s = time.perf_counter() - t0
            log(f"ray.init {init_s:.1f} s; ray build")
            try:
                r = build(args.gallery, root, "ray", model=args.model, engine="ray", actors=args.actors,
                          resume=False, **extra)
            finally:
                ray.shutdown()
            r["ray_init_s"] = round(init_s, 2)
            r["end_to_end_s"] = round(init_s + r["wall_s"], 2)
            r["end_to_end_images_per_s"] = round(r["images"] / r["end_to_end_s"], 2)
            actors = r["build"]["ray"]["actors"]
            r["per_actor_images_per_s"] = round(r["embed_images_per_s"] / actors, 2)
            r["projected_images_per_s"] = {str(n): round(n * actors * r["per_actor_images_per_s"], 1)
                                           for n in args.nodes}
            out["ray"] = r
            log(f"ray: {r['images_per_s']} images/s ({r['end_to_end_images_per_s']} with start-up)")
        if "local" in out and "ray" in out:
            loc, r = out["local"], out["ray"]
            out["ray_over_local_time"] = {"end_to_end": round(r["end_to_end_s"] / loc["wall_s"], 3),
                                          "without_ray_start": round(r["wall_s"] / loc["wall_s"], 3),
                                          "embedding_only": round(r["embed_s"] / loc["embed_s"], 3)}
            a, b = open_index("local", root=root), open_index("ray", root=root)
            out["same_ids"] = a.ids == b.ids
            out["max_vector_difference"] = float(np.max(np.abs(np.asarray(a.embeddings) - np.asarray(b.embeddings))))
        if "local" in out:
            out["duplicates"] = duplicates_check(open_index("local", root=root))
    out["load_after"] = loadavg()
    log(f"load after: {out['load_after']}")
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

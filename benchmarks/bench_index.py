"""Benchmark of issue 3 (indexes): embedding throughput of a build, and FAISS index types at scale.

(a) Embedding: the build's DataLoader path (:func:`simx.index.embed_paths`, decoding in worker processes while the
    default model computes) against the bare model forward on the same, already decoded tensors, for a sweep of
    batch sizes, memory layouts and worker counts. The ratio build / bare says how much decoding and batching
    cost; the target is >= 0.85. The gallery is ``--gallery DIR``, else ``data/demo/scenes`` if present, else
    generated 320 px scene-like pictures (light gradient background, 2-3 coloured shapes).

(b) FAISS: Flat, HNSW32 and IVF-PQ (``IVF{nlist},PQ64``, nlist 1024 up to 200k vectors and 4096 above, with an
    nprobe sweep 1/4/16/64) on synthetic 1280-d vectors shaped like real embeddings: a Gaussian mixture of
    ``--clusters`` clusters (Zipf-like sizes) around a common mean direction, with within-cluster noise of a
    power-law spectrum (variance of the i-th principal direction ~ 1/i, random basis), L2-normalised; the 1000
    queries are fresh draws from the same mixture. Per index: build (train + add) time, memory (bytes of the
    index), single-query latency p50/p99, batched latency (1000 queries at once) and recall@10 against exact
    search. IVF-PQ is measured as FAISS returns it and with simx's exact re-ranking (r x k candidates re-scored
    with the stored embeddings; simx indexes of a quantised type use r = 16). An index whose build is projected
    past ``--build-budget`` seconds (15 min) is stopped and its measured build rate is reported instead.

(c) ``--compressed N``: the issue-16 compressed candidates at N vectors, built by simx's own ``make_faiss_index``.

(d) ``--sweep N``: single-query latency of one or more factories at N vectors through simx's path, per query wall
    time and the searching thread's CPU time (``time.thread_time``: what a query costs on an idle core, the figure
    to read on a shared machine), the coarse quantiser's and the exact re-scoring's share, over nprobe x
    quantizer efSearch x re-scored candidates x refine ``k_factor_rf`` x FAISS threads x fast-scan ``implem``.
    ``--cache DIR`` keeps the drawn vectors (re-read memory-mapped, as simx reads its embeddings), the ground truth
    and the built indexes between runs; ``--coarse-from FACTORY`` builds the ``--configs`` on the trained coarse
    quantiser of a cached build, so only their codes are trained.

Prints markdown tables and writes everything to ``--out`` (JSON). Not a test: it takes from minutes (--quick) to
about an hour (--sizes 100000 1000000) on a 2-core CPU.

    python benchmarks/bench_index.py --quick
    nohup python benchmarks/bench_index.py --sizes 100000 1000000 > bench.log 2>&1 &
    python benchmarks/bench_index.py --sweep 1000000 --cache /tmp/simx-ann --sweep-nprobe 32 48 64 --rescore 8 16
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

D = 1280
K = 10


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        pass
    import faiss
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "torch_threads": torch.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(),
            "torch": torch.__version__, "faiss": faiss.__version__, "python": platform.python_version(),
            "load_at_start": round(os.getloadavg()[0], 2)}


# ============================================================================================ (a) embedding


def make_scenes(folder: Path, n: int, size: int = 320, seed: int = 0) -> list[str]:
    """Scene-like PNGs: light gradient background with noise, 2-3 coloured shapes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = rng.integers(200, 245, 3)
        grad = rng.normal(0, 12, 3)
        arr = base[None, None, :] + grad[None, None, :] * (xx[..., None] + yy[..., None]) + rng.normal(0, 5, (size, size, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 4))):
            s = int(rng.integers(size // 5, size // 2))
            x0, y0 = (int(v) for v in rng.integers(0, size - s, 2))
            colour = tuple(int(v) for v in rng.integers(0, 230, 3))
            kind = int(rng.integers(0, 3))
            if kind == 0:
                d.ellipse([x0, y0, x0 + s, y0 + s], fill=colour, outline=(20, 20, 20), width=3)
            elif kind == 1:
                d.rectangle([x0, y0, x0 + s, y0 + s], fill=colour, outline=(20, 20, 20), width=3)
            else:
                d.polygon([(x0, y0 + s), (x0 + s // 2, y0), (x0 + s, y0 + s)], fill=colour, outline=(20, 20, 20))
        p = folder / f"scene_{i:05d}.png"
        img.save(p)
        paths.append(str(p))
    return paths


def bench_embedding(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from simx.data import IMAGE_EXTENSIONS
    from simx.index import build_index
    from simx.index.embed import decode, embed_paths, forward, prepare_model
    from simx.models import load_model

    if args.gallery:
        paths = sorted(str(p) for p in Path(args.gallery).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        source = str(args.gallery)
    elif Path("data/demo/scenes").is_dir():
        paths = sorted(str(p) for p in Path("data/demo/scenes").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        source = "data/demo/scenes"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="simx-bench-scenes-"))
        paths = make_scenes(tmp / "scenes", args.images)
        source = f"{args.images} generated 320 px scenes"
    paths = paths[: args.images]
    n = len(paths)
    log(f"embedding benchmark on {n} images ({source})")
    model = load_model("default", device="cpu")
    tensors = torch.stack([decode(p, model.preprocessing)[0] for p in paths])

    def bare(batch: int, channels_last: bool) -> float:
        model.net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        model._simx_prepared = channels_last
        forward(model, tensors[:batch])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            forward(model, tensors[i : i + batch])
        return n / (time.perf_counter() - t0)

    sweep = []
    for rep in range(args.repeats):  # interleaved repeats: a busy machine hits every setting alike
        for channels_last in (False, True):
            for batch in args.batch_sizes:
                ips = bare(batch, channels_last)
                sweep.append({"batch": batch, "channels_last": channels_last, "rep": rep, "images_per_s": ips})
                log(f"bare forward batch {batch} channels_last {channels_last}: {ips:.1f} img/s")

    def median_of(rows, **match):
        vals = [r["images_per_s"] for r in rows if all(r[k] == v for k, v in match.items())]
        return float(np.median(vals)) if vals else float("nan")

    bare_table = [{"batch": b, "channels_last": cl, "images_per_s": median_of(sweep, batch=b, channels_last=cl)}
                  for cl in (False, True) for b in args.batch_sizes]
    best = max(bare_table, key=lambda r: r["images_per_s"])
    log(f"best bare setting: {best}")

    # The build path with the settings the build uses (prepare_model: channels-last on CPU) at the best batch size,
    # per worker count. Each build run is paired with a bare run right before it, so load changes on a shared
    # machine hit both sides of the ratio alike; the median ratio over the repeats is reported.
    batch = best["batch"]
    model._simx_prepared = False
    prepare_model(model)
    build_rows = []
    for rep in range(args.repeats + 1):
        for workers in args.workers:
            ref = bare(batch, True)
            model._simx_prepared = True
            t0 = time.perf_counter()
            embed_paths(model, paths, batch_size=batch, workers=workers)
            ips = n / (time.perf_counter() - t0)
            build_rows.append({"batch": batch, "workers": workers, "rep": rep, "images_per_s": ips,
                               "bare_images_per_s": ref, "ratio": ips / ref})
            log(f"build path batch {batch} workers {workers}: {ips:.1f} img/s vs bare {ref:.1f} "
                f"(ratio {ips / ref:.2f})")
    build_table = []
    for workers in args.workers:
        rows = [r for r in build_rows if r["workers"] == workers]
        build_table.append({"batch": batch, "workers": workers,
                            "images_per_s": float(np.median([r["images_per_s"] for r in rows])),
                            "bare_images_per_s": float(np.median([r["bare_images_per_s"] for r in rows])),
                            "ratio_median": float(np.median([r["ratio"] for r in rows])),
                            "ratio_min": float(min(r["ratio"] for r in rows)),
                            "ratio_max": float(max(r["ratio"] for r in rows)), "repeats": len(rows)})

    # End to end: simx index build with its defaults (gallery reading, fingerprints, FAISS, writing included).
    root = Path(tempfile.mkdtemp(prefix="simx-bench-index-"))
    gal = Path(paths[0]).parent if not args.gallery else Path(args.gallery)
    t0 = time.perf_counter()
    res = build_index(gal, "bench", root=root, progress=False)
    e2e = time.perf_counter() - t0
    end_to_end = {"images": res.meta["counts"]["embedded"], "seconds": e2e,
                  "images_per_s": res.meta["counts"]["embedded"] / e2e, "embed_s": res.meta["timing"]["embed_s"],
                  "batch": res.meta["build"]["batch_size"], "workers": res.meta["build"]["workers"]}
    log(f"end-to-end build: {end_to_end}")
    return {"source": source, "images": n, "input_px": model.preprocessing.size, "bare_sweep": sweep,
            "bare": bare_table, "best_bare": best, "build_sweep": build_rows, "build": build_table,
            "end_to_end": end_to_end}


# ============================================================================================ (b) FAISS


class Mixture:
    """The synthetic embedding distribution (see the module docstring); draws are reproducible per seed."""

    def __init__(self, clusters: int, d: int = D, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.d = d
        mean = rng.normal(size=d)
        mean /= np.linalg.norm(mean)
        centres = rng.normal(size=(clusters, d))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        self.centres = (0.55 * mean[None, :] + 0.8 * centres).astype(np.float32)
        weights = 1.0 / np.arange(1, clusters + 1) ** 0.7
        self.weights = weights / weights.sum()
        spectrum = 1.0 / np.arange(1, d + 1)
        self.scale = (np.sqrt(spectrum / spectrum.sum()) * 0.75).astype(np.float32)  # total noise variance 0.56
        basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
        self.basis = basis.astype(np.float32)

    def draw(self, n: int, seed: int, chunk: int = 50_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.d), dtype=np.float32)
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            which = rng.choice(len(self.weights), size=m, p=self.weights)
            noise = (rng.standard_normal((m, self.d), dtype=np.float32) * self.scale) @ self.basis.T
            x = self.centres[which] + noise
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[s : s + m] = x
        return out


def latencies(index, xq: np.ndarray, n_single: int, rerank_from: np.ndarray | None = None,
              rerank: int = 1) -> dict[str, float]:
    """Single-query p50/p99 (ms) over ``n_single`` queries, and one batched search of all ``xq``.

    With ``rerank`` > 1, ``rerank * K`` candidates are fetched and re-scored exactly against ``rerank_from`` (the
    stored embeddings) with simx's own :func:`simx.index.search.exact_rescore`, as a simx index of a quantised
    type does; the time of the re-scoring is included."""
    from simx.index.search import exact_rescore

    def run(q):
        if rerank <= 1:
            return index.search(q, K)[1]
        _, cand = index.search(q, K * rerank)
        return exact_rescore(q, cand, rerank_from, "cosine")[1][:, :K]

    single = []
    for i in range(n_single):
        t0 = time.perf_counter()
        run(xq[i : i + 1])
        single.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    ids = run(xq)
    batch_s = time.perf_counter() - t0
    return {"single_p50_ms": float(np.percentile(single, 50)), "single_p99_ms": float(np.percentile(single, 99)),
            "single_n": n_single, "batch_total_ms": batch_s * 1000, "batch_per_query_ms": batch_s * 1000 / len(xq),
            "batch_qps": len(xq) / batch_s, "_ids": ids}


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(t)) / K for a, t in zip(ids, truth)]))


def add_with_budget(index, xb: np.ndarray, budget_s: float, spent_s: float, chunk: int) -> dict[str, Any]:
    """Add ``xb`` in chunks; stop once the projected total (spent + remaining at the rate so far) exceeds the
    budget. The projection is optimistic for HNSW, whose insertions slow down as the graph grows."""
    t0 = time.perf_counter()
    done = 0
    while done < len(xb):
        index.add(xb[done : done + chunk])
        done = min(len(xb), done + chunk)
        elapsed = time.perf_counter() - t0
        rate = done / elapsed
        projected = spent_s + elapsed + (len(xb) - done) / rate
        if done < len(xb) and projected > budget_s:
            return {"complete": False, "added": done, "add_s": elapsed, "add_rate_per_s": rate,
                    "projected_build_s": projected}
    elapsed = time.perf_counter() - t0
    return {"complete": True, "added": done, "add_s": elapsed, "add_rate_per_s": done / elapsed}


def bench_faiss_size(n: int, args: argparse.Namespace, mix: Mixture) -> list[dict[str, Any]]:
    import faiss

    log(f"FAISS benchmark at {n} vectors: drawing data")
    t0 = time.perf_counter()
    xb = mix.draw(n, seed=1)
    xq = mix.draw(args.queries, seed=2)
    log(f"drew {n} x {D} in {time.perf_counter() - t0:.1f} s")
    rows: list[dict[str, Any]] = []
    n_single_flat = max(10, min(args.single, int(2e7 / n)))

    # Flat: exact search, and the ground truth of everything else.
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(D)
    flat.add(xb)
    build_s = time.perf_counter() - t0
    lat = latencies(flat, xq, n_single_flat)
    truth = lat.pop("_ids")
    sims = xq @ xb[:20000].T
    realism = {"mean_cos_random_pair": float(sims.mean()), "mean_cos_top1": float(np.sort(sims, 1)[:, -1].mean())}
    rows.append({"n": n, "index": "Flat", "params": "", "complete": True, "build_s": build_s, "train_s": 0.0,
                 "bytes": int(flat.ntotal) * D * 4, "recall@10": 1.0, **lat, **realism})
    log(f"Flat: {rows[-1]}")
    del flat
    gc.collect()

    # HNSW32 (efConstruction 40, FAISS's default), efSearch sweep.
    if args.skip_hnsw:
        return rows + [r for f in (args.ivf or default_ivf(n)) for r in bench_ivf(f, xb, xq, truth, args)]
    hnsw = faiss.IndexHNSWFlat(D, 32, faiss.METRIC_INNER_PRODUCT)
    add = add_with_budget(hnsw, xb, args.build_budget, 0.0, chunk=max(5000, n // 40))
    base = {"n": n, "index": "HNSW32", "complete": add["complete"], "build_s": add["add_s"], "train_s": 0.0,
            "add_rate_per_s": add["add_rate_per_s"]}
    if add["complete"]:
        h = hnsw.hnsw
        mem = int(hnsw.ntotal) * D * 4 + h.neighbors.size() * 4 + h.offsets.size() * 8 + h.levels.size() * 4
        for ef in args.ef_search:
            hnsw.hnsw.efSearch = ef
            lat = latencies(hnsw, xq, args.single)
            rows.append({**base, "params": f"efSearch={ef}", "bytes": mem,
                         "recall@10": recall(lat.pop("_ids"), truth), **lat})
            log(f"HNSW32 efSearch {ef}: {rows[-1]}")
    else:
        rows.append({**base, "params": "", "added": add["added"], "projected_build_s": add["projected_build_s"]})
        log(f"HNSW32 stopped: {rows[-1]}")
    del hnsw
    gc.collect()

    # IVF-PQ: k-means on 39 vectors per list (FAISS's minimum), then add; nprobe sweep. Before training, one
    # coarse k-means iteration and one PQ sub-quantiser are timed to project the whole build against the budget.
    for factory in args.ivf or default_ivf(n):
        rows += bench_ivf(factory, xb, xq, truth, args)
        gc.collect()
    del xb
    gc.collect()
    return rows


def default_ivf(n: int) -> list[str]:
    """IVF-PQ configurations per size: ~4 sqrt(n) lists, and at 1M also the 4096 lists FAISS's guidelines give."""
    return ["IVF1024,PQ64"] if n <= 200_000 else ["IVF4096,PQ64", "IVF1024,PQ64"]


def bench_ivf(factory: str, xb: np.ndarray, xq: np.ndarray, truth: np.ndarray, args: argparse.Namespace):
    import faiss

    n = len(xb)
    rows: list[dict[str, Any]] = []
    ivf = faiss.index_factory(D, factory, faiss.METRIC_INNER_PRODUCT)
    ivf_part = faiss.extract_index_ivf(ivf)
    faiss.downcast_index(ivf).do_polysemous_training = False  # as simx builds do (simx.index.build)
    pq = faiss.downcast_index(ivf).pq
    nlist, train_n = ivf_part.nlist, min(n, 39 * ivf_part.nlist)
    xt = xb[:train_n]
    t0 = time.perf_counter()
    km = faiss.Kmeans(D, nlist, niter=1, seed=1)
    km.train(xt)
    t_iter = time.perf_counter() - t0
    sub = np.ascontiguousarray(xt[: min(train_n, 256 * pq.ksub), : pq.dsub])
    t0 = time.perf_counter()
    faiss.Kmeans(pq.dsub, pq.ksub, niter=pq.cp.niter, seed=1).train(sub)
    t_pq = (time.perf_counter() - t0) * pq.M
    projected = t_iter * ivf_part.cp.niter + t_pq + t_iter * n / train_n  # coarse + PQ + assigning all of xb
    base = {"n": n, "index": factory, "train_n": train_n, "pilot_s": t_iter + t_pq / pq.M}
    log(f"{factory}: projected build {projected:.0f} s (k-means iteration {t_iter:.1f} s, PQ {t_pq:.0f} s)")
    if projected > args.build_budget:
        rows.append({**base, "complete": False, "added": 0, "projected_build_s": projected,
                     "add_rate_per_s": train_n / t_iter, "rate_note": "vectors assigned per second"})
        log(f"{factory} skipped: {rows[-1]}")
        return rows
    t0 = time.perf_counter()
    ivf.train(xt)
    train_s = time.perf_counter() - t0
    log(f"{factory} trained on {train_n} in {train_s:.1f} s")
    add = add_with_budget(ivf, xb, args.build_budget, train_s, chunk=max(10000, n // 20))
    base.update(complete=add["complete"], build_s=train_s + add["add_s"], train_s=train_s,
                add_rate_per_s=add["add_rate_per_s"])
    if not add["complete"]:
        rows.append({**base, "added": add["added"], "projected_build_s": add["projected_build_s"]})
        log(f"{factory} stopped: {rows[-1]}")
        return rows
    mem = len(faiss.serialize_index(ivf))
    for rerank in args.rerank:
        for nprobe in args.nprobe:
            ivf_part.nprobe = nprobe
            lat = latencies(ivf, xq, args.single, rerank_from=xb, rerank=rerank)
            params = f"nprobe={nprobe}" + (f", exact re-rank of {rerank}k" if rerank > 1 else "")
            rows.append({**base, "params": params, "rerank": rerank, "bytes": mem,
                         "recall@10": recall(lat.pop("_ids"), truth), **lat})
            log(f"{factory} {params}: {rows[-1]}")
    return rows


# ============================================================================================ report


# ============================================================================================ (c) compressed


def compressed_configs(n: int, d: int) -> list[str]:
    """The issue-16 candidates at ``n`` vectors: what ``--factory auto`` picks (IVF with an HNSW coarse quantiser
    and PQ fast-scan codes), IVF-HNSW with SQ8 codes, PCA to 256 dims + IVF-HNSW SQ8, OPQ to 256 dims + PQ
    fast-scan, and HNSW32 over SQ8 codes; all re-scored exactly by simx."""
    from simx.index.auto import auto_factory, ivf_lists

    nlist = ivf_lists(n)
    return [auto_factory(n, d)[0], f"IVF{nlist}_HNSW32,SQ8", f"PCAR256,IVF{nlist}_HNSW32,SQ8",
            f"OPQ64_256,IVF{nlist}_HNSW32,PQ64x4fs", "HNSW32_SQ8"]


def bench_compressed(n: int, args: argparse.Namespace, mix: "Mixture") -> list[dict[str, Any]]:
    """Build each candidate with simx's own :func:`simx.index.build.make_faiss_index` (training sample, k-means
    settings and default search parameters as ``simx index build`` uses them), then sweep nprobe / efSearch with
    simx's exact re-scoring of 16 x k candidates (and once without it, for reference)."""
    import faiss

    from simx.index.build import make_faiss_index

    log(f"compressed indexes at {n} vectors: drawing data")
    xb = mix.draw(n, seed=1)
    xq = mix.draw(args.queries, seed=2)
    flat = faiss.IndexFlatIP(D)
    flat.add(xb)
    truth = flat.search(xq, K)[1]
    del flat
    gc.collect()
    rows: list[dict[str, Any]] = []
    for factory in args.configs or compressed_configs(n, D):
        if n > args.hnsw_max and factory.startswith("HNSW"):
            rows.append({"n": n, "index": factory, "complete": False, "params": "",
                         "why": f"not built above {args.hnsw_max:,} vectors: insertion rate measured at the "
                                "smaller size projects past the build budget"})
            continue
        log(f"building {factory} on {n}")
        t0 = time.perf_counter()
        try:
            index, info = make_faiss_index(xb, factory, "cosine")
        except Exception as exc:  # noqa: BLE001 - report and go on with the next candidate
            rows.append({"n": n, "index": factory, "complete": False, "params": "", "why": str(exc)[:200]})
            log(f"{factory} failed: {exc}")
            continue
        build_s = time.perf_counter() - t0
        mem = len(faiss.serialize_index(index))
        base = {"n": n, "index": info["factory_used"], "complete": True, "build_s": build_s,
                "train_s": info["train_s"], "add_s": info["add_s"], "bytes": mem, "default": info["search_params"]}
        ps = faiss.ParameterSpace()
        used = info["factory_used"]
        if "IVF" in used:
            sweep = [f"nprobe={p},quantizer_efSearch={max(64, 2 * p)}" if "_HNSW" in used else f"nprobe={p}"
                     for p in args.sweep_nprobe]
        elif "HNSW" in used:
            sweep = [f"efSearch={e}" for e in args.ef_search]
        else:
            sweep = [""]
        for j, params in enumerate(sweep):
            if params:
                ps.set_index_parameters(index, params)
            for rerank in ((1, 16) if j == 0 else (16,)):
                lat = latencies(index, xq, args.single, rerank_from=xb, rerank=rerank)
                rows.append({**base, "params": params, "rerank": rerank,
                             "recall@10": recall(lat.pop("_ids"), truth), **lat})
                log(f"{factory} {params} rerank {rerank}: recall {rows[-1]['recall@10']:.3f} p50 "
                    f"{rows[-1]['single_p50_ms']:.2f} p99 {rows[-1]['single_p99_ms']:.2f} ms, build {build_s:.0f} s")
        del index
        gc.collect()
    return rows


def cached_data(n: int, args: argparse.Namespace, mix: "Mixture") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xb, xq, truth)`` at ``n`` vectors; with ``--cache DIR`` they are drawn once and re-read from
    ``DIR/n{n}-c{clusters}/`` (xb memory-mapped, as simx reads its stored embeddings)."""
    import faiss

    folder = Path(args.cache) / f"n{n}-c{args.clusters}-q{args.queries}" if args.cache else None
    if folder is not None and (folder / "truth.npy").exists():
        log(f"reading cached data from {folder}")
        return (np.load(folder / "xb.npy", mmap_mode="r"), np.load(folder / "xq.npy"), np.load(folder / "truth.npy"))
    log(f"drawing {n} vectors")
    xb = mix.draw(n, seed=1)
    xq = mix.draw(args.queries, seed=2)
    flat = faiss.IndexFlatIP(D)
    flat.add(xb)
    truth = flat.search(xq, K)[1]
    del flat
    gc.collect()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "xb.npy", xb)
        np.save(folder / "xq.npy", xq)
        np.save(folder / "truth.npy", truth)  # last: its presence says the folder is complete
        del xb
        gc.collect()
        xb = np.load(folder / "xb.npy", mmap_mode="r")
    return xb, xq, truth


def cached_index(factory: str, xb: np.ndarray, args: argparse.Namespace):
    """Build ``factory`` with simx's own ``make_faiss_index``, or read it (and its build record) from the cache."""
    import faiss

    from simx.index.build import make_faiss_index

    folder = Path(args.cache) / f"n{len(xb)}-c{args.clusters}-q{args.queries}" if args.cache else None
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", factory)
    if folder is not None and (folder / f"{stem}.json").exists():
        log(f"reading cached index {factory}")
        info = json.loads((folder / f"{stem}.json").read_text())
        return faiss.read_index(str(folder / f"{stem}.faiss")), info
    t0 = time.perf_counter()
    donor = args.coarse_from if args.coarse_from and "IVF" in factory and factory != args.coarse_from else None
    if donor:
        index, info = build_on_trained_coarse(factory, cached_index(donor, xb, args), xb)
    else:
        index, info = make_faiss_index(xb, factory, "cosine")
    info = {**info, "build_s": time.perf_counter() - t0, "load_at_build_end": round(os.getloadavg()[0], 2)}
    if folder is not None:
        faiss.write_index(index, str(folder / f"{stem}.faiss"))
        (folder / f"{stem}.json").write_text(json.dumps(info, default=float))
    return index, info


def build_on_trained_coarse(factory: str, donor: tuple[Any, dict[str, Any]], xb: np.ndarray):
    """``factory`` built with the coarse quantiser (centroids and HNSW graph) of an already built index of the
    same ``IVF{nlist}_HNSW32`` prefix, so that only the codes (and any refine stage) are trained and added: the
    coarse k-means, the slow part of a build, is shared. Otherwise as simx's ``make_faiss_index``; the returned
    ``train_s`` adds the donor's training time (an upper bound on its coarse k-means)."""
    import faiss

    from simx.index.build import ADD_CHUNK, TRAIN_MAX, _tune_training, default_search_params, training_sample

    donor_index, donor_info = donor
    index = faiss.index_factory(D, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    quantizer = faiss.clone_index(faiss.extract_index_ivf(donor_index).quantizer)
    quantizer.this.disown()
    if hasattr(faiss.downcast_index(quantizer), "hnsw"):  # adding assigns with FAISS's default, as a fresh build does
        faiss.downcast_index(quantizer).hnsw.efSearch = 16
    ivf.quantizer = quantizer
    ivf.own_fields = True
    _tune_training(index, TRAIN_MAX)
    t0 = time.perf_counter()
    index.train(training_sample(xb))  # FAISS skips the coarse k-means: the quantiser already holds nlist centroids
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, len(xb), ADD_CHUNK):
        index.add(np.ascontiguousarray(xb[start : start + ADD_CHUNK], dtype=np.float32))
    add_s = time.perf_counter() - t0
    params = default_search_params(factory)
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    return index, {"factory": factory, "factory_used": factory, "search_params": params, "rerank": 16,
                   "train_s": train_s + donor_info["train_s"], "add_s": add_s, "own_train_s": train_s,
                   "coarse_from": donor_info["factory_used"]}


def timed_search(index, xq: np.ndarray, xb: np.ndarray, rerank: int, n_single: int) -> dict[str, Any]:
    """Single queries through simx's path (FAISS ``rerank * K`` candidates, then exact re-scoring from ``xb``),
    with the time split into the coarse quantiser's search, the rest of FAISS's search and the re-scoring."""
    import faiss

    from simx.index.search import exact_rescore

    try:
        quantizer = faiss.extract_index_ivf(index).quantizer
        nprobe = faiss.extract_index_ivf(index).nprobe
    except Exception:  # noqa: BLE001 - not an IVF index
        quantizer, nprobe = None, 0
    total, cpu, coarse, rescore, ids = [], [], [], [], []
    for i in range(len(xq)):
        q = xq[i : i + 1]
        if i < n_single and quantizer is not None:
            t0 = time.perf_counter()
            quantizer.search(q, nprobe)
            coarse.append((time.perf_counter() - t0) * 1000)
        c0 = time.thread_time()
        t0 = time.perf_counter()
        _, cand = index.search(q, K * rerank)
        t1 = time.perf_counter()
        best = exact_rescore(q, cand, xb, "cosine")[1][:, :K] if rerank > 1 else cand[:, :K]
        t2 = time.perf_counter()
        c2 = time.thread_time()
        ids.append(best[0])
        if i < n_single:
            total.append((t2 - t0) * 1000)
            rescore.append((t2 - t1) * 1000)
            cpu.append((c2 - c0) * 1000)
    pct = lambda v, p: float(np.percentile(v, p)) if v else float("nan")  # noqa: E731
    return {"single_p50_ms": pct(total, 50), "single_p99_ms": pct(total, 99), "single_n": len(total),
            "cpu_p50_ms": pct(cpu, 50), "cpu_p99_ms": pct(cpu, 99), "coarse_p50_ms": pct(coarse, 50),
            "rescore_p50_ms": pct(rescore, 50), "_ids": np.array(ids)}


def bench_sweep(n: int, args: argparse.Namespace, mix: "Mixture") -> list[dict[str, Any]]:
    """(d) The 1M latency sweep of issue 16: per factory, every combination of nprobe, quantizer efSearch,
    candidates re-scored and FAISS threads, single queries only (the 1000 queries all run one at a time for
    recall; the first ``--single`` are timed). One line per combination, with the load average beside it."""
    import faiss

    xb, xq, truth = cached_data(n, args, mix)
    rows: list[dict[str, Any]] = []
    for factory in args.configs or compressed_configs(n, D)[:1]:
        load0 = round(os.getloadavg()[0], 2)
        index, info = cached_index(factory, xb, args)
        mem = len(faiss.serialize_index(index))
        is_ivf = "IVF" in info["factory_used"]
        for threads, implem in [(t, m) for t in args.threads for m in args.implem]:
            faiss.omp_set_num_threads(threads)
            if is_ivf and hasattr(faiss.downcast_index(faiss.extract_index_ivf(index)), "implem"):
                faiss.downcast_index(faiss.extract_index_ivf(index)).implem = implem
            for nprobe in (args.sweep_nprobe if is_ivf else [0]):
                for qef in (args.quantizer_ef or [None]) if "_HNSW" in info["factory_used"] else [None]:
                    params = f"nprobe={nprobe}" if is_ivf else ""
                    if qef is not None or "_HNSW" in info["factory_used"]:
                        params += f",quantizer_efSearch={qef or max(64, 2 * nprobe)}"
                    if params:
                        faiss.ParameterSpace().set_index_parameters(index, params)
                    for kf, rerank in [(f, r) for f in (args.k_factor if "Refine" in factory else [None])
                                       for r in args.rescore]:
                        if kf is not None:
                            faiss.ParameterSpace().set_index_parameters(index, f"k_factor_rf={kf}")
                        load = round(os.getloadavg()[0], 2)
                        res = timed_search(index, xq, xb, rerank, args.single)
                        row = {"n": n, "index": info["factory_used"], "complete": True, "params": params,
                               "rerank": rerank, "threads": threads, "implem": implem, "k_factor_rf": kf,
                               "build_s": info["build_s"],
                               "train_s": info["train_s"], "add_s": info["add_s"], "bytes": mem,
                               "recall@10": recall(res.pop("_ids"), truth), "load": load, **res}
                        rows.append(row)
                        log(f"{row['index']} {params} k_factor_rf {kf} rescore {rerank}k threads {threads}: recall "
                            f"{row['recall@10']:.3f} p50 {row['single_p50_ms']:.2f} p99 {row['single_p99_ms']:.2f} "
                            f"cpu p50 {row['cpu_p50_ms']:.2f} p99 {row['cpu_p99_ms']:.2f} "
                            f"ms (coarse {row['coarse_p50_ms']:.2f}, re-score {row['rescore_p50_ms']:.2f}) "
                            f"implem {implem} "
                            f"build {info['build_s']:.0f} s")
        del index
        gc.collect()
        log(f"{factory} done (load {load0} -> {os.getloadavg()[0]:.2f})")
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return rows


def sweep_markdown(c: dict[str, Any]) -> str:
    out = ["| n | index | search params | exact | threads | implem | build s (train / add) | index memory "
           "| recall@10 | CPU p50 / p99 ms | wall p50 / p99 ms | coarse / re-score p50 ms | load |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in c["rows"]:
        kf = f", k_factor_rf={r['k_factor_rf']}" if r.get("k_factor_rf") else ""
        out.append(f"| {r['n']:,} | {r['index']} | {r['params']}{kf} | {r['rerank'] * K} | {r['threads']} | "
                   f"{r['implem']} | {r['build_s']:.0f} ({r['train_s']:.0f} / {r['add_s']:.0f}) | "
                   f"{fmt_bytes(r['bytes'])} | {r['recall@10']:.3f} | {r['cpu_p50_ms']:.2f} / {r['cpu_p99_ms']:.2f} | "
                   f"{r['single_p50_ms']:.2f} / {r['single_p99_ms']:.2f} | "
                   f"{r['coarse_p50_ms']:.2f} / {r['rescore_p50_ms']:.2f} | {r['load']} |")
    out.append(f"\nLoad average: {c['load_start']} at the start, {c['load_end']} at the end (2 cores, shared).")
    return "\n".join(out)


def compressed_markdown(c: dict[str, Any]) -> str:
    out = ["### (c) Compressed indexes (issue 16), re-scored exactly by simx\n",
           "| n | index | search params | re-score | build s (train / add) | index memory | recall@10 "
           "| single p50 / p99 ms | batched ms/query |", "|---|---|---|---|---|---|---|---|---|"]
    for r in c["rows"]:
        if not r["complete"]:
            out.append(f"| {r['n']:,} | {r['index']} | not built: {r['why']} | | | | | | |")
            continue
        out.append(f"| {r['n']:,} | {r['index']} | {r['params']} | {'16k' if r['rerank'] > 1 else 'none'} | "
                   f"{r['build_s']:.0f} ({r['train_s']:.0f} / {r['add_s']:.0f}) | {fmt_bytes(r['bytes'])} | "
                   f"{r['recall@10']:.3f} | {r['single_p50_ms']:.2f} / {r['single_p99_ms']:.2f} | "
                   f"{r['batch_per_query_ms']:.3f} |")
    out.append(f"\nLoad average: {c['load_start']} at the start, {c['load_end']} at the end (2 cores, shared).")
    return "\n".join(out)


def fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return str(b)


def markdown(results: dict[str, Any]) -> str:
    out = []
    m = results["machine"]
    out.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; torch {m['torch']} "
               f"({m['torch_threads']} threads), faiss {m['faiss']} ({m['faiss_threads']} threads); load average "
               f"{m['load_at_start']} at start, {results.get('load_at_end', '?')} at end.\n")
    e = results.get("embedding")
    if e:
        out.append(f"### (a) Embedding throughput, default model ({e['source']}, {e['images']} images, "
                   f"{e['input_px']} px input)\n")
        out.append("| bare forward | batch | images/s (median of repeats) |\n|---|---|---|")
        for r in e["bare"]:
            out.append(f"| {'channels-last' if r['channels_last'] else 'contiguous'} | {r['batch']} | "
                       f"{r['images_per_s']:.1f} |")
        out.append("\n| build path (DataLoader) | batch | images/s (median) | bare forward, paired runs (median) "
                   "| ratio median (min-max) |")
        out.append("|---|---|---|---|---|")
        for r in e["build"]:
            out.append(f"| workers={r['workers']} | {r['batch']} | {r['images_per_s']:.1f} | "
                       f"{r['bare_images_per_s']:.1f} | {r['ratio_median']:.2f} ({r['ratio_min']:.2f}-"
                       f"{r['ratio_max']:.2f}) |")
        ee = e["end_to_end"]
        out.append(f"\nEnd to end `simx index build` (defaults: batch {ee['batch']}, workers {ee['workers']}): "
                   f"{ee['images']} images in {ee['seconds']:.1f} s = {ee['images_per_s']:.1f} images/s "
                   f"(embedding {ee['embed_s']:.1f} s, the rest is model loading, fingerprints, FAISS, writing).\n")
    f = results.get("faiss")
    if f:
        out.append("### (b) FAISS on synthetic 1280-d embeddings (1000 queries, k = 10)\n")
        out.append("| n | index | params | build s (train s) | memory | recall@10 | single p50 ms | single p99 ms "
                   "| batched ms/query | batched QPS |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in f["rows"]:
            if not r["complete"]:
                why = (f"pilot: one k-means iteration over {r['train_n']:,} vectors = {r['add_rate_per_s']:.0f} "
                       "vectors/s" if r.get("rate_note") else
                       f"build rate {r['add_rate_per_s']:.0f} vectors/s over the first {r['added']:,}")
                out.append(f"| {r['n']:,} | {r['index']} | not built: projected {r['projected_build_s'] / 60:.0f} "
                           f"min > {f['budget_s'] / 60:.0f} min budget | {why} | | | | | | |")
                continue
            out.append(f"| {r['n']:,} | {r['index']} | {r['params']} | {r['build_s']:.1f} ({r['train_s']:.1f}) | "
                       f"{fmt_bytes(r['bytes'])} | {r['recall@10']:.3f} | {r['single_p50_ms']:.2f} | "
                       f"{r['single_p99_ms']:.2f} | {r['batch_per_query_ms']:.3f} | {r['batch_qps']:.0f} |")
        real = [r for r in f["rows"] if r["index"] == "Flat"]
        if real:
            out.append(f"\nData realism: mean cosine of a random pair {real[0]['mean_cos_random_pair']:.2f}, mean "
                       f"top-1 neighbour cosine (among 20k) {real[0]['mean_cos_top1']:.2f}.")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="FAISS gallery sizes")
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run (minutes)")
    p.add_argument("--gallery", default=None, help="image folder for the embedding benchmark")
    p.add_argument("--images", type=int, default=192, help="images for the embedding benchmark")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the embedding sweep (best kept)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--single", type=int, default=200, help="single queries timed for p50/p99")
    p.add_argument("--clusters", type=int, default=3000)
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 128])
    p.add_argument("--ivf", nargs="+", default=None,
                   help="IVF-PQ factories to run (default: IVF1024,PQ64 up to 200k vectors; IVF4096,PQ64 and "
                        "IVF1024,PQ64 above)")
    p.add_argument("--build-budget", type=float, default=900.0, help="seconds allowed to build one index")
    p.add_argument("--skip-embedding", action="store_true")
    p.add_argument("--skip-faiss", action="store_true")
    p.add_argument("--skip-hnsw", action="store_true", help="FAISS part: only Flat (the ground truth) and IVF-PQ")
    p.add_argument("--rerank", type=int, nargs="+", default=[1, 4, 16],
                   help="IVF-PQ candidates per neighbour re-scored exactly (1 = the PQ ranking as is)")
    p.add_argument("--compressed", type=int, nargs="+", default=None, metavar="N",
                   help="(c) only: the issue-16 compressed candidates at these sizes (e.g. 100000 1000000)")
    p.add_argument("--configs", nargs="+", default=None, help="(c): factories to run instead of the candidates")
    p.add_argument("--sweep-nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--sweep", type=int, default=None, metavar="N",
                   help="(d) only: the single-query latency sweep at N vectors over --configs (default: the auto "
                        "factory), --sweep-nprobe, --quantizer-ef, --rescore and --threads")
    p.add_argument("--quantizer-ef", type=int, nargs="+", default=None,
                   help="(d): HNSW coarse quantiser efSearch values (default: max(64, 2 nprobe))")
    p.add_argument("--rescore", type=int, nargs="+", default=[16],
                   help="(d): candidates per wanted neighbour re-scored exactly (16 = 160 for k = 10)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="(d): FAISS OpenMP threads")
    p.add_argument("--k-factor", type=int, nargs="+", default=[8],
                   help="(d): candidates per returned one scored by a Refine(...) stage of the factory")
    p.add_argument("--coarse-from", default=None, metavar="FACTORY",
                   help="(d): build the --configs on the trained coarse quantiser of this cached factory")
    p.add_argument("--implem", type=int, nargs="+", default=[0],
                   help="(d): FAISS fast-scan search implementation (0 auto, 10/12 heap, 11/13 reservoir)")
    p.add_argument("--cache", default=None,
                   help="(d): folder keeping the drawn vectors, ground truth and built indexes between runs")
    p.add_argument("--hnsw-max", type=int, default=200_000, help="(c): largest size HNSW32_SQ8 is built at")
    p.add_argument("--json", dest="out", default=os.path.join(tempfile.gettempdir(), "simx-bench", "bench_index.json"),
                   help="where to write all measurements as JSON")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.images, args.queries, args.single = [20_000], 48, 200, 50
        args.batch_sizes, args.workers, args.repeats, args.clusters = [16, 32], [0, 1], 1, 500
        args.ivf = args.ivf or ["IVF256,PQ64"]

    results: dict[str, Any] = {"machine": machine(), "args": {k: v for k, v in vars(args).items()}}
    if args.sweep:
        rows = bench_sweep(args.sweep, args, Mixture(args.clusters))
        results["sweep"] = {"rows": rows, "load_start": results["machine"]["load_at_start"],
                            "load_end": round(os.getloadavg()[0], 2)}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=float))
        print(sweep_markdown(results["sweep"]))
        print(f"\n(results written to {args.out})")
        return
    if args.compressed:
        rows = []
        mix = Mixture(args.clusters)
        for n in args.compressed:
            rows += bench_compressed(n, args, mix)
            results["compressed"] = {"rows": rows, "load_start": results["machine"]["load_at_start"],
                                     "load_end": round(os.getloadavg()[0], 2)}
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2, default=float))  # after each size: a long run keeps its rows
        print(compressed_markdown(results["compressed"]))
        print(f"\n(results written to {args.out})")
        return
    if not args.skip_embedding:
        results["embedding"] = bench_embedding(args)
    if not args.skip_faiss:
        mix = Mixture(args.clusters)
        rows = []
        for n in args.sizes:
            rows += bench_faiss_size(n, args, mix)
        results["faiss"] = {"rows": rows, "budget_s": args.build_budget, "clusters": args.clusters, "dim": D}
    results["load_at_end"] = round(os.getloadavg()[0], 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print(markdown(results))
    print(f"\n(results written to {out})")


if __name__ == "__main__":
    main()

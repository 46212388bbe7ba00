"""Benchmarks of issue 16 at scale: ``simx duplicates`` on 1M vectors, and the dashboard's pages on 200k.

``duplicates``: 1M synthetic 1280-d vectors drawn from ``benchmarks/bench_index.py``'s mixture (the same clustered,
power-law-noise distribution as the index benchmarks), written memory-mapped to disk as an index's
``embeddings.npy`` is, with ``--planted`` near-duplicate pairs (a drawn vector and a copy with small noise, cosine
0.96-0.995) at seeded positions. :func:`simx.index.duplicates.find_duplicates` runs on an index object carrying
those memory-mapped embeddings (what it reads; the index's own FAISS search structure is not used by it). Reported:
wall time, split into the range-search structure (train + add) and the range searches, peak resident
memory of the process, pairs found, planted pairs found (recall) and false pairs (any other pair reported).
``--queries N`` range-searches only the first N vectors against all 1M and extrapolates the search time to 1M
(the structure is built in full), to keep one locked run short; ``--nprobe`` may list several values.

``pages``: the dashboard (``app.py``, Streamlit's AppTest, server side) on an index of 200k synthetic 12-d vectors
with 40 labels and no image files, made as ``tests/app/test_scale_pages.py`` makes it. Each page is opened once
(first render: its projection, evaluation, tables are computed) and rerun (what a click costs once cached);
wall seconds of each script run and the bytes of the elements it sends to the browser.

    flock /work/helpers/bench.lock python benchmarks/bench_scale.py duplicates --n 1000000 --queries 100000
    flock /work/helpers/bench.lock python benchmarks/bench_scale.py pages
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ duplicates


class VectorIndex:
    """What :func:`find_duplicates` reads of an index: memory-mapped embeddings, ids, metric, name, meta."""

    def __init__(self, embeddings: np.ndarray, metric: str = "cosine", name: str = "synthetic"):
        self.embeddings = embeddings
        self.ids = [f"v{i:07d}" for i in range(len(embeddings))]
        self.metric = metric
        self.name = name
        self.meta = {"model": {"spec": "synthetic", "dim": embeddings.shape[1]}}

    def __len__(self) -> int:
        return len(self.ids)


def make_vectors(path: Path, n: int, planted: int, seed: int = 0) -> list[tuple[int, int]]:
    """Write ``n`` mixture vectors to ``path`` (.npy, chunk by chunk) with ``planted`` near-duplicate pairs."""
    from bench_index import Mixture

    mix = Mixture(3000, seed=seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, mix.d))
    chunk = 50_000
    for i, s in enumerate(range(0, n, chunk)):
        out[s : s + chunk] = mix.draw(min(chunk, n - s), seed=seed + 1 + i)
    rng = np.random.default_rng(seed + 99)
    where = rng.choice(n, size=2 * planted, replace=False)
    pairs = []
    for a, b in zip(where[:planted], where[planted:]):
        a, b = int(min(a, b)), int(max(a, b))
        noise = rng.normal(size=mix.d).astype(np.float32)
        noise /= np.linalg.norm(noise)
        eps = rng.uniform(0.1, 0.28)  # cosine 1/sqrt(1+eps^2): 0.962-0.995
        v = out[a] + eps * noise
        out[b] = v / np.linalg.norm(v)
        pairs.append((a, b))
    out.flush()
    del out
    return pairs


def bench_duplicates(args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from simx.index import duplicates as dup

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    folder = Path(args.cache or tempfile.mkdtemp(prefix="bench_dups_"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"embeddings_{args.n}_p{args.planted}.npy"
    planted_file = path.with_suffix(".planted.json")
    t0 = time.perf_counter()
    if path.exists() and planted_file.exists():
        planted = [tuple(p) for p in json.loads(planted_file.read_text())]
        log(f"reusing {path}")
    else:
        log(f"drawing {args.n:,} vectors with {args.planted} planted pairs")
        planted = make_vectors(path, args.n, args.planted)
        planted_file.write_text(json.dumps(planted))
    draw_s = time.perf_counter() - t0
    if args.prepare_only:
        return {"draw_s": round(draw_s, 1), "rows": []}
    vectors = np.load(path, mmap_mode="r")
    results = []
    for nprobe in args.nprobe:
        rss0 = peak_rss_mb()
        q = args.queries or args.n
        log(f"duplicates at nprobe {nprobe}: {q:,} of {args.n:,} vectors as queries")
        t_struct = time.perf_counter()
        structure, kind = dup._structure(vectors, args.metric, nprobe)
        struct_s = time.perf_counter() - t_struct
        struct_bytes = faiss.serialize_index(structure).nbytes
        real_structure = dup._structure
        built = (structure, kind)
        dup._structure = lambda *a, **k: built  # built once above, timed on its own
        if q >= args.n:
            t1 = time.perf_counter()
            res = dup.find_duplicates(VectorIndex(vectors, args.metric), threshold=dup.DEFAULT_THRESHOLD,
                                      nprobe=nprobe)
            search_s = time.perf_counter() - t1
            total_s = struct_s + search_s
            found = {(int(a[1:]), int(b[1:])) for a, b in zip(res.pairs["a"], res.pairs["b"])}
            method = res.stats["method"]
        else:  # the first q vectors against all n
            t1 = time.perf_counter()
            qa, ta, _, _ = dup._range_pairs(vectors[:q], vectors, args.metric, dup.DEFAULT_THRESHOLD, False,
                                            nprobe, None)
            search_s = (time.perf_counter() - t1) * args.n / q
            total_s = struct_s + search_s
            found = {(int(min(a, b)), int(max(a, b))) for a, b in zip(qa, ta) if a != b}
            method = dup.METHODS[kind] + " (sampled queries)"
        dup._structure = real_structure
        del structure, built
        expected = {p for p in planted if p[0] < q or q >= args.n}
        hit = len(expected & found)
        row = {"n": args.n, "metric": args.metric, "nprobe": nprobe, "queries": q, "method": method,
               "structure_s": round(struct_s, 1), "search_s": round(search_s, 1),
               "search_extrapolated": q < args.n, "total_s": round(total_s, 1),
               "structure_mb": None if struct_bytes is None else round(struct_bytes / 2**20, 1),
               "peak_rss_mb_before": round(rss0, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
               "planted_in_scope": len(expected), "planted_found": hit, "false_pairs": len(found - set(planted)),
               "load": loadavg()}
        log(json.dumps(row))
        results.append(row)
    return {"draw_s": round(draw_s, 1), "rows": results}


# ------------------------------------------------------------------------------------------------ pages


def make_big_root(base: Path, n: int, labels: int = 40) -> Path:
    """A tiny toy index (for its model record) and ``big``: ``n`` clustered 12-d vectors, no image files."""
    from simx.index import build_index
    from tests.app.conftest import TOY, make_gallery, write_synthetic_index

    root = base / "indexes"
    build_index(make_gallery(base / "gallery", per_label=4), "tiny", model=TOY, root=root, workers=0,
                progress=False)
    write_synthetic_index(root, root / "tiny", n, labels)
    return root


def payload(at) -> int:
    total, stack = 0, [at._tree]
    while stack:
        node = stack.pop()
        proto = getattr(node, "proto", None)
        if proto is not None and hasattr(proto, "ByteSize"):
            total += proto.ByteSize()
        children = getattr(node, "children", {})
        stack.extend(children.values() if isinstance(children, dict) else children)
    return total


PAGES = ["explore", "failures", "embedding_map", "review", "labels", "compare", "duplicates"]


def bench_pages(args: argparse.Namespace) -> dict[str, Any]:
    from streamlit.testing.v1 import AppTest

    base = Path(tempfile.mkdtemp(prefix="bench_pages_"))
    t0 = time.perf_counter()
    root = make_big_root(base, args.n)
    log(f"made the {args.n:,}-vector index in {time.perf_counter() - t0:.1f} s")
    os.environ["SIMX_INDEXES"] = str(root)
    os.environ.pop("SIMX_LABELS_URL", None)
    os.environ["SIMX_USER"] = "bench"
    app = str(HERE.parent / "app.py")
    rows = []
    at = AppTest.from_file(app, default_timeout=1200)
    at.query_params["index"] = "big"
    for page in PAGES:
        times, errors = [], []
        for attempt in ("first", "rerun"):
            if attempt == "first" and page != "explore":
                at.switch_page(f"app_pages/{page}.py")
            t = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t)
            errors += [str(e.value)[:200] for e in at.exception]
        row = {"page": page, "first_s": round(times[0], 2), "rerun_s": round(times[1], 2),
               "payload_kb": round(payload(at) / 1024, 1), "errors": errors, "load": loadavg()}
        log(json.dumps(row))
        rows.append(row)
    return {"n": args.n, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("duplicates")
    d.add_argument("--n", type=int, default=1_000_000)
    d.add_argument("--planted", type=int, default=1000)
    d.add_argument("--queries", type=int, default=None, help="range-search only the first N vectors (extrapolate)")
    d.add_argument("--nprobe", type=int, nargs="+", default=[16])
    d.add_argument("--metric", choices=("cosine", "ip"), default="cosine",
                   help="cosine: the projected IVF structure; ip (the same unit vectors): the 8-bit-code one")
    d.add_argument("--cache", default=None, help="folder keeping the drawn vectors between runs")
    d.add_argument("--prepare-only", action="store_true", help="only draw the vectors into --cache (unlocked, nice)")
    p = sub.add_parser("pages")
    p.add_argument("--n", type=int, default=200_000)
    for s in (d, p):
        s.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    out: dict[str, Any] = {"what": args.what, "cpus": os.cpu_count(), "load_before": loadavg()}
    log(f"load before: {out['load_before']}")
    out.update(bench_duplicates(args) if args.what == "duplicates" else bench_pages(args))
    out["load_after"] = loadavg()
    log(f"load after: {out['load_after']}")
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

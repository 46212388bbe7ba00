"""``--factory auto``: the FAISS index type for a gallery of a given size, chosen from measured figures.

The rule comes from ``benchmarks/bench_index.py`` on 1280-d clustered vectors on a 2-core CPU (the figures and the
load they were measured under are in ``docs/benchmarks.md``, section "Compressed indexes (issue 16)"):

* up to :data:`FLAT_MAX` vectors, ``Flat``: exact, nothing to train, and a single query still scans the whole
  gallery in a few milliseconds;
* above, IVF with an HNSW coarse quantiser (the lists are found by a graph instead of a scan of all centroids;
  ``nlist`` is about ``2 sqrt(n)``, a power of two from 256 to 65536: 2048 lists at 1M, which keeps the coarse
  k-means of a 1M build within minutes on 2 cores) and 4-bit product-quantiser fast-scan codes scanned with SIMD
  lookup tables, in one of two forms, by memory:

  - while one byte per dimension of every vector fits :data:`REFINE_MAX_BYTES` (1M 1280-d vectors),
    ``IVF{nlist}_HNSW32,PQ{d/8}x4fs,Refine(SQ8)``: the fast-scan codes pick candidates, an in-memory 8-bit copy
    re-ranks 16 x as many, and simx re-scores the best ``2 x k`` exactly. At 1M 1280-d vectors on an idle 2-core
    CPU: recall@10 0.956, single-query p50 1.76 ms / p99 2.04 ms, 1.3 GiB, built in 81 s (the issue-16 target;
    docs/benchmarks.md); at 100k 0.966 at 0.83 ms;
  - above it, ``IVF{nlist}_HNSW32,PQ{d/4}x4fs`` (2 bits per dimension, 175 MiB per million 1280-d vectors) with
    the ``16 x k`` best candidates re-scored exactly from the memory-mapped embeddings: at 1M 0.967 at p50
    2.74 ms, so memory stays small where an 8-bit copy would not fit;

  either way every reported score is exact;
* dimensions that the sub-quantisers cannot split fall back to ``IVF{nlist}_HNSW32,PQ{d/4}x4fs`` (d divisible by
  4 but not 8) or ``IVF{nlist}_HNSW32,SQ8`` (one byte per dimension).
"""

from __future__ import annotations

import math

#: Largest gallery kept exact: at 20k 1280-d vectors a single Flat query reads 100 MB, a few ms on one core.
FLAT_MAX = 20_000
#: Largest in-memory 8-bit refine stage (bytes: one per dimension per vector) that ``auto`` builds: 1M 1280-d
#: vectors, whose whole index is then 1.3 GiB, within the 1.5 GB that issue 16 allows at 1M.
REFINE_MAX_BYTES = 1_300_000_000


def ivf_lists(n: int) -> int:
    """About ``2 sqrt(n)`` inverted lists, rounded to a power of two and kept between 256 and 65536."""
    target = 2.0 * math.sqrt(max(1, n))
    return int(min(65536, max(256, 2 ** round(math.log2(target)))))


def auto_factory(n: int, dim: int) -> tuple[str, str]:
    """The FAISS factory string for ``n`` vectors of ``dim`` dimensions, and a short reason."""
    if n <= FLAT_MAX:
        return "Flat", f"{n} vectors <= {FLAT_MAX}: exact search"
    nlist = ivf_lists(n)
    if dim % 8 == 0 and n * dim <= REFINE_MAX_BYTES:
        return (f"IVF{nlist}_HNSW32,PQ{dim // 8}x4fs,Refine(SQ8)",
                f"{n} vectors > {FLAT_MAX}: IVF-HNSW lists, 4-bit PQ fast-scan codes re-ranked by an in-memory "
                f"8-bit copy ({n * dim / 2**30:.2f} GiB), exact re-scoring")
    if dim % 4 == 0:
        return (f"IVF{nlist}_HNSW32,PQ{dim // 4}x4fs",
                f"{n} vectors > {FLAT_MAX}: IVF-HNSW lists, 4-bit PQ fast-scan codes, exact re-scoring")
    return (f"IVF{nlist}_HNSW32,SQ8",
            f"{n} vectors > {FLAT_MAX}, {dim} dims not divisible by 4: IVF-HNSW lists, 8-bit scalar codes")

"""``--factory auto``: the FAISS index type for a gallery of a given size, chosen from measured figures.

The rule comes from ``benchmarks/bench_index.py`` on 1280-d clustered vectors on a 2-core CPU (the figures and the
load they were measured under are in ``docs/benchmarks.md``, section "Compressed indexes (issue 16)"):

* up to :data:`FLAT_MAX` vectors, ``Flat``: exact, nothing to train, and a single query still scans the whole
  gallery in a few milliseconds;
* above, IVF with an HNSW coarse quantiser and 4-bit product-quantiser fast-scan codes,
  ``IVF{nlist}_HNSW32,PQ{d/4}x4fs``: the lists are found by a graph instead of a scan of all centroids, the codes
  are 2 bits per dimension (a 1280-d vector is 320 bytes) and are scanned with SIMD lookup tables, and simx
  re-scores the ``16 x k`` best candidates exactly with the stored embeddings, so every reported score is exact.
  ``nlist`` is about ``2 sqrt(n)`` (a power of two, 256 to 65536: 2048 lists at 1M), which keeps the coarse
  k-means of a 1M build within minutes on 2 cores;
* dimensions that 4-d sub-quantisers cannot split fall back to ``IVF{nlist}_HNSW32,SQ8`` (one byte per dimension).
"""

from __future__ import annotations

import math

#: Largest gallery kept exact: at 20k 1280-d vectors a single Flat query reads 100 MB, a few ms on one core.
FLAT_MAX = 20_000


def ivf_lists(n: int) -> int:
    """About ``2 sqrt(n)`` inverted lists, rounded to a power of two and kept between 256 and 65536."""
    target = 2.0 * math.sqrt(max(1, n))
    return int(min(65536, max(256, 2 ** round(math.log2(target)))))


def auto_factory(n: int, dim: int) -> tuple[str, str]:
    """The FAISS factory string for ``n`` vectors of ``dim`` dimensions, and a short reason."""
    if n <= FLAT_MAX:
        return "Flat", f"{n} vectors <= {FLAT_MAX}: exact search"
    nlist = ivf_lists(n)
    if dim % 4 == 0:
        return (f"IVF{nlist}_HNSW32,PQ{dim // 4}x4fs",
                f"{n} vectors > {FLAT_MAX}: IVF-HNSW lists, 4-bit PQ fast-scan codes, exact re-scoring")
    return (f"IVF{nlist}_HNSW32,SQ8",
            f"{n} vectors > {FLAT_MAX}, {dim} dims not divisible by 4: IVF-HNSW lists, 8-bit scalar codes")

"""``--factory auto`` (issue 16) and exact re-scored scores on every benchmarked compressed index type."""

from __future__ import annotations

import numpy as np
import pytest

from simx.index import build_index, open_index
from simx.index.auto import FLAT_MAX, REFINE_MAX_BYTES, auto_factory, ivf_lists
from simx.index.build import REFINE_K_FACTOR, REFINE_RERANK, default_search_params, make_faiss_index
from simx.index.search import Index

from .conftest import TINY


def test_auto_picks_by_size():
    assert auto_factory(500, 1280)[0] == "Flat"
    assert auto_factory(FLAT_MAX, 1280)[0] == "Flat"
    # an in-memory 8-bit refine stage while one byte per dimension fits REFINE_MAX_BYTES (1M 1280-d vectors)
    assert auto_factory(100_000, 1280)[0] == f"IVF{ivf_lists(100_000)}_HNSW32,PQ160x4fs,Refine(SQ8)"
    assert auto_factory(1_000_000, 1280)[0] == "IVF2048_HNSW32,PQ160x4fs,Refine(SQ8)"
    assert 1_000_000 * 1280 <= REFINE_MAX_BYTES < 1_100_000 * 1280
    # past it, 2-bit codes with exact re-scoring from the memory-mapped embeddings
    assert auto_factory(1_100_000, 1280)[0] == "IVF2048_HNSW32,PQ320x4fs"
    assert auto_factory(100_000, 1284)[0] == f"IVF{ivf_lists(100_000)}_HNSW32,PQ321x4fs"  # 1284 = 4 x 321, not 8 x
    assert auto_factory(1_000_000, 1282)[0] == "IVF2048_HNSW32,SQ8"  # 4-d sub-quantisers cannot split 1282
    assert [ivf_lists(n) for n in (30_000, 100_000, 1_000_000, 10**8)] == [256, 512, 2048, 16384]


def test_auto_factory_in_a_build(gallery, root):
    res = build_index(gallery, "auto", model=TINY, factory="auto", root=root, workers=0, progress=False)
    assert res.meta["faiss"]["factory"] == "auto" and res.meta["faiss"]["factory_used"] == "Flat"
    assert any(n.startswith("factory auto: Flat") for n in res.meta["faiss"]["notes"])


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, d))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("factory,n,min_recall", [
    ("IVF64_HNSW32,PQ16x4fs", 3000, 0.8), ("IVF64_HNSW32,PQ16x4fs,RFlat", 3000, 0.8), ("IVF64,SQ8", 3000, 0.8),
    ("IVF64_HNSW32,PQ8x4fs,Refine(SQ8)", 3000, 0.8),
    # OPQ trains an 8-bit PQ 50 times: kept small, so its 15 lists are probed with nprobe 1
    ("OPQ8_32,IVF16,PQ8x4fs", 600, 0.3),
    ("PCAR32,IVF64,SQ8", 3000, 0.8), ("HNSW32_SQ8", 3000, 0.8), ("auto", 3000, 0.8),
])
def test_compressed_types_return_exact_rescored_scores(factory, n, min_recall):
    xb, xq = _clustered(n, 64, 0), _clustered(20, 64, 1)
    index, info = make_faiss_index(xb, factory, "cosine")
    assert info["rerank"] > 1 or info["factory_used"] == "Flat"
    meta = {"model": {"metric": "cosine", "dim": 64}, "faiss": info}
    idx = Index.__new__(Index)
    idx.meta, idx.embeddings, idx.faiss_index = meta, xb, index
    idx.items = [None] * len(xb)
    pos, scores = idx.search_positions(xq, 10)
    assert (pos >= 0).all()
    exact = np.einsum("qkd,qd->qk", xb[pos], xq)
    np.testing.assert_allclose(scores, exact, atol=1e-5)  # every reported score is the exact cosine
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    truth = np.argsort(-(xq @ xb.T), axis=1)[:, :10]
    recall = np.mean([len(set(p) & set(t)) / 10 for p, t in zip(pos, truth)])
    assert recall >= min_recall, recall


@pytest.mark.parametrize("factory", ["IVF64_HNSW32,PQ8x4fs,Refine(SQ8)", "IVF64,PQ8x4fs,RFlat"])
def test_a_refine_stage_is_set_to_rerank_more_than_it_returns(factory):
    """FAISS's refine stages default to k_factor 1 (a no-op); simx stores and applies its own, and re-scores
    exactly only REFINE_RERANK x k of the stage's best."""
    import faiss

    index, info = make_faiss_index(_clustered(3000, 64, 0), factory, "cosine")
    assert f"k_factor_rf={REFINE_K_FACTOR}" in info["search_params"].split(",")
    assert faiss.downcast_index(index).k_factor == REFINE_K_FACTOR
    assert info["rerank"] == REFINE_RERANK  # the stage ranked by finer codes: simx re-scores only its best
    assert "k_factor_rf" not in make_faiss_index(_clustered(3000, 64, 0), "IVF64,SQ8", "cosine")[1]["search_params"]


def test_default_nprobe_of_ivf_hnsw_follows_the_1m_figures():
    """A quarter of the lists, at most 128 below 2048 lists (100k: recall 0.97 needs 128 of 512) and at most 64
    from 2048 lists (1M: 0.971 at 64 in half the time of 128; docs/benchmarks.md, issue 16)."""
    assert default_search_params("IVF512_HNSW32,PQ320x4fs") == "nprobe=128,quantizer_efSearch=256"
    assert default_search_params("IVF2048_HNSW32,PQ320x4fs") == "nprobe=64,quantizer_efSearch=128"
    assert default_search_params("IVF16384_HNSW32,PQ320x4fs") == "nprobe=64,quantizer_efSearch=128"
    assert default_search_params("IVF64_HNSW32,SQ8") == "nprobe=16,quantizer_efSearch=64"


def test_a_refine_factory_end_to_end(tmp_path, root):
    """Built with ``simx index build``, re-opened: the stored refine parameters are applied and scores are exact."""
    import faiss

    from .conftest import make_gallery

    gal = make_gallery(tmp_path / "gal", {"red": 8, "green": 8, "blue": 8})
    res = build_index(gal, "refined", model=TINY, factory="PQ3x4fs,Refine(SQ8)", root=root, workers=0,
                      progress=False)
    assert res.meta["faiss"]["rerank"] == REFINE_RERANK
    index = open_index("refined", root=root)
    assert faiss.downcast_index(index.faiss_index).k_factor == REFINE_K_FACTOR
    emb = np.asarray(index.embeddings)
    pos, scores = index.search_positions(emb[:5], 6)
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", emb[pos], emb[:5]), atol=1e-5)
    assert (pos[:, 0] == np.arange(5)).all()  # each gallery vector finds itself first

"""Opening and searching an index: hits, self exclusion, query kinds, model checks, broken folders, listing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from simx.errors import ModelMismatchError, SimxError, SimxIndexError
from simx.index import Hit, build_index, list_indexes, open_index
from simx.index.search import exact_rescore
from simx.models import load_model
from simx.models.toy import tiny_linear

from .conftest import TINY, draw, make_gallery


def test_search_id_excludes_itself_and_ranks_by_score(built, root):
    index = open_index("g", root=root)
    hits = index.search_id("red/0.png", k=5)
    assert len(hits) == 5 and all(isinstance(h, Hit) for h in hits)
    assert "red/0.png" not in [h.id for h in hits]
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in scores)
    emb = np.asarray(index.embeddings)
    q = emb[index.position("red/0.png")]
    for h in hits:  # the score is the cosine of the stored vectors
        assert h.score == pytest.approx(float(q @ emb[index.position(h.id)]), abs=1e-5)
        assert h.path == index.item(h.id).path and h.label == h.id.split("/")[0]
    exact = [index.ids[i] for i in np.argsort(-(emb @ q)) if index.ids[i] != "red/0.png"][:5]
    assert [h.id for h in hits] == exact


def test_search_image_finds_the_identical_file_first(built, root, gallery):
    index = open_index("g", root=root)
    for item_id in ("green/2.png", "blue/3.png"):
        hits = index.search_image(gallery / item_id, k=3)
        assert hits[0].id == item_id and hits[0].score == pytest.approx(1.0, abs=1e-5)
    from PIL import Image

    with Image.open(gallery / "red/1.png") as im:  # a PIL image works as well as a path
        assert index.search_image(im.copy(), k=1)[0].id == "red/1.png"
    data = (gallery / "red/2.png").read_bytes()  # and encoded bytes (an upload)
    assert index.search_image(data, k=1)[0].id == "red/2.png"


def test_vector_queries_are_normalised_for_cosine(built, root):
    index = open_index("g", root=root)
    emb = np.asarray(index.embeddings)
    raw = emb[:3] * np.array([[3.0], [0.5], [10.0]], dtype=np.float32)
    by_raw = index.search(raw, k=4)
    by_unit = index.search(emb[:3], k=4)
    by_torch = index.search(torch.from_numpy(raw), k=4)
    assert [[h.id for h in r] for r in by_raw] == [[h.id for h in r] for r in by_unit] == [
        [h.id for h in r] for r in by_torch]
    assert [r[0].id for r in by_raw] == index.ids[:3]  # itself first when not excluded
    one = index.search(emb[0], k=2)  # a single 1-D vector is one query
    assert len(one) == 1 and one[0][0].id == index.ids[0]
    with pytest.raises(SimxError, match=r"shape \(N, 12\)"):
        index.search(np.zeros((2, 7), np.float32), k=3)


def test_exclude_self_ids_per_query(built, root):
    index = open_index("g", root=root)
    emb = np.asarray(index.embeddings)
    res = index.search(emb[:2], k=3, exclude_self_ids=[index.ids[0], None])
    assert index.ids[0] not in [h.id for h in res[0]] and len(res[0]) == 3
    assert res[1][0].id == index.ids[1]
    with pytest.raises(SimxError, match="2 queries"):
        index.search(emb[:2], k=3, exclude_self_ids=[None])


def test_k_larger_than_gallery(built, root):
    index = open_index("g", root=root)
    assert len(index.search_id("red/0.png", k=100)) == 11
    assert len(index.search(np.asarray(index.embeddings[:1]), k=100)[0]) == 12


def test_unknown_id_is_an_error(built, root):
    index = open_index("g", root=root)
    with pytest.raises(SimxError, match="no item with id 'nope'"):
        index.search_id("nope")
    with pytest.raises(SimxError, match="no item with id"):
        index.item("nope")
    assert index.item("blue/1.png").label == "blue"
    assert "blue/1.png" in index and "nope" not in index


def test_l2_scores_are_negative_squared_distances(gallery, root):
    build_index(gallery, "l2", model=TINY, metric="l2", root=root, workers=0, progress=False)
    index = open_index("l2", root=root)
    emb = np.array(index.embeddings)
    hits = index.search_id(index.ids[4], k=3)
    d2 = ((emb - emb[4]) ** 2).sum(axis=1)
    for h in hits:
        assert h.score == pytest.approx(-d2[index.position(h.id)], rel=1e-4, abs=1e-5)
    sim = load_model(TINY, metric="l2").similarity(torch.from_numpy(emb[4:5]),
                                                   torch.from_numpy(emb[[index.position(h.id) for h in hits]]))
    np.testing.assert_allclose([h.score for h in hits], sim[0].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_rescore_reorders_candidates(metric):
    emb = np.array([[1, 0], [0.6, 0.8], [0, 1], [-1, 0]], np.float32)
    q = np.array([[0.8, 0.6]], np.float32)
    scores, pos = exact_rescore(q, np.array([[3, 2, -1, 0, 1]]), emb, metric)
    assert pos.tolist() == [[1, 0, 2, 3, -1]]  # best first, the missing candidate last
    expected = [float(q[0] @ emb[i]) if metric == "cosine" else -float(((q[0] - emb[i]) ** 2).sum()) for i in (1, 0, 2, 3)]
    np.testing.assert_allclose(scores[0, :4], expected, rtol=1e-6)
    assert scores[0, 4] == -np.inf


def test_model_loads_lazily_with_recorded_settings(built, root):
    index = open_index("g", root=root)
    assert index._model is None
    model = index.model
    assert model.info().dim == 12 and model.metric == "cosine" and model.layer == "trunk"
    assert model.preprocessing.to_dict() == index.meta["model"]["preprocessing"]


def test_model_mismatch_on_open(built, root):
    with pytest.raises(ModelMismatchError, match=r"dim: index has 12, model has 8"):
        open_index("g", root=root, model=tiny_linear(dim=8))
    with pytest.raises(ModelMismatchError, match=r"metric: index has 'cosine', model has 'ip'"):
        open_index("g", root=root, model=tiny_linear(metric="ip"))
    other = tiny_linear()
    other.preprocessing.size = 48
    with pytest.raises(ModelMismatchError, match=r"preprocessing.size: index has 64, model has 48"):
        open_index("g", root=root, model=other)
    with pytest.raises(ModelMismatchError, match=r"spec: index has .*tiny_linear.*tiny_gap"):
        open_index("g", root=root, model="python:simx.models.toy:tiny_gap")
    ok = open_index("g", root=root, model=tiny_linear())  # same spec/layer/metric/dim/preprocessing
    assert ok.model.dim == 12


def test_meta_must_agree_with_the_files(built, root):
    meta_path = root / "g" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["dim"] = 16  # e.g. a hand-edited or mixed-up folder
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(SimxIndexError, match="inconsistent"):
        open_index("g", root=root)


def test_missing_and_broken_indexes(built, root):
    with pytest.raises(SimxIndexError, match=r"no index named 'nope' in .*\(available: g\)"):
        open_index("nope", root=root)
    broken = root / "broken"
    shutil.copytree(root / "g", broken)
    (broken / "embeddings.npy").unlink()
    with pytest.raises(SimxIndexError, match=r"broken is incomplete: missing embeddings.npy"):
        open_index("broken", root=root)
    nometa = root / "nometa"
    nometa.mkdir()
    with pytest.raises(SimxIndexError, match=r"nometa is not a complete simx index: meta.json is missing"):
        open_index("nometa", root=root)
    future = root / "future"
    shutil.copytree(root / "g", future)
    meta = json.loads((future / "meta.json").read_text())
    meta["format_version"] = 99
    (future / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SimxIndexError, match=r"future has index format version 99; this simx reads versions 1, 2"):
        open_index("future", root=root)
    short = root / "short"
    shutil.copytree(root / "g", short)
    np.save(short / "embeddings.npy", np.zeros((5, 12), np.float32))
    with pytest.raises(SimxIndexError, match=r"inconsistent: manifest rows 12, embeddings rows 5, FAISS ntotal 12"):
        open_index("short", root=root)
    # A folder path works as the name, too.
    assert len(open_index(root / "g")) == 12


def test_list_indexes_ignores_hidden_and_reports_broken(built, root, tmp_path):
    (root / ".g.tmp-999999").mkdir()
    (root / "zz-broken").mkdir()
    make_gallery(tmp_path / "two", {"red": 2})
    build_index(tmp_path / "two", "a-small", model=TINY, root=root, workers=0, progress=False)
    entries = list_indexes(root)
    assert [e["name"] for e in entries] == ["a-small", "g", "zz-broken"]
    assert entries[0]["ok"] and entries[0]["embedded"] == 2 and entries[0]["dim"] == 12
    assert entries[1]["factory"] == "Flat" and entries[1]["model"] == TINY and entries[1]["metric"] == "cosine"
    assert not entries[2]["ok"] and "meta.json is missing" in entries[2]["error"]
    assert list_indexes(tmp_path / "does-not-exist") == []


def test_search_on_hnsw_and_ivf_matches_flat_on_small_gallery(gallery, root):
    """Approximate indexes on a tiny gallery behave like exact search (every list probed, HNSW exhaustive)."""
    flat = build_index(gallery, "flat", model=TINY, root=root, workers=0, progress=False)
    ids = open_index(flat.name, root=root).ids
    expected = [[h.id for h in open_index("flat", root=root).search_id(i, k=4)] for i in ids]
    for factory in ("HNSW32", "IVF2,Flat"):
        build_index(gallery, "approx", model=TINY, factory=factory, root=root, workers=0, progress=False)
        approx = open_index("approx", root=root)
        got = [[h.id for h in approx.search_id(i, k=4)] for i in ids]
        assert got == expected, factory


@pytest.mark.slow
def test_default_model_finds_identical_copy_first(tmp_path, root):
    """The real default model: a copy of a gallery image retrieves the original first, with cosine ~1."""
    gal = make_gallery(tmp_path / "gal", {"red": 6, "green": 6, "blue": 6, "yellow": 6})
    build_index(gal, "real", root=root, workers=0, batch_size=12, progress=False)
    index = open_index("real", root=root)
    assert index.meta["model"]["spec"] == "default" and index.meta["model"]["dim"] == 1280
    copy = tmp_path / "copy.png"
    shutil.copy(gal / "yellow" / "4.png", copy)
    hits = index.search_image(copy, k=5)
    assert hits[0].id == "yellow/4.png" and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[1].score < hits[0].score
    fresh = draw((215, 30, 40), 77)
    assert index.search_image(fresh, k=3)[0].label is not None

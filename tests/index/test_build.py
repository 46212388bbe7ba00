"""Building an index: files and metadata, metrics, FAISS factories, the pure batch function, --update, atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from simx.errors import ModelMismatchError, SimxIndexError
from simx.index import build_index, embed_batch, embed_paths, list_indexes, model_kwargs, open_index
from simx.index import layout
from simx.index.build import fit_factory, make_faiss_index
from simx.models import load_model

from .conftest import TINY, draw, make_gallery, subprocess_env


def test_build_writes_complete_folder(built, gallery, root):
    folder = root / "g"
    assert built.path == folder
    assert sorted(p.name for p in folder.iterdir()) == ["embeddings.npy", "index.faiss", "manifest.parquet", "meta.json"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format_version"] == 2
    assert meta["model"]["spec"] == TINY and meta["model"]["layer"] == "trunk" and meta["model"]["metric"] == "cosine"
    assert meta["model"]["dim"] == 12 and meta["model"]["preprocessing"]["size"] == 64
    assert meta["faiss"]["factory"] == "Flat" and meta["faiss"]["ntotal"] == 12
    assert meta["counts"] == {"images": 12, "embedded": 12, "skipped": 0} and meta["skipped"] == []
    assert set(meta["versions"]) >= {"simx", "torch", "timm", "faiss", "python"}
    assert meta["source"] == str(gallery) and meta["elapsed_s"] > 0 and meta["built_at"].endswith("+00:00")

    emb = np.load(folder / "embeddings.npy")
    assert emb.dtype == np.float32 and emb.shape == (12, 12)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # cosine: L2-normalised
    manifest = pd.read_parquet(folder / "manifest.parquet")
    assert list(manifest.columns) == ["id", "path", "label", "labels", "attributes", "boxes", "metadata", "fingerprint"]
    assert list(manifest["id"]) == sorted(f"{c}/{i}.png" for c in ("blue", "green", "red") for i in range(4))
    assert manifest["fingerprint"].str.count(":").eq(2).all()
    index = faiss.read_index(str(folder / "index.faiss"))
    assert index.ntotal == 12 and index.metric_type == faiss.METRIC_INNER_PRODUCT


def test_embeddings_match_the_model(built, gallery):
    """Row i of embeddings.npy is the model's normalised embedding of manifest row i."""
    from simx.data import load_image

    model = load_model(TINY)
    index = open_index("g", root=built.path.parent)
    imgs = [load_image(index.items[i].path) for i in (0, 5, 11)]
    ref = model.embed_images(imgs)
    np.testing.assert_allclose(np.asarray(index.embeddings)[[0, 5, 11]], ref, atol=1e-5)


@pytest.mark.parametrize("metric,faiss_metric", [("ip", faiss.METRIC_INNER_PRODUCT), ("l2", faiss.METRIC_L2)])
def test_metric_choice(gallery, root, metric, faiss_metric):
    res = build_index(gallery, f"m-{metric}", model=TINY, metric=metric, root=root, workers=0, progress=False)
    index = open_index(res.name, root=root)
    assert index.meta["model"]["metric"] == metric and index.faiss_index.metric_type == faiss_metric
    emb = np.asarray(index.embeddings)
    raw = load_model(TINY, metric=metric).embed_images([draw((215, 30, 40), 0)])
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)  # ip/l2 keep raw vectors
    hits = index.search(emb[3], k=3)[0]
    assert hits[0].id == index.ids[3]
    if metric == "l2":  # score = minus squared L2 distance: 0 for itself, negative otherwise
        assert hits[0].score == pytest.approx(0.0, abs=1e-4)
        d2 = ((emb[3] - emb[index.position(hits[1].id)]) ** 2).sum()
        assert hits[1].score == pytest.approx(-d2, rel=1e-4)
    else:
        assert hits[0].score == pytest.approx(float(emb[3] @ emb[3]), rel=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("factory", ["HNSW32", "IVF4096,Flat"])
def test_other_factories_build_and_search(gallery, root, factory):
    res = build_index(gallery, "f", model=TINY, factory=factory, root=root, workers=0, progress=False)
    index = open_index("f", root=root)
    assert index.faiss_index.ntotal == 12
    hits = index.search(np.asarray(index.embeddings[:4]), k=3)
    assert [h[0].id for h in hits] == index.ids[:4]
    if factory.startswith("IVF"):
        assert res.meta["faiss"]["factory_used"] == "IVF1,Flat"  # 12 vectors: 12 // 39 -> clamped to 1 list
        assert "clamped from 4096 to 1" in res.meta["faiss"]["notes"][0]
        assert "clamped" in res.summary()
    else:
        assert res.meta["faiss"]["search_params"] == "efSearch=128"


def test_ivf_pq_build_from_images(tmp_path, root):
    """An IVF-PQ index trains on a real (small) gallery and answers searches."""
    gal = make_gallery(tmp_path / "big", {"red": 15, "green": 15, "blue": 15})
    res = build_index(gal, "pq", model=TINY, factory="IVF16,PQ6x4", root=root, workers=0, batch_size=64,
                      progress=False)
    assert res.meta["faiss"]["factory_used"] == "IVF1,PQ6x4"  # 45 // 39 = 1 list
    index = open_index("pq", root=root)
    assert index.faiss_index.ntotal == 45 and index.faiss_index.is_trained
    hits = index.search_id(index.ids[0], k=10)
    assert len(hits) == 10 and all(h.id != index.ids[0] for h in hits)
    # PQ codes only shortlist 16 x k candidates; their reported scores are the exact cosines of the stored vectors.
    assert res.meta["faiss"]["rerank"] == 16
    emb = np.asarray(index.embeddings)
    for h in hits:
        assert h.score == pytest.approx(float(emb[0] @ emb[index.position(h.id)]), abs=1e-5)
    exact = np.argsort(-(emb @ emb.T), axis=1)[:, 1:11]
    approx = [[index.position(h.id) for h in index.search_id(i, k=10)] for i in index.ids]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9  # chance: 10/44; without re-scoring this PQ6x4 index scored 0.58


def test_ivf_pq_on_synthetic_vectors_finds_cluster_mates():
    factory, dim, n = "IVF16,PQ8x4", 32, 800
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, dim))
    cluster = rng.integers(0, 30, n)
    x = centres[cluster] + 0.1 * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index, info = make_faiss_index(x, factory, "cosine")
    assert info["factory_used"] == factory and info["ntotal"] == n and info["search_params"] == "nprobe=2"
    assert index.is_trained
    _, approx = index.search(x[:200], 5)
    assert (cluster[approx] == cluster[:200, None]).mean() > 0.9


def test_factory_errors_are_clear(gallery, root):
    with pytest.raises(SimxIndexError, match="needs at least 256 vectors"):
        build_index(gallery, "pq", model=TINY, factory="IVF8,PQ4", root=root, workers=0, progress=False)
    with pytest.raises(SimxIndexError, match="FAISS cannot build factory 'IVF8,PQ5' for 12-d vectors"):
        build_index(gallery, "pq", model=TINY, factory="IVF8,PQ5", root=root, workers=0, progress=False)
    with pytest.raises(SimxIndexError, match="FAISS cannot build factory 'NotAnIndex'"):
        build_index(gallery, "pq", model=TINY, factory="NotAnIndex", root=root, workers=0, progress=False)
    assert list_indexes(root) == []  # nothing published, no temp folder left
    assert [p.name for p in root.iterdir()] == []


def test_fit_factory_clamps_lists():
    assert fit_factory("IVF4096,PQ64", 100_000) == ("IVF2564,PQ64", [fit_factory("IVF4096,PQ64", 100_000)[1][0]])
    assert fit_factory("IVF1024,Flat", 1_000_000) == ("IVF1024,Flat", [])
    assert fit_factory("Flat", 3) == ("Flat", [])


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_path_equals_pure_batch_function(gallery, workers):
    """embed_paths (DataLoader, optional worker processes) gives exactly embed_batch's vectors, bad files too."""
    (gallery / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    paths = sorted(str(p) for p in gallery.rglob("*.png"))
    model = load_model(TINY)
    kwargs = model_kwargs(model)
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain data: can be shipped to another machine
    loader_vecs, loader_reasons = embed_paths(model, paths, batch_size=5, workers=workers)
    batch_vecs, batch_reasons = [], []
    for i in range(0, len(paths), 5):
        v, r = embed_batch(TINY, paths[i : i + 5], kwargs)
        batch_vecs.append(v)
        batch_reasons += r
    np.testing.assert_array_equal(loader_vecs, np.concatenate(batch_vecs))
    assert loader_reasons == batch_reasons
    bad = [i for i, r in enumerate(batch_reasons) if r is not None]
    assert [Path(paths[i]).name for i in bad] == ["broken.png"]
    assert not loader_vecs[bad].any() and np.all(np.linalg.norm(np.delete(loader_vecs, bad, 0), axis=1) > 0.99)


def test_fit_and_batch_options_are_recorded(gallery, root):
    res = build_index(gallery, "pad", model=TINY, fit="pad", batch_size=5, root=root, workers=0, progress=False)
    assert res.meta["model"]["preprocessing"]["fit"] == "pad"  # the tiny model's own fit is squash
    assert res.meta["build"]["batch_size"] == 5 and res.meta["build"]["workers"] == 0
    assert open_index("pad", root=root).model.preprocessing.fit == "pad"


def test_index_root_from_environment(gallery, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMX_INDEXES", str(tmp_path / "from-env"))
    res = build_index(gallery, "e", model=TINY, workers=0, progress=False)
    assert res.path == tmp_path / "from-env" / "e"
    assert [e["name"] for e in list_indexes()] == ["e"]
    monkeypatch.delenv("SIMX_INDEXES")
    monkeypatch.chdir(tmp_path)
    assert layout.index_root() == Path("indexes")


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "..", "x" * 200])
def test_invalid_names_are_refused(gallery, root, bad):
    with pytest.raises(SimxIndexError, match="invalid index name"):
        build_index(gallery, bad, model=TINY, root=root, workers=0, progress=False)


# ------------------------------------------------------------------------------------------------ update


def test_update_reembeds_only_new_and_changed(built, gallery, root):
    before = open_index("g", root=root)
    old_emb = {i: np.array(before.embeddings[before.position(i)]) for i in before.ids}
    (gallery / "blue" / "0.png").unlink()  # removed
    draw((30, 70, 215), 999).save(gallery / "blue" / "new.png")  # new
    time.sleep(0.01)
    draw((215, 30, 40), 4242, size=80).save(gallery / "red" / "1.png")  # changed
    res = build_index(gallery, "g", root=root, update=True, workers=0, progress=False)
    assert res.meta["update"]["reused"] == 10 and res.meta["update"]["embedded"] == 2
    assert res.meta["update"]["removed"] == 1
    assert res.meta["model"]["spec"] == TINY  # taken from the previous index
    after = open_index("g", root=root)
    assert "blue/0.png" not in after.ids and "blue/new.png" in after.ids and len(after) == 12
    for item_id in after.ids:
        row = np.asarray(after.embeddings[after.position(item_id)])
        if item_id == "red/1.png":
            assert not np.allclose(row, old_emb[item_id])
        elif item_id != "blue/new.png":
            np.testing.assert_array_equal(row, old_emb[item_id])  # reused verbatim
    # The updated index equals a fresh build of the same gallery.
    fresh = build_index(gallery, "fresh", model=TINY, root=root, workers=0, progress=False)
    fresh_index = open_index(fresh.name, root=root)
    assert fresh_index.ids == after.ids
    np.testing.assert_allclose(np.asarray(fresh_index.embeddings), np.asarray(after.embeddings), atol=1e-6)


def test_update_with_nothing_changed_embeds_nothing(built, gallery, root):
    res = build_index(gallery, "g", root=root, update=True, workers=0, progress=False)
    assert res.meta["update"] == {**res.meta["update"], "reused": 12, "embedded": 0, "removed": 0}


@pytest.mark.parametrize("change,what", [({"metric": "l2"}, "metric"), ({"fit": "pad"}, "preprocessing.fit"),
                                         ({"model": "python:simx.models.toy:tiny_gap"}, "spec")])
def test_update_refuses_a_different_model(built, gallery, root, change, what):
    with pytest.raises(ModelMismatchError, match=rf"cannot --update index 'g': .*{what}"):
        build_index(gallery, "g", root=root, update=True, workers=0, progress=False, **change)
    assert open_index("g", root=root).meta["built_at"] == built.meta["built_at"]  # untouched


def test_update_without_previous_index_is_a_full_build(gallery, root):
    res = build_index(gallery, "new", model=TINY, root=root, update=True, workers=0, progress=False)
    assert res.meta["update"] is None and res.meta["counts"]["embedded"] == 12


# ------------------------------------------------------------------------------------------------ atomicity


SLOW_MODEL = '''
import os, pathlib, time
from simx.models.toy import tiny_linear

def make():
    model = tiny_linear()
    inner = model.embed
    marker = pathlib.Path(os.environ["SIMX_TEST_MARKER"])

    def slow_embed(x):
        marker.write_text("embedding")
        time.sleep(0.4)
        return inner(x)

    model.embed = slow_embed
    return model
'''


def test_killed_build_leaves_previous_index_intact(built, gallery, root, tmp_path):
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    marker = tmp_path / "marker"
    env = {**subprocess_env(tmp_path), "SIMX_TEST_MARKER": str(marker)}
    cmd = [sys.executable, "-m", "simx.cli", "index", "build", str(gallery), "--name", "g", "--root", str(root),
           "--model", "python:slowmodel:make", "--workers", "0", "--batch-size", "2", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no progress"
        tmp = root / f".g.tmp-{proc.pid}"
        assert tmp.is_dir()  # the build is writing into its hidden temp folder
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    index = open_index("g", root=root)  # the previous index, complete and unchanged
    assert index.meta["built_at"] == built.meta["built_at"] and index.meta["model"]["spec"] == TINY
    assert index.search_id("red/0.png", k=3)[0].label == "red"
    assert [e["name"] for e in list_indexes(root)] == ["g"]  # the stale temp folder is not an index
    assert tmp.is_dir()
    build_index(gallery, "other", model=TINY, root=root, workers=0, progress=False)
    assert not tmp.exists()  # cleaned up by the next build


def test_failure_while_writing_keeps_previous_index(built, gallery, root, monkeypatch):
    from simx.index import build as build_mod

    def explode(folder, *args):
        (folder / "index.faiss").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(build_mod, "_write_folder", explode)
    with pytest.raises(OSError, match="disk full"):
        build_index(gallery, "g", model=TINY, metric="ip", root=root, workers=0, progress=False)
    assert open_index("g", root=root).meta["model"]["metric"] == "cosine"
    assert sorted(p.name for p in root.iterdir()) == ["g"]


def test_interrupted_two_rename_swap_is_recovered(built, root):
    """Where renameat2 is unavailable, a crash between the two renames leaves only .NAME.old-*: put back."""
    os.rename(root / "g", root / ".g.old-123-456")
    index = open_index("g", root=root)
    assert index.meta["built_at"] == built.meta["built_at"]
    assert sorted(p.name for p in root.iterdir()) == ["g"]


def test_publish_without_exchange(built, gallery, root, monkeypatch):
    monkeypatch.setattr(layout, "_exchange", lambda a, b: False)
    res = build_index(gallery, "g", model=TINY, metric="ip", root=root, workers=0, progress=False)
    assert open_index("g", root=root).meta["model"]["metric"] == "ip" == res.meta["model"]["metric"]
    assert sorted(p.name for p in root.iterdir()) == ["g"]


def test_rebuild_keeps_files_other_modules_store_beside_the_index(built, gallery, root):
    folder = root / "g"
    (folder / "labels.sqlite").write_bytes(b"user verdicts")
    (folder / "extra").mkdir()
    (folder / "extra" / "notes.txt").write_text("keep me")
    (folder / "eval_k10_full.parquet").write_bytes(b"stale cache")
    build_index(gallery, "g", model=TINY, root=root, workers=0, progress=False)
    assert (folder / "labels.sqlite").read_bytes() == b"user verdicts"
    assert (folder / "extra" / "notes.txt").read_text() == "keep me"
    assert not (folder / "eval_k10_full.parquet").exists()  # described the old vectors

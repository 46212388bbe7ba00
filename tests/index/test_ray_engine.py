"""The Ray engine (issue 16): same index as the local engine, shards written as they complete, resume after a kill,
bad images reported per shard. One local Ray (2 CPUs) serves the whole module."""

from __future__ import annotations

import numpy as np
import pytest

from simx.index import build_index, open_index
from simx.index.shards import ShardStore, plan_shards, shard_dir

from .conftest import TINY, make_gallery

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One 2-CPU local Ray for the module (starting Ray costs ~10 s): the engine uses a running session as is."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_gallery(tmp_path_factory):
    """14 images (5 shards of 3) with one corrupt file in the third shard."""
    folder = make_gallery(tmp_path_factory.mktemp("raygal"), {"red": 5, "green": 4, "blue": 4}, seed=3)
    (folder / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really an image")
    return folder


def _same_index(a, b):
    assert a.ids == b.ids
    np.testing.assert_allclose(np.asarray(a.embeddings), np.asarray(b.embeddings), atol=1e-6, rtol=0)
    assert a.faiss_index.ntotal == b.faiss_index.ntotal


def test_ray_build_equals_local_and_reports_bad_image_per_shard(local_ray, ray_gallery, tmp_path):
    root = tmp_path / "idx"
    local = build_index(ray_gallery, "loc", model=TINY, root=root, workers=0, progress=False)
    res = build_index(ray_gallery, "rayb", model=TINY, root=root, engine="ray", actors=2, batch_size=2,
                      shard_size=3, progress=False)
    _same_index(open_index("loc", root=root), open_index("rayb", root=root))
    sh = res.meta["build"]["shards"]
    assert res.meta["build"]["engine"] == "ray" and res.meta["build"]["ray"]["actors"] == 2
    assert (sh["total"], sh["embedded"], sh["resumed"]) == (5, 5, 0)
    # the corrupt file (gallery position 8 of 14: blue/0-3, green/0-3, then green/broken.png) is reported with
    # its shard (2: positions 6-8), and the other files of that shard are kept
    assert [(s["id"], s["shard"]) for s in res.skipped] == [("green/broken.png", 2)]
    assert "green/2.png" in open_index("rayb", root=root) and "green/3.png" in open_index("rayb", root=root)
    assert "[shard 2] " in res.summary() and "not a readable image" in res.summary()
    # shards stay beside the index for the next run; searching gives the local engine's neighbours
    assert len(list(shard_dir("rayb", root).glob("shard-*.parquet"))) == 5
    a, b = open_index("loc", root=root), open_index("rayb", root=root)
    assert [h.id for h in a.search_id("red/0.png", 5)] == [h.id for h in b.search_id("red/0.png", 5)]


def test_killed_ray_job_resumes_with_only_missing_shards(local_ray, ray_gallery, tmp_path):
    root = tmp_path / "idx"
    done = []

    def kill_after_two(shard):
        done.append(shard.number)
        if len(done) == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        build_index(ray_gallery, "resumed", model=TINY, root=root, engine="ray", actors=2, batch_size=2,
                    shard_size=3, progress=False, on_shard=kill_after_two)
    assert not (root / "resumed").exists()  # nothing published
    kept = sorted(p.name for p in shard_dir("resumed", root).glob("shard-*.parquet"))
    assert len(kept) == 2
    before = {p.name: p.stat().st_mtime_ns for p in shard_dir("resumed", root).glob("shard-*.npy")}

    again = []
    res = build_index(ray_gallery, "resumed", model=TINY, root=root, engine="ray", actors=2, batch_size=2,
                      shard_size=3, progress=False, on_shard=lambda s: again.append(s.number))
    assert sorted(again + done) == [0, 1, 2, 3, 4]  # the second run embedded exactly the missing shards
    assert res.meta["build"]["shards"]["resumed"] == 2 and res.meta["build"]["shards"]["embedded"] == 3
    after = {p.name: p.stat().st_mtime_ns for p in shard_dir("resumed", root).glob("shard-*.npy")}
    assert all(after[name] == t for name, t in before.items())  # the kept shards were not rewritten
    local = build_index(ray_gallery, "ref", model=TINY, root=root, workers=0, progress=False)
    assert local.meta["counts"] == res.meta["counts"]
    _same_index(open_index("ref", root=root), open_index("resumed", root=root))


def test_shard_keys_follow_content_and_model(tmp_path):
    rec = {"spec": "m", "layer": "l", "metric": "cosine", "dim": 4, "preprocessing": {"size": 8}}
    a = plan_shards([0, 1, 2], ["a", "b", "c"], ["/a", "/b", "/c"], ["1", "2", "3"], rec, shard_size=2)
    b = plan_shards([0, 1, 2], ["a", "b", "c"], ["/a", "/b", "/c"], ["1", "2", "X"], rec, shard_size=2)
    c = plan_shards([0, 1, 2], ["a", "b", "c"], ["/a", "/b", "/c"], ["1", "2", "3"], {**rec, "dim": 5}, shard_size=2)
    assert [len(s) for s in a] == [2, 1]
    assert a[0].key == b[0].key and a[1].key != b[1].key  # a changed file changes only its shard
    assert a[0].key != c[0].key  # another model changes every shard
    store = ShardStore(tmp_path / "s")
    store.write(a[1], np.ones((1, 4), np.float32), ["bad file"])
    assert store.is_complete(a[1]) and not store.is_complete(a[0])
    vecs, reasons = store.read(a[1])
    assert reasons == ["bad file"] and vecs.shape == (1, 4)
    store.write(b[1], np.ones((1, 4), np.float32), [None])
    assert sorted(store.prune(b)) == [f"{a[1].stem}.npy", f"{a[1].stem}.parquet"]
    assert store.is_complete(b[1]) and not store.is_complete(a[1])
    store.reset()  # --no-resume
    assert not store.is_complete(b[1])


def test_explain_batch_on_ray_stores_the_local_result(local_ray, ray_gallery, tmp_path, capsys):
    """``simx explain-batch --engine ray`` (2 actors) writes the run the local engine writes: same folder (method
    and parameters), same pairs in the same order, same maps and faithfulness numbers."""
    import json

    import pandas as pd

    from simx.cli import main
    from simx.explain.batch import list_precomputed

    root = tmp_path / "idx"
    build_index(ray_gallery, "g", model=TINY, root=root, workers=0, progress=False)
    args = ["explain-batch", "g", "--root", str(root), "--worst", "3", "--top", "2", "--method", "sbsm",
            "--param", "window=16", "--param", "stride=8", "-q"]

    def stored():
        (run,) = list_precomputed(open_index("g", root=root))
        with np.load(f"{run['folder']}/maps.npz") as maps:
            arrays = {name: maps[name] for name in maps.files}
        return run, pd.read_parquet(f"{run['folder']}/pairs.parquet"), arrays

    assert main(args) == 0
    local_run, local_pairs, local_maps = stored()
    assert main(args + ["--engine", "ray", "--actors", "2"]) == 0
    assert "on the ray engine" in capsys.readouterr().out
    ray_run, ray_pairs, ray_maps = stored()  # the same folder: the Ray run replaced the local one

    assert (local_run["engine"], ray_run["engine"], ray_run["ray"]["actors"]) == ("local", "ray", 2)
    assert ray_run["folder"] == local_run["folder"] and ray_run["params"] == local_run["params"]
    assert ray_run["queries"] == local_run["queries"] == 3 and ray_run["pairs"] == 6
    assert list(ray_pairs.columns) == list(local_pairs.columns)
    for col in ("query", "neighbour", "rank", "row"):
        assert ray_pairs[col].tolist() == local_pairs[col].tolist()
    numbers = [c for c in local_pairs.columns if c == "similarity" or c.endswith(("_insertion", "_deletion"))]
    assert len(numbers) == 5
    np.testing.assert_allclose(ray_pairs["similarity"], local_pairs["similarity"], atol=1e-5)
    # insertion/deletion AUCs (x100) rank the map's pixels: maps equal to float noise (the actors run other thread
    # counts) may order near-tied pixels differently, which moved one AUC by 0.019 of 100 in a run; 0.05 is still
    # far below any real difference (a different map or fill moves them by whole points)
    np.testing.assert_allclose(ray_pairs[numbers].to_numpy(), local_pairs[numbers].to_numpy(), atol=0.05)
    assert sorted(ray_maps) == sorted(local_maps) == ["neighbour_maps", "query_maps"]
    for name in local_maps:
        assert ray_maps[name].shape == local_maps[name].shape == (6, 64, 64)
        scale = float(np.abs(local_maps[name].astype(np.float32)).max())
        np.testing.assert_allclose(ray_maps[name].astype(np.float32), local_maps[name].astype(np.float32),
                                   atol=1e-3 * scale)
    assert json.loads(open(f"{ray_run['folder']}/params.json").read())["seed"] == 0

"""``simx duplicates`` (issue 16): planted resized / re-encoded copies are found and grouped, no distinct pair is
reported, ``--across`` reports planted leaks; the IVF paths of large galleries (a PCA projection for cosine, 8-bit
codes for inner products) find the same pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simx.cli import main
from simx.index import build_index, open_index
from simx.index import duplicates as dup

from .conftest import draw

THUMB = "python:simx.models.toy:tiny_thumbnail"


def _picture(i: int):
    """Picture ``i``: a coloured shape with a second, smaller one of another colour inset at a seeded place."""
    import numpy as np

    rng = np.random.default_rng(i)
    img = draw(tuple(int(v) for v in rng.integers(0, 255, 3)), i, size=96)
    inset = draw(tuple(int(v) for v in rng.integers(0, 255, 3)), i + 1000, size=40)
    img.paste(inset, tuple(int(v) for v in rng.integers(0, 56, 2)))
    return img


def _plant(folder: Path, i: int, name: str) -> None:
    """A resized (75%) PNG copy and a JPEG (quality 70) re-encoding of picture ``i``."""
    img = _picture(i)
    img.resize((72, 72)).save(folder / f"{name}_small.png")
    img.save(folder / f"{name}_jpeg.jpg", quality=70)


@pytest.fixture(scope="module")
def galleries(tmp_path_factory):
    """``train``: pictures 0-29 with copies of 0-3 planted; ``test``: pictures 30-49 plus copies of 5, 6, 7."""
    base = tmp_path_factory.mktemp("dups")
    train, test = base / "train", base / "test"
    train.mkdir()
    test.mkdir()
    for i in range(30):
        _picture(i).save(train / f"p{i:02d}.png")
    for i in range(4):
        _plant(train, i, f"p{i:02d}")
    for i in range(30, 50):
        _picture(i).save(test / f"q{i:02d}.png")
    for i in (5, 6, 7):
        _picture(i).resize((80, 80)).save(test / f"leak{i:02d}.png")
    root = base / "indexes"
    for name, folder in (("train", train), ("test", test)):
        build_index(folder, name, model=THUMB, root=root, workers=0, progress=False)
    return root


def _expected_groups():
    return [[f"p{i:02d}.png", f"p{i:02d}_jpeg.jpg", f"p{i:02d}_small.png"] for i in range(4)]


def test_planted_copies_are_grouped_and_nothing_else(galleries):
    index = open_index("train", root=galleries)
    res = dup.find_duplicates(index)
    assert res.threshold == dup.DEFAULT_THRESHOLD
    assert sorted(g["ids"] for g in res.groups) == _expected_groups()  # no false pair above the threshold
    assert len(res.pairs) == 12 and (res.pairs["score"] >= dup.DEFAULT_THRESHOLD).all()
    assert list(res.pairs["score"]) == sorted(res.pairs["score"], reverse=True)
    assert res.stats["method"].startswith("exact") and res.leaked == []
    # the exact scores are the stored embeddings' cosines
    a, b, s = res.pairs.iloc[0]
    e = index.embeddings
    assert s == pytest.approx(float(e[index.position(a)] @ e[index.position(b)]), abs=1e-5)


@pytest.mark.parametrize("dims", [8, 256])
def test_projected_ivf_path_finds_the_same_pairs(galleries, monkeypatch, dims):
    index = open_index("train", root=galleries)
    exact = dup.find_duplicates(index)
    monkeypatch.setattr(dup, "EXACT_MAX", 10)  # force the large-gallery structure on 38 items
    monkeypatch.setattr(dup, "PROJECTED_DIMS", dims)  # a projection (8 dims), or none (the toy's 192 fit)
    approx = dup.find_duplicates(index, nprobe=64)
    assert approx.stats["method"].startswith("IVF range search on a")
    assert approx.pairs[["a", "b"]].values.tolist() == exact.pairs[["a", "b"]].values.tolist()
    assert approx.pairs["score"].tolist() == pytest.approx(exact.pairs["score"].tolist(), abs=1e-6)


def test_projection_never_lengthens_a_distance():
    """The radius is safe: after the PCA projection every pair is at most as far apart as before."""
    import faiss

    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 96)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pca = faiss.PCAMatrix(96, 8)
    pca.train(x)
    y = pca.apply(x)
    full = ((x[:, None] - x[None]) ** 2).sum(-1)
    projected = ((y[:, None] - y[None]) ** 2).sum(-1)
    assert (projected <= full + 1e-4).all() and projected.max() > 0.3 * full.max()


def test_inner_product_indexes_use_8_bit_codes(galleries, monkeypatch):
    index = open_index("train", root=galleries)
    exact = dup.find_duplicates(index)
    monkeypatch.setattr(dup, "EXACT_MAX", 10)
    monkeypatch.setattr(index, "meta", {**index.meta, "model": {**index.meta["model"], "metric": "ip"}})
    approx = dup.find_duplicates(index, threshold=dup.DEFAULT_THRESHOLD, nprobe=64)
    assert approx.stats["method"].startswith("IVF-SQ8")
    assert approx.pairs[["a", "b"]].values.tolist() == exact.pairs[["a", "b"]].values.tolist()


def test_across_reports_planted_leaks(galleries):
    test, train = open_index("test", root=galleries), open_index("train", root=galleries)
    res = dup.find_duplicates(test, other=train)
    assert res.leaked == ["leak05.png", "leak06.png", "leak07.png"]
    assert sorted(res.pairs["b"]) == ["p05.png", "p06.png", "p07.png"]
    assert all(set(g["sides"]) == {"index", "other"} for g in res.groups)


def test_thresholds_and_model_checks(galleries):
    index = open_index("train", root=galleries)
    assert len(dup.find_duplicates(index, threshold=0.99999).pairs) < 12  # stricter: fewer pairs
    with pytest.raises(Exception, match="cosine threshold"):
        dup.find_duplicates(index, threshold=1.5)


def test_cli_text_json_and_saved_pairs(galleries, capsys, tmp_path):
    assert main(["duplicates", "train", "--root", str(galleries), "-q"]) == 0
    out = capsys.readouterr().out
    assert "12 near-duplicate pairs (score >= 0.95) in 4 groups covering 12 of 38 items" in out
    assert "p00.png, p00_jpeg.jpg, p00_small.png" in out
    assert (galleries / "train" / "duplicates_t0.9500.parquet").is_file()
    assert main(["duplicates", "test", "--across", "train", "--root", str(galleries), "--json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["leaked"] == ["leak05.png", "leak06.png", "leak07.png"] and data["other"] == "train"
    csv = tmp_path / "pairs.csv"
    assert main(["duplicates", "test", "--across", "train", "--root", str(galleries), "--csv", str(csv), "-q"]) == 0
    assert "3 of 23 items have a near-duplicate among the 38 items of train" in capsys.readouterr().out
    assert csv.read_text().splitlines()[0] == "a,b,score"

"""The backend pieces the dashboard draws with: simx.report (thumbnails, encoders, confusion) and simx.projection.

Maps, the PNG figure and the HTML report are tested in tests/render (the one renderer)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from simx import projection as proj
from simx import report
from simx.data import Item


def fake_index(tmp_path, emb: np.ndarray):
    items = [Item(id=f"i{i}", path=f"/x/{i}.png", label="ab"[i % 2]) for i in range(len(emb))]
    return SimpleNamespace(path=tmp_path, ids=[it.id for it in items], items=items, embeddings=emb, metric="cosine")


def test_pca_preserves_a_planar_cloud():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(50, 2)) * [5.0, 1.0]
    basis = np.linalg.qr(rng.normal(size=(10, 2)))[0]  # orthonormal 10x2
    x = plane @ basis.T + 3.0
    y = proj.pca_2d(x)
    d = lambda a: np.linalg.norm(a[:, None] - a[None], axis=-1)  # noqa: E731
    assert np.allclose(d(y), d(plane), atol=1e-4)
    assert np.allclose(proj.pca_2d(x), y)  # deterministic signs


def test_projection_is_computed_once_and_refreshed_when_embeddings_change(tmp_path, monkeypatch):
    monkeypatch.setattr(proj, "umap_available", lambda: False)
    rng = np.random.default_rng(1)
    idx = fake_index(tmp_path, rng.normal(size=(30, 8)).astype(np.float32))
    df = proj.projection(idx)
    assert list(df.columns) == ["id", "label", "x", "y"] and list(df["id"]) == idx.ids
    assert df.attrs["method"] == "pca"
    stored = tmp_path / proj.PROJECTION_FILE
    first_mtime = stored.stat().st_mtime_ns
    again = proj.projection(idx)
    assert stored.stat().st_mtime_ns == first_mtime  # read back, not recomputed
    assert np.allclose(again[["x", "y"]].values, df[["x", "y"]].values)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # atomic writes leave no temp file
    idx.embeddings = rng.normal(size=(30, 8)).astype(np.float32)  # a rebuilt index
    changed = proj.projection(idx)
    assert not np.allclose(changed[["x", "y"]].values, df[["x", "y"]].values)


def test_label_confusion_rows_are_shares():
    per_query = pd.DataFrame({"label": ["a", "a", "b"], "neighbours": [["x", "y"], ["x", "z"], ["y", "w"]]})
    labels = {"x": "a", "y": "b", "z": "a", "w": None}
    conf = report.label_confusion(per_query, labels, normalise=True)
    assert conf.loc["a", "a"] == pytest.approx(0.75) and conf.loc["a", "b"] == pytest.approx(0.25)
    assert conf.loc["b", "(none)"] == pytest.approx(0.5)
    assert np.allclose(conf.sum(axis=1), 1.0)
    raw = report.label_confusion(per_query, labels, normalise=False)
    assert raw.values.sum() == 6


def test_umap_projection_keeps_clusters_apart_and_is_stored_as_umap(tmp_path):
    pytest.importorskip("umap", reason="umap-learn is a test dependency; without it the map falls back to PCA")
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 16)) * 4.0
    labels = np.repeat(np.arange(3), 25)
    emb = (centres[labels] + rng.normal(size=(75, 16)) * 0.3).astype(np.float32)
    idx = fake_index(tmp_path, emb)
    idx.metric = "l2"
    df = proj.projection(idx)
    assert df.attrs["method"] == "umap"
    xy = df[["x", "y"]].to_numpy()
    # every point's nearest 2-D neighbour comes from its own cluster
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(axis=1)] == labels).mean() == 1.0
    meta = (tmp_path / proj.PROJECTION_META).read_text()
    assert '"method": "umap"' in meta
    assert proj.projection(idx, method="pca").attrs["method"] == "pca"  # asked for PCA: recomputed as PCA


def test_jpeg_data_uri_is_a_smaller_faithful_picture():
    import base64

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224]
    img = np.stack([xx, yy, (xx + yy) // 2], -1).astype(np.uint8) + rng.integers(0, 8, (224, 224, 3), dtype=np.uint8)
    png, jpg = report.data_uri(img), report.data_uri(img, fmt="jpeg")
    assert png.startswith("data:image/png;base64,") and jpg.startswith("data:image/jpeg;base64,")
    assert len(jpg) < len(png) / 2
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(jpg.split(",", 1)[1]))).convert("RGB"), np.float32)
    assert back.shape == img.shape and np.abs(back - img).mean() < 4.0
    with pytest.raises(ValueError, match="png' or 'jpeg"):
        report.data_uri(img, fmt="gif")

"""A tiny labelled index built once per test session from generated images (toy model: fast, CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
TOY = "python:simx.models.toy:tiny_linear"
#: AppTest's limit on one script run, in seconds. A run that draws maps on a loaded 2-core CI machine can take
#: minutes (the first one loads the model and fills the feature cache); the limit only ends a hung run, it is not
#: a speed target (those are measured in benchmarks/).
RUN_TIMEOUT_S = 600
LABELS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 220)}


def make_gallery(folder: Path, per_label: int = 5, seed: int = 0) -> Path:
    """Coloured squares on white, one sub-folder per colour (the label), with a description file each."""
    rng = np.random.default_rng(seed)
    for label, colour in LABELS.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            a = np.full((48, 48, 3), 255, np.uint8)
            x, y = rng.integers(0, 24, 2)
            a[y : y + 20, x : x + 20] = colour
            a = (a.astype(int) + rng.integers(-25, 25, a.shape)).clip(0, 255).astype(np.uint8)
            Image.fromarray(a).save(folder / label / f"{label}{i}.png")
            (folder / label / f"{label}{i}.txt").write_text(f"a {label} square number {i}\n")
    return folder


@pytest.fixture(autouse=True)
def no_cost_confirmation(monkeypatch):
    """Methods start without a Run click unless a test sets ``SIMX_CONFIRM_ABOVE_S`` itself. Whether a method
    waits for Run depends on this machine's measured speed (its estimate against a 5 s limit): a loaded CI
    machine estimates SBSM or even Grad-CAM on the real model above it, an idle one below, so a page test that
    expects maps would otherwise depend on the load. The tests of the confirmation set the limit to 0."""
    monkeypatch.setenv("SIMX_CONFIRM_ABOVE_S", "1e9")


@pytest.fixture(scope="session")
def index_root(tmp_path_factory) -> Path:
    from simx.index import build_index

    base = tmp_path_factory.mktemp("simx_app")
    gallery = make_gallery(base / "gallery")
    root = base / "indexes"
    build_index(gallery, "tiny", model=TOY, root=root, workers=0, progress=False)
    return root


@pytest.fixture()
def indexes(index_root, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the tiny index root per test (labels and caches never leak between tests)."""
    root = tmp_path / "indexes"
    shutil.copytree(index_root, root)
    monkeypatch.setenv("SIMX_INDEXES", str(root))
    monkeypatch.delenv("SIMX_LABELS_URL", raising=False)
    monkeypatch.setenv("SIMX_USER", "tester")
    return root


def write_synthetic_index(root: Path, model_index: Path, n: int, labels: int = 40, name: str = "big") -> Path:
    """Index ``name`` under ``root``: ``n`` clustered 12-d unit vectors in ``labels`` classes (seed 0), a Flat
    inner-product FAISS index and items with no image files, carrying the model record of the index folder
    ``model_index`` (a toy index with 12-d embeddings). The dashboard's scale tests and ``bench_scale`` use it."""
    import json

    import faiss

    from simx.data import Item
    from simx.index.build import _write_folder

    folder = root / name
    folder.mkdir(parents=True)
    meta = json.loads((model_index / "meta.json").read_text())
    rng = np.random.default_rng(0)
    lab = rng.integers(0, labels, n)
    vecs = rng.normal(size=(labels, 12))[lab] + 0.8 * rng.normal(size=(n, 12))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    np.save(folder / "embeddings.npy", vecs)
    flat = faiss.IndexFlatIP(12)
    flat.add(vecs)
    items = [Item(id=f"img{i:06d}", path=f"/nowhere/img{i:06d}.png", label=f"class{lab[i]:02d}") for i in range(n)]
    _write_folder(folder, flat, items, [None] * n)
    meta.update(name=name, counts={"images": n, "embedded": n, "skipped": 0}, skipped=[])
    meta["faiss"].update(ntotal=n)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder

"""A tiny labelled gallery indexed with two tiny models (toy, CPU, seconds), with planted labels on copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.app.conftest import make_gallery

TOY = "python:simx.models.toy:tiny_linear"
TOY_B = "python:simx.models.toy:tiny_mlp"


@pytest.fixture(scope="session")
def base_root(tmp_path_factory) -> Path:
    """Indexes ``tiny`` (tiny_linear) and ``tiny-b`` (tiny_mlp) of one 15-image gallery, and ``part`` of 12."""
    from simx.index import build_index

    base = tmp_path_factory.mktemp("simx_ft")
    gallery = make_gallery(base / "gallery")
    part = make_gallery(base / "part", per_label=4)
    root = base / "indexes"
    build_index(gallery, "tiny", model=TOY, root=root, workers=0, progress=False)
    build_index(gallery, "tiny-b", model=TOY_B, root=root, workers=0, progress=False)
    build_index(part, "part", model=TOY, root=root, workers=0, progress=False)
    return root


@pytest.fixture()
def root(base_root, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the index root per test (labels never leak between tests)."""
    out = tmp_path / "indexes"
    shutil.copytree(base_root, out)
    monkeypatch.setenv("SIMX_INDEXES", str(out))
    monkeypatch.delenv("SIMX_LABELS_URL", raising=False)
    return out


def plant_labels(root: Path, name: str = "tiny") -> list[tuple[str, str, str]]:
    """Every other query's first neighbour labelled bad, its seventh good: (query, bad, good) triples."""
    from simx.index import open_index
    from simx.labels import open_labels

    index = open_index(name, root=root)
    store = open_labels(name, root=root)
    planted = []
    for q in index.ids[::2]:
        hits = index.search_id(q, 10)
        store.put(name, q, hits[0].id, "bad", reason="background_shortcut", user="ann")
        store.put(name, q, hits[6].id, "good", user="ann")
        planted.append((q, hits[0].id, hits[6].id))
    return planted

"""The dashboard on transformer indexes (issue 13): a tiny-ViT index renders maps for a pair (attngrad included),
and a tiny-OpenCLIP index takes a text query whose neighbours are explained on the image side."""

from __future__ import annotations

import pytest

from simx.explain.metrics import ESTIMATE_STEPS

from tests.app.conftest import APP, RUN_TIMEOUT_S, make_gallery
from tests.app.test_app import image_captions, run, texts

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest


@pytest.fixture(scope="module")
def token_root(tmp_path_factory):
    from simx.index import build_index

    base = tmp_path_factory.mktemp("simx_token_app")
    gallery = make_gallery(base / "gallery", per_label=3)
    root = base / "indexes"
    build_index(gallery, "vit", model="python:simx.models.toy:tiny_vit_token", root=root, workers=0, progress=False)
    build_index(gallery, "clip", model="python:simx.models.toy:tiny_openclip", root=root, workers=0, progress=False)
    return root


@pytest.fixture()
def env(token_root, monkeypatch):
    monkeypatch.setenv("SIMX_INDEXES", str(token_root))
    monkeypatch.delenv("SIMX_LABELS_URL", raising=False)
    monkeypatch.setenv("SIMX_USER", "tester")
    return token_root


def app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    for k, v in params.items():
        at.query_params[k] = v
    return at


def test_tiny_vit_index_renders_maps_for_a_pair(env):
    from simx.index import open_index

    nid = open_index("vit", root=env).search_id("red/red0.png", 3)[0].id
    at = run(app(index="vit", query="red/red0.png", neighbour=nid, methods="gradcam,attngrad"))
    caps = image_captions(at)
    for m in ("gradcam", "attngrad"):
        assert f"{m}: query" in caps and f"{m}: neighbour" in caps, caps
    assert "similarity" in texts(at.markdown) and not at.error, [e.value for e in at.error]


def test_text_query_box_neighbours_and_image_side_maps(env):
    from simx.index import open_index

    at = run(app(index="clip"))
    assert "Describe it (text)" in [t.label for t in at.tabs]
    at.text_input(key="text_query").input("a red square")
    at.button[[b.label for b in at.button].index("Search by text")].click()
    run(at)
    assert at.query_params["text"] == "a red square"
    hits = open_index("clip", root=env).search_text("a red square", 3)
    opens = [b for b in at.button if b.key and b.key.startswith("tnb_")]
    assert [b.key[4:] for b in opens[:3]] == [h.id for h in hits]
    opens[0].click()
    run(at)
    assert at.query_params["neighbour"] == hits[0].id
    assert "gradcam: neighbour vs text" in image_captions(at)
    assert "a red square" in texts(at.text)
    assert f"estimate, {ESTIMATE_STEPS} steps" in texts(at.caption) and "higher is better" in texts(at.caption)
    at.button(key=f"btn_tfaith_{hits[0].id}_gradcam").click()
    run(at)
    assert "101 steps" in texts(at.caption) and not at.error  # the full curve, scored against the text


def test_image_only_index_has_no_text_tab(env):
    at = run(app(index="vit"))
    assert "Describe it (text)" not in [t.label for t in at.tabs]

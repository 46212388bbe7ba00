"""AppTest of the dashboard on the demo scenes embedded by the real default model (EfficientNet-Lite0), not the toy.

The toy model hides whatever depends on a real network: its input size and preprocessing, its feature-map grid,
the head that reproduces the embedding, gradients through real layers. Here a pair of real scenes is opened and
its saliency maps and joint view are drawn from the real model.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from tests.app.conftest import APP, RUN_TIMEOUT_S
from tests.app.test_app import image_captions, nodes, run, texts
from tests.real_demo import private_copy

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return private_copy(tmp_path_factory, "app_real")


@pytest.fixture()
def env(demo_root, monkeypatch):
    monkeypatch.setenv("SIMX_INDEXES", str(demo_root))
    monkeypatch.delenv("SIMX_LABELS_URL", raising=False)
    monkeypatch.setenv("SIMX_USER", "tester")
    return demo_root


def app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    for k, v in params.items():
        at.query_params[k] = v
    return at


def test_the_demo_index_uses_the_real_default_model(env):
    from simx.index import open_index

    idx = open_index("scenes", root=env)
    assert idx.meta["model"]["spec"] == "default" and len(idx) == 40
    assert type(idx.model).__name__ != "ToyModel" and "toy" not in type(idx.model).__module__
    at = run(app(index="scenes"))
    status = texts(at.sidebar.caption)
    assert "40 images" in status and "model default" in status
    assert at.sidebar.selectbox(key="index_pick").options == ["scenes", "tiny"]


def test_a_pair_of_real_scenes_draws_its_maps_and_joint_view(env):
    from simx.index import open_index

    idx = open_index("scenes", root=env)
    query = "scene_0003"
    neighbour = idx.search_id(query, k=1)[0].id
    at = run(app(index="scenes", query=query, neighbour=neighbour))
    md = " ".join(str(m.value) for m in at.markdown)
    assert "Top 10 neighbours" in md and "Why do these match?" in " ".join(str(s.value) for s in at.subheader)
    captions = image_captions(at)
    assert "gradcam: query" in captions and "gradcam: neighbour" in captions, captions
    # the maps are real pictures of the model's input size, not blank
    imgs = [img for n in nodes(at, "image") for img in n.proto.imgs if img.caption.startswith("gradcam")]
    assert len(imgs) == 2 and all(len(img.url) > 0 for img in imgs)
    # the similarity the page states is the index's own score for the pair
    score = next(h.score for h in idx.search_id(query, k=10) if h.id == neighbour)
    assert f"{score:.4f}" in md
    # the joint view draws the query's real cell grid (EfficientNet-Lite0: 7 x 7 at 224 px)
    charts = nodes(at, "plotly_chart")
    assert charts, "no joint chart"
    fig = json.loads(charts[-1].proto.spec)
    xs = next(t for t in fig["data"] if t.get("name") == "query cells")["x"]
    if isinstance(xs, dict):  # plotly sends numpy arrays as base64 ("bdata") with their dtype
        xs = np.frombuffer(base64.b64decode(xs["bdata"]), dtype=xs["dtype"])
    n = len(xs)
    assert int(np.sqrt(n)) ** 2 == n and n > 4, n
    assert not at.error, [e.value for e in at.error]


def test_next_failure_on_the_real_index_opens_the_worst_query(env):
    from simx.index import evaluate, open_index
    from simx.index.evaluation import next_failure

    per_query = evaluate(open_index("scenes", root=env), k=10).per_query
    at = run(app(index="scenes"))
    nxt = next(b for b in at.button if b.label == "Next failure")
    assert not nxt.disabled
    nxt.click()
    run(at)
    assert at.query_params["query"] == next_failure(per_query, None)

"""The dashboard on an index of 200k synthetic vectors (issue 16): the embedding map draws a stratified sample
and the Failures page one page of a sampled evaluation, so neither sends the index to the browser."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.app.conftest import APP, RUN_TIMEOUT_S, write_synthetic_index

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

N = 200_000
LABELS = 40


@pytest.fixture(scope="module")
def big_root(index_root, tmp_path_factory):
    """A 200k-item index with the tiny index's model record: 12-d clustered vectors, 40 labels, no image files."""
    root = tmp_path_factory.mktemp("big") / "indexes"
    write_synthetic_index(root, index_root / "tiny", N, LABELS)
    return root


@pytest.fixture()
def big(big_root, tmp_path, monkeypatch):
    root = tmp_path / "indexes"
    shutil.copytree(big_root, root)
    monkeypatch.setenv("SIMX_INDEXES", str(root))
    monkeypatch.delenv("SIMX_LABELS_URL", raising=False)
    monkeypatch.setenv("SIMX_USER", "tester")
    import simx.projection

    # keep the test lean: a 4,000-point sample projected by PCA (UMAP's first call compiles with numba for ~30 s)
    monkeypatch.setattr(simx.projection, "MAP_POINTS", 4000)
    monkeypatch.setattr(simx.projection, "umap_available", lambda: False)
    return root


def _run(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _payload(at) -> int:
    """Bytes of every element the run sends to the browser."""
    total = 0
    stack = [at._tree]
    while stack:
        node = stack.pop()
        proto = getattr(node, "proto", None)
        if proto is not None and hasattr(proto, "ByteSize"):
            total += proto.ByteSize()
        children = getattr(node, "children", {})
        stack.extend(children.values() if isinstance(children, dict) else children)
    return total


def test_map_and_failures_at_200k_send_a_sample(big):
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT_S)
    at.query_params["index"] = "big"
    _run(at)
    at.switch_page("app_pages/embedding_map.py")
    _run(at)
    chart = at.get("plotly_chart")[0].proto
    spec = json.loads(chart.spec)
    assert sum(len(t["x"]) for t in spec["data"]) == 4000  # the stratified sample, every label in it
    assert {t["type"] for t in spec["data"]} == {"scatter"}  # SVG up to 5,000 points, WebGL above
    assert any("a sample of 4,000 of the 200,000 images" in c.value for c in at.caption)
    assert _payload(at) < 1_500_000  # all 200k points would be ~10 MB of JSON

    at.switch_page("app_pages/failures.py")
    _run(at)
    assert len(at.dataframe[0].value) == 1000  # one server-side page of the 20k sampled queries
    assert any("a seeded sample of the 200,000 queries" in c.value for c in at.caption)
    assert _payload(at) < 1_500_000

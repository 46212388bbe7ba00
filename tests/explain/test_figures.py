"""Pair figures (PNG, no pyplot state) and JSON summaries of explanations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from simx.explain import explain
from simx.explain.figures import display_map, explanation_to_json, pair_figure
from simx.models.toy import tiny_linear


@pytest.fixture
def exp(random_images):
    q, *nbs = random_images(3, seed=21)
    return explain(tiny_linear(), q, nbs, method="searchcam")


def test_pair_figure_png_has_the_requested_size(exp, tmp_path):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    out = tmp_path / "pair.png"
    fig = pair_figure(exp, k=1, path=out, figsize=(8, 4), dpi=50)
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        assert im.size == (400, 200)
    assert plt.get_fignums() == open_before  # nothing registered with pyplot
    texts = " ".join(t.get_text() for t in fig.texts)
    assert "searchcam" in texts and f"{exp.similarities[1]:.4f}" in texts and f"{exp.cost.forward} forward" in texts
    # both panels show the image with a map overlaid
    assert all(len(ax.images) == 2 for ax in fig.axes[:2])


def test_pair_figure_shows_faithfulness_when_computed(exp):
    fig = pair_figure(exp, k=0)
    assert not any("insertion AUC" in ax.get_xlabel() for ax in fig.axes)  # not computed: not shown, not computed
    assert "faithfulness" not in exp.scores
    f = exp.faithfulness(steps=11)
    fig = pair_figure(exp, k=0)
    labels = [ax.get_xlabel() for ax in fig.axes[:2]]
    assert f"{f['query']['insertion'][0]:.1f}" in labels[0]
    assert f"{f['neighbour']['deletion'][0]:.1f}" in labels[1]
    fig = pair_figure(exp, k=0, scores=False)
    assert not any("insertion" in ax.get_xlabel() for ax in fig.axes)


def test_pair_figure_one_side_and_bad_k(random_images):
    q, nb = random_images(2, seed=22)
    e = explain(tiny_linear(), q, [nb], method="searchcam", side="query")
    fig = pair_figure(e)
    assert len(fig.axes[0].images) == 2 and len(fig.axes[1].images) == 1
    assert "no map" in fig.axes[1].get_title()
    with pytest.raises(IndexError):
        pair_figure(e, k=1)


def test_display_map_scaling():
    m = display_map(np.array([[1.0, 3.0], [2.0, np.nan]]))
    assert m.min() == 0.0 and m.max() == 1.0 and m[0, 1] == 1.0
    assert np.all(display_map(np.full((3, 3), 7.0)) == 0)


def test_explanation_to_json(exp):
    d = explanation_to_json(exp)
    json.dumps(d, allow_nan=False)
    assert d["method"] == "searchcam" and d["k"] == 2 and d["sides"] == ["query", "neighbour"]
    assert d["similarities"] == pytest.approx(exp.similarities.tolist())
    assert d["cost"] == exp.cost.to_dict() and d["params"]["seed"] == 0
    assert d["map_size"] == [64, 64] and "query_map" not in d["pairs"][0] and "faithfulness" not in d
    exp.faithfulness(steps=11)
    one = explanation_to_json(exp, k=1, maps=True)
    json.dumps(one, allow_nan=False)
    assert [p["neighbour"] for p in one["pairs"]] == [1]
    assert np.allclose(np.array(one["pairs"][0]["neighbour_map"]), exp.neighbour_maps[1])
    f = exp.scores[next(k for k in exp.scores if k.startswith("faithfulness"))]
    assert one["pairs"][0]["query_insertion"] == f["query"]["insertion"][1]
    assert one["faithfulness"]["query"]["insertion_mean"] == pytest.approx(f["query"]["insertion_mean"])

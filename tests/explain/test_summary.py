"""JSON summaries of explanations (what `simx explain --json` prints)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simx.explain import explain
from simx.explain.metrics import faithfulness
from simx.explain.summary import explanation_to_json
from simx.models.toy import tiny_linear


@pytest.fixture
def model():
    return tiny_linear()


@pytest.fixture
def exp(random_images, model):
    q, *nbs = random_images(3, seed=21)
    return explain(model, q, nbs, method="searchcam")


def test_explanation_to_json(exp, model):
    d = explanation_to_json(exp)
    json.dumps(d, allow_nan=False)
    assert d["method"] == "searchcam" and d["k"] == 2 and d["sides"] == ["query", "neighbour"]
    assert d["similarities"] == pytest.approx(exp.similarities.tolist())
    assert d["cost"] == exp.cost.to_dict() and d["params"]["seed"] == 0
    assert d["map_size"] == [64, 64] and "query_map" not in d["pairs"][0] and "faithfulness" not in d
    assert d["pairs"][0]["query_baseline"] == 0.0  # searchcam's maps mean "no effect" at 0
    f = faithfulness(exp, model, steps=11)
    one = explanation_to_json(exp, k=1, maps=True)
    json.dumps(one, allow_nan=False)
    assert [p["neighbour"] for p in one["pairs"]] == [1]
    assert np.allclose(np.array(one["pairs"][0]["neighbour_map"]), exp.neighbour_maps[1])
    assert exp.scores["faithfulness_estimate"] is f
    assert one["pairs"][0]["query_insertion"] == f["query"]["insertion"][1]
    assert one["faithfulness"]["query"]["insertion_mean"] == pytest.approx(f["query"]["insertion_mean"])
    assert one["faithfulness"]["direction"] == f["direction"] and one["faithfulness"]["estimate"] is True
    assert one["pairs"][0]["query_better_than_random"] == f["query"]["better_than_random"][1]

"""SANE's vocabulary for an index and what may be shown as shared (issue 12 item 9): the predictor trained for the
index is used when one exists (and the note says which vocabulary), and an attribute that neither image (or only
one) is predicted to have is never presented as shared."""

from __future__ import annotations

import json

import numpy as np
import torch

from simx.attributes import AttributeHead, AttributePredictor, Vocabulary, index_attributes, model_record
from simx.attributes import predictor_dir
from simx.explain import explain
from simx.explain.methods.sane import shared_attribute_rows

from .conftest import colour_model, scene

NAMES = ["colour:blue", "colour:green", "colour:red", "size:huge"]
QUERY = [("square", "red", 18, 34, 10), ("square", "blue", 46, 34, 10)]
NEIGHBOUR = [("square", "red", 40, 20, 10), ("circle", "green", 20, 46, 10)]


def colour_predictor(model) -> AttributePredictor:
    """Colour attributes read their colour channel; 'size:huge' is predicted for no image at all."""
    head = AttributeHead(3, len(NAMES))
    with torch.no_grad():
        head.conv.weight.zero_()
        for a, ch in ((2, 0), (1, 1), (0, 2)):
            head.conv.weight[a, ch, 1, 1] = 10.0
            head.bias[a] = -2.0
        head.bias[3] = -12.0
    return AttributePredictor(head, Vocabulary(names=NAMES, description="colours and sizes of the test gallery"),
                              model_record(model), thresholds=np.full(len(NAMES), 0.5, np.float32))


def test_shared_rows_hold_only_attributes_both_images_are_predicted_to_have():
    model = colour_model()
    pred = colour_predictor(model)
    exp = explain(model, scene(QUERY, 1), [scene(NEIGHBOUR, 2)], method="sane", predictor=pred,
                  saliency="searchcam", candidates="all", removal=False)
    extras = {key: (val[0] if isinstance(val, list) and len(val) == 1 else val) for key, val in exp.extras.items()}
    ranked = {r["attribute"] for r in extras["neighbour_ranking"]}
    assert {"size:huge", "colour:blue", "colour:red"} <= ranked  # "all" candidates rank everything
    rows = shared_attribute_rows(extras)
    assert [r["attribute"] for r in rows] == ["colour:red"]
    for r in rows:
        assert r["query confidence"] >= r["threshold"] and r["neighbour confidence"] >= r["threshold"]
    huge = next(r for r in extras["neighbour_ranking"] if r["attribute"] == "size:huge")
    assert not huge["present"] and not huge["present_other"] and huge["confidence"] < huge["threshold"]


def test_shared_rows_from_hand_made_rankings():
    extras = {"query_ranking": [
        {"attribute": "a", "confidence": 0.9, "confidence_other": 0.8, "threshold": 0.5, "score": 1.0},
        {"attribute": "b", "confidence": 0.2, "confidence_other": 0.1, "threshold": 0.5, "score": 0.9},
        {"attribute": "c", "confidence": 0.9, "confidence_other": 0.1, "threshold": 0.5, "score": 0.8},
        {"attribute": "d", "confidence": 0.1, "confidence_other": 0.1, "threshold": 0.5, "present": True,
         "present_other": True, "score": 0.7},  # annotated in both: shared although not predicted
    ]}
    rows = shared_attribute_rows(extras)
    assert [r["attribute"] for r in rows] == ["a", "d"]
    assert rows[0]["query confidence"] == 0.9 and rows[0]["neighbour confidence"] == 0.8
    assert shared_attribute_rows({}) == []


class _FakeIndex:
    def __init__(self, path, model):
        self.path, self.model, self.name = path, model, "fake"


def test_index_attributes_prefers_the_trained_predictor(tmp_path):
    model = colour_model()
    index = _FakeIndex(tmp_path, model)
    none = index_attributes(index)
    assert none.params == {} and "no attribute predictor is trained" in none.note and "ImageNet" in none.note
    pred = colour_predictor(model)
    pred.save(predictor_dir(index, heat=False))
    found = index_attributes(index)
    assert found.params == {"predictor": str(predictor_dir(index, heat=False))}
    assert "trained for this index (4 attributes; colours and sizes of the test gallery)" in found.note
    # the one trained with saliency supervision wins when both exist
    pred.save(predictor_dir(index, heat=True))
    assert index_attributes(index).params == {"predictor": str(predictor_dir(index, heat=True))}
    # a predictor of another model is not used, and the note says why
    meta_path = predictor_dir(index, heat=True) / "predictor.json"
    for heat in (True, False):
        path = predictor_dir(index, heat) / "predictor.json"
        meta = json.loads(path.read_text())
        meta["model"]["spec"] = "another"
        path.write_text(json.dumps(meta))
    other = index_attributes(index)
    assert other.params == {} and "cannot be used" in other.note and "another" in other.note
    assert meta_path.is_file()

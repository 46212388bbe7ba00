"""The ``sane`` explanation method: picks the planted shared attribute, says so when nothing is shared, falls back
to the ImageNet classifier for the default model, and refuses what it cannot do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simx.attributes import AttributeHead, AttributePredictor, Vocabulary, model_record
from simx.errors import ExplainError
from simx.explain import FEATURE_CACHE, METHODS, REGISTRY, explain
from simx.models.toy import tiny_gap

from .conftest import colour_model, scene

NAMES = ["colour:blue", "colour:green", "colour:red", "pattern:plain"]


def planted_predictor(model, decoy: bool = True) -> AttributePredictor:
    """Attribute c reads colour channel c at the centre tap (AAM = 10 x colour-ness); the decoy 'pattern:plain'
    has a flat map and a large offset: confidently present everywhere but located nowhere."""
    names = NAMES if decoy else NAMES[:3]
    head = AttributeHead(3, len(names))
    channel = {"colour:red": 0, "colour:green": 1, "colour:blue": 2}
    with torch.no_grad():
        head.conv.weight.zero_()
        for a, n in enumerate(names):
            if n in channel:
                head.conv.weight[a, channel[n], 1, 1] = 10.0
                head.bias[a] = -2.0
            else:
                head.bias[a] = 3.0
    return AttributePredictor(head, Vocabulary(names=names), model_record(model))


# query: red square (left) + blue square (right); neighbour: red square + green square -> only red is shared
QUERY = [("square", "red", 18, 34, 10), ("square", "blue", 46, 34, 10)]
NEIGHBOUR = [("square", "red", 40, 20, 10), ("circle", "green", 20, 46, 10)]


def _box_mask(obj, size=64):
    _, _, cx, cy, r = obj
    m = np.zeros((size, size), bool)
    m[cy - r : cy + r + 1, cx - r : cx + r + 1] = True
    return m


def test_sane_is_registered_as_an_attribute_method():
    assert "sane" in METHODS
    spec = REGISTRY["sane"]
    assert spec.kind == "attribute" and spec.needs_features


@pytest.mark.parametrize("rank_by", ["combined", "matching", "removal"])
def test_the_ranking_picks_the_planted_shared_attribute(rank_by):
    model = colour_model()
    pred = planted_predictor(model)
    exp = explain(model, scene(QUERY, 1), [scene(NEIGHBOUR, 2)], method="sane", predictor=pred,
                  saliency="searchcam", rank_by=rank_by)
    assert exp.extras["shared"] == [["pattern:plain", "colour:red"]]  # blue/green are not in both images
    assert exp.extras["message"] == ""
    assert exp.extras["query_best"] == ["colour:red"] and exp.extras["neighbour_best"] == ["colour:red"]
    ranking = {r["attribute"]: r for r in exp.extras["query_ranking"][0]}
    assert set(ranking) == {"pattern:plain", "colour:red"}
    # each term behaves as methods.md 4.4 says: the decoy is more confident but matches and removes nothing
    assert ranking["pattern:plain"]["confidence"] > ranking["colour:red"]["confidence"] > 0.5
    assert ranking["colour:red"]["matching"] > ranking["pattern:plain"]["matching"]
    assert ranking["colour:red"]["removal"] > 0.05 > abs(ranking["pattern:plain"]["removal"])
    # the returned map is the red AAM: it peaks on the red square of each image
    q_peak = np.unravel_index(np.argmax(exp.query_maps[0]), exp.query_maps[0].shape)
    n_peak = np.unravel_index(np.argmax(exp.neighbour_maps[0]), exp.neighbour_maps[0].shape)
    assert _box_mask(QUERY[0])[q_peak] and _box_mask(NEIGHBOUR[0])[n_peak]
    assert exp.extras["query_saliency"].shape == (1, 64, 64)


def test_confidence_only_ranking_prefers_the_confident_decoy_and_attr_weight_trades_off():
    """The confidence-only ranker (attr_weight = 1) is the one the planted decoy fools; pure matching is not."""
    model = colour_model()
    pred = planted_predictor(model)
    args = (model, scene(QUERY, 1), [scene(NEIGHBOUR, 2)])
    conf = explain(*args, method="sane", predictor=pred, saliency="searchcam", rank_by="confidence", side="query")
    assert conf.extras["query_best"] == ["pattern:plain"]
    one = explain(*args, method="sane", predictor=pred, saliency="searchcam", attr_weight=1.0, side="query")
    zero = explain(*args, method="sane", predictor=pred, saliency="searchcam", attr_weight=0.0, side="query")
    assert one.extras["query_best"] == ["pattern:plain"] and zero.extras["query_best"] == ["colour:red"]
    assert zero.params["attr_weight"] == 0.0 and "neighbour_best" not in zero.extras


def test_default_rise_saliency_path_also_finds_it():
    model = colour_model()
    exp = explain(model, scene(QUERY, 1), [scene(NEIGHBOUR, 2)], method="sane", predictor=planted_predictor(model),
                  n_samples=300, side="query", seed=1)
    assert exp.extras["query_best"] == ["colour:red"]
    assert exp.params["saliency"] == "rise" and exp.params["saliency_params"]["n_samples"] == 300
    assert exp.cost.forward >= 300  # the saliency passes are counted


def test_a_pair_sharing_no_attribute_says_so():
    model = colour_model()
    pred = planted_predictor(model, decoy=False)
    q = scene([("square", "red", 32, 32, 12)], 3)
    n = scene([("circle", "green", 32, 32, 12)], 4)
    exp = explain(model, q, [n], method="sane", predictor=pred, saliency="searchcam")
    assert exp.extras["shared"] == [[]]
    assert "share no attribute" in exp.extras["message"] and exp.extras["messages"][0]
    assert exp.extras["query_best"] == [None] and exp.extras["neighbour_best"] == [None]
    assert exp.extras["query_ranking"] == [[]]
    assert not exp.query_maps.any() and not exp.neighbour_maps.any()


def test_annotations_decide_what_is_shared_when_given():
    model = colour_model()
    pred = planted_predictor(model)
    q, n = scene(QUERY, 1), scene(NEIGHBOUR, 2)
    exp = explain(model, q, [n, q], method="sane", predictor=pred, saliency="searchcam",
                  query_attributes=["colour:red", "colour:blue"],
                  neighbour_attributes=[["colour:green"], ["colour:blue", "colour:red"]])
    assert exp.extras["shared"][0] == [] and "pair 0" in exp.extras["message"]
    assert set(exp.extras["shared"][1]) == {"colour:blue", "colour:red"} and exp.extras["messages"][1] is None
    assert exp.extras["query_best"][0] is None and exp.extras["query_best"][1] in {"colour:blue", "colour:red"}


def test_sane_without_a_predictor_on_a_model_without_classifier_is_a_clear_error():
    with pytest.raises(ExplainError, match="simx attributes train"):
        explain(tiny_gap(), scene(QUERY, 1), [scene(NEIGHBOUR, 2)], method="sane", saliency="searchcam")


def test_a_predictor_of_another_model_is_refused():
    pred = planted_predictor(colour_model())
    with pytest.raises(ExplainError, match="another model"):
        explain(tiny_gap(), scene(QUERY, 1), [scene(NEIGHBOUR, 2)], method="sane", predictor=pred,
                saliency="searchcam")


def test_bad_parameters_are_refused():
    model = colour_model()
    pred = planted_predictor(model)
    for kwargs, msg in (({"attr_weight": 1.5}, "attr_weight"), ({"rank_by": "votes"}, "rank_by"),
                        ({"removal_fraction": 0.0}, "removal_fraction"), ({"saliency": "sane"}, "saliency"),
                        ({"candidates": "some"}, "candidates")):
        with pytest.raises(ExplainError, match=msg):
            explain(model, scene(QUERY, 1), [scene(NEIGHBOUR, 2)], method="sane", predictor=pred, **kwargs)


def test_a_saved_predictor_folder_can_be_passed_by_path(tmp_path):
    model = colour_model()
    planted_predictor(model).save(tmp_path / "p")
    exp = explain(model, scene(QUERY, 1), [scene(NEIGHBOUR, 2)], method="sane", predictor=tmp_path / "p",
                  saliency="searchcam", side="query")
    assert exp.extras["query_best"] == ["colour:red"]
    assert str(tmp_path / "p") in exp.extras["attributes"]


@pytest.mark.slow
def test_default_model_falls_back_to_imagenet_classes_with_cams():
    """Zero configuration: the default model's ImageNet classes (grouped) and CAMs explain a cat pair."""
    from skimage import data as skdata
    from PIL import Image

    from simx.models import load_model

    model = load_model("default", device="cpu")
    cat = Image.fromarray(skdata.chelsea())
    flipped = cat.transpose(Image.FLIP_LEFT_RIGHT)
    exp = explain(model, cat, [flipped], method="sane", n_samples=60, side="query")
    shared = exp.extras["shared"][0]
    assert "animals" in shared and "animals/mammals/cats" in shared
    best = exp.extras["query_best"][0]
    assert best is not None and best.startswith("animals")
    assert "ImageNet" in exp.extras["attributes"] and exp.extras["vocabulary_size"] > 1000
    assert exp.query_feature_maps.shape[-2:] == (7, 7)


def test_given_saliency_maps_replace_the_saliency_method():
    model = colour_model()
    pred = planted_predictor(model)
    args = (model, scene(QUERY, 1), [scene(NEIGHBOUR, 2)])
    first = explain(*args, method="sane", predictor=pred, n_samples=200, side="query", seed=2)
    again = explain(*args, method="sane", predictor=pred, side="query",
                    saliency_maps={"query": first.extras["query_saliency"]})
    assert again.extras["query_ranking"] == first.extras["query_ranking"]
    assert again.params["saliency_params"] == {"given": True}
    assert again.cost.forward < 200 <= first.cost.forward
    with pytest.raises(ExplainError, match="saliency_maps"):
        explain(*args, method="sane", predictor=pred, side="query", saliency_maps={"query": np.zeros((2, 64, 64))})


def test_removal_can_be_skipped_to_save_forwards():
    model = colour_model()
    pred = planted_predictor(model)
    args = (model, scene(QUERY, 1), [scene(NEIGHBOUR, 2)])
    full = explain(*args, method="sane", predictor=pred, saliency="searchcam", side="query")
    FEATURE_CACHE.clear()
    cheap = explain(*args, method="sane", predictor=pred, saliency="searchcam", side="query", removal=False)
    assert cheap.cost.forward == full.cost.forward - len(full.extras["query_ranking"][0])
    assert all(r["removal"] == 0.0 for r in cheap.extras["query_ranking"][0])
    assert cheap.extras["query_best"] == ["colour:red"]
    with pytest.raises(ExplainError, match="removal=False"):
        explain(*args, method="sane", predictor=pred, saliency="searchcam", removal=False, rank_by="removal")

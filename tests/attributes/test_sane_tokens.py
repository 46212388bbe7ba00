"""SANE on a transformer (issue 13): a class-token ViT has no ImageNet class activation maps, so SANE runs with an
attribute predictor trained on the ViT's own patch-token map, and explains pairs on both sides with it."""

from __future__ import annotations

import numpy as np
import pytest

from simx.attribute_training import TrainConfig, train_predictor
from simx.data import open_gallery
from simx.errors import ExplainError
from simx.explain import PairContext, explain
from simx.models import toy

from .conftest import scene

QUERY = [("square", "red", 18, 34, 10), ("square", "blue", 46, 34, 10)]
NEIGHBOUR = [("circle", "red", 40, 20, 10), ("circle", "green", 20, 46, 10)]


@pytest.fixture(scope="module")
def vit_predictor(tmp_path_factory, shapes_manifest):
    model = toy.tiny_vit_token()
    cache = tmp_path_factory.mktemp("vit-attributes")
    result = train_predictor(model, open_gallery(shapes_manifest), cache / "predictor",
                             TrainConfig(epochs=15, heat=False, seed=0), cache_dir=cache, progress=False)
    return model, result


def test_a_predictor_trained_on_vit_tokens_explains_pairs_with_sane(vit_predictor):
    model, result = vit_predictor
    assert model.num_prefix_tokens == 1 and model.layer == "blocks.1"  # class token; map = patch tokens
    metrics = result.metrics
    assert metrics["test_map"] > metrics["test_chance_map"] + 0.1, metrics  # learned from the tokens, not chance
    pred = result.predictor
    exp = explain(model, scene(QUERY, 1), [scene(NEIGHBOUR, 2), scene(QUERY, 1)], method="sane", predictor=pred,
                  saliency="gradcam")
    assert exp.query_maps.shape == exp.neighbour_maps.shape == (2, 32, 32)
    assert np.isfinite(exp.query_maps).all() and np.isfinite(exp.neighbour_maps).all()
    assert exp.extras["attributes"] == pred.describe()
    names = set(pred.vocabulary.names)
    assert exp.extras["shared"][1], "a pair of identical images shares its predicted attributes"
    for side in ("query", "neighbour"):
        for j, best in enumerate(exp.extras[f"{side}_best"]):
            shared = exp.extras["shared"][j]
            assert (best in shared) if shared else best is None, (side, j, best, shared)
            ranked = [row["attribute"] for row in exp.extras[f"{side}_ranking"][j]]
            assert set(ranked) <= names and set(ranked) == set(shared)
    # the map shown for pair j is the chosen attribute's map on the ViT's patch grid
    ctx = PairContext(model, scene(QUERY, 1), [scene(QUERY, 1)])
    maps, _ = pred.attribute_maps(model, ctx.query, ctx.query_features)  # (1, A, 4, 4)
    a = pred.vocabulary.index(exp.extras["query_best"][1])
    assert exp.query_feature_maps.shape == (2, 4, 4)
    np.testing.assert_allclose(exp.query_feature_maps[1], maps[0, a].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_the_vit_predictor_is_refused_for_another_transformer(vit_predictor):
    _, result = vit_predictor
    with pytest.raises(ExplainError):
        explain(toy.tiny_vit_avg(), scene(QUERY, 1), [scene(NEIGHBOUR, 2)], method="sane",
                predictor=result.predictor, saliency="gradcam")

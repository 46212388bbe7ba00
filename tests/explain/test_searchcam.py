"""searchcam (methods.md 2.2): exact sums on GAP + linear models, refusals, planted evidence, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from simx.errors import ExplainError
from simx.explain import explain
from simx.models.toy import tiny_gap, tiny_linear, tiny_mlp


def _embeddings(model, query, neighbours):
    with torch.no_grad():
        eq = model.embed(model.preprocess_batch([query]))
        en = model.embed(model.preprocess_batch(neighbours))
    return eq, en


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_searchcam_maps_sum_to_similarity_minus_bias(metric, random_images):
    model = tiny_linear(metric=metric, seed=3)
    q, *nbs = random_images(6, seed=1)
    exp = explain(model, q, nbs, method="searchcam")
    eq, en = _embeddings(model, q, nbs)
    b = model.net["head"].bias.detach()
    s = model.similarity(eq, en)[0].numpy()
    np.testing.assert_allclose(exp.similarities, s, rtol=1e-5, atol=1e-6)
    norms = (eq.norm(dim=1) * en.norm(dim=1)).numpy() if metric == "cosine" else np.ones(len(nbs))
    # neighbour map on y_k: sum_j = s_k - <e(x), b> / norms; query map against y_k: sum_j = s_k - <e(y_k), b> / norms
    nb_bias = (eq @ b).numpy() / norms
    q_bias = (en @ b).numpy() / norms
    np.testing.assert_allclose(exp.neighbour_feature_maps.sum(axis=(1, 2)), s - nb_bias, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(exp.query_feature_maps.sum(axis=(1, 2)), s - q_bias, rtol=1e-4, atol=1e-5)
    assert np.abs(nb_bias).max() > 1e-3  # the bias term is really there, so the subtraction is tested
    assert exp.cost.backward == 0 and exp.cost.forward == len(nbs) + 1


def test_searchcam_cosine_without_bias_sums_to_similarity(random_images):
    model = tiny_gap(metric="cosine", seed=1)
    q, *nbs = random_images(4, seed=2)
    exp = explain(model, q, nbs, method="searchcam")
    np.testing.assert_allclose(exp.neighbour_feature_maps.sum(axis=(1, 2)), exp.similarities, rtol=1e-5)
    np.testing.assert_allclose(exp.query_feature_maps.sum(axis=(1, 2)), exp.similarities, rtol=1e-5)
    # the pixel maps are the bilinear upsampling: same mean, scaled by the number of pixels per cell
    h, w = exp.neighbour_feature_maps.shape[1:]
    H, W = exp.neighbour_maps.shape[1:]
    np.testing.assert_allclose(exp.neighbour_maps.sum(axis=(1, 2)) * h * w / (H * W), exp.similarities, rtol=1e-3)


@pytest.mark.parametrize("make", [lambda: tiny_linear(metric="l2"), lambda: tiny_linear(pool="max"),
                                  lambda: tiny_mlp()], ids=["l2", "gmp", "mlp"])
def test_searchcam_refuses_models_without_a_closed_form(make, random_images):
    q, n = random_images(2)
    with pytest.raises(ExplainError):
        explain(make(), q, [n], method="searchcam")


def test_searchcam_planted_evidence(planted_model, check_planted):
    model, box = planted_model(metric="cosine")
    check_planted(model, box, "searchcam")


def test_searchcam_deterministic_k1_k16_consistent(random_images):
    model = tiny_linear(metric="cosine", seed=5)
    q, *nbs = random_images(17, seed=3)
    a = explain(model, q, nbs, method="searchcam")
    b = explain(model, q, nbs, method="searchcam")
    np.testing.assert_array_equal(a.query_maps, b.query_maps)
    np.testing.assert_array_equal(a.neighbour_maps, b.neighbour_maps)
    assert a.query_maps.shape == (16, 64, 64) and a.neighbour_feature_maps.shape == (16, 16, 16)
    one = explain(model, q, nbs[7:8], method="searchcam")
    assert one.query_maps.shape == (1, 64, 64)
    np.testing.assert_allclose(one.query_feature_maps[0], a.query_feature_maps[7], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(one.neighbour_feature_maps[0], a.neighbour_feature_maps[7], rtol=1e-5, atol=1e-7)


def test_searchcam_query_against_itself_is_symmetric(random_images):
    model = tiny_linear(metric="ip", seed=2)
    (q,) = random_images(1, seed=4)
    exp = explain(model, q, [q], method="searchcam")
    np.testing.assert_allclose(exp.query_feature_maps, exp.neighbour_feature_maps, rtol=1e-6)
    eq, _ = _embeddings(model, q, [q])
    np.testing.assert_allclose(exp.similarities[0], float((eq @ eq.T)[0, 0]), rtol=1e-5)


@pytest.mark.parametrize("bad", ["empty", "size", "grey_tensor"])
def test_searchcam_bad_inputs(bad, random_images):
    model = tiny_linear()
    (q,) = random_images(1)
    nbs = {"empty": [], "size": [torch.zeros(3, 32, 32)], "grey_tensor": [torch.zeros(1, 64, 64)]}[bad]
    with pytest.raises(ExplainError):
        explain(model, q, nbs, method="searchcam")


def test_searchcam_grey_pil_image_is_accepted(random_images):
    model = tiny_linear()
    q, n = random_images(2, mode="L")
    exp = explain(model, q, [n, n], method="searchcam")
    assert exp.query_maps.shape == (2, 64, 64) and np.isfinite(exp.query_maps).all()
    np.testing.assert_allclose(exp.neighbour_maps[0], exp.neighbour_maps[1])


def test_searchcam_uses_head_weight(random_images):
    """With W, the map is <e(x), W F(y)[:, j]> / n: check one cell against a direct computation."""
    model = tiny_linear(metric="ip", seed=4, bias=False)
    q, n = random_images(2, seed=9)
    exp = explain(model, q, [n], method="searchcam", side="neighbour")
    with torch.no_grad():
        fy = model.features(model.preprocess_batch([n]))[0]
        eq = model.embed(model.preprocess_batch([q]))[0]
    W: nn.Linear = model.net["head"]
    hw = fy.shape[1] * fy.shape[2]
    expected = torch.einsum("d,dc,chw->hw", eq, W.weight, fy) / hw
    np.testing.assert_allclose(exp.neighbour_feature_maps[0], expected.numpy(), rtol=1e-4, atol=1e-6)
    assert exp.query_maps is None


def test_feature_cache_never_serves_another_model(random_images, monkeypatch):
    """Regression: the cache was keyed by id(model); a new model (same spec, other seed) allocated at a collected
    model's address read the old model's features and reported wrong similarities. Address reuse is simulated by
    making id() constant inside the engine."""
    from simx.explain import engine

    monkeypatch.setattr(engine, "id", lambda obj: 0, raising=False)
    q, *nbs = random_images(3, seed=30)
    for seed in range(3):
        model = tiny_linear(metric="ip", seed=seed)
        exp = explain(model, q, nbs, method="searchcam", side="neighbour")
        eq, en = _embeddings(model, q, nbs)
        np.testing.assert_allclose(exp.similarities, model.similarity(eq, en)[0].numpy(), rtol=1e-5, atol=1e-6)


def test_planted_model_ignores_pixels_outside_its_box(planted_model):
    """The fixture's promise: any change outside the box leaves the embedding bit-identical; inside it does not."""
    model, (x0, y0, x1, y1) = planted_model()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 64, 64, generator=g)
    noise = 5 * torch.randn(4, 3, 64, 64, generator=g)
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    with torch.no_grad():
        e = model.embed(x)
        assert torch.equal(model.embed(torch.where(outside, x + noise, x)), e)
        assert (model.embed(torch.where(outside, x, x + noise)) - e).abs().max() > 1e-2
        f = model.features(x)
    cells = torch.zeros(f.shape[-2:], dtype=torch.bool)
    cells[y0 // 4 : y1 // 4, x0 // 4 : x1 // 4] = True
    assert (f[:, :, ~cells] == 0).all() and (f[:, :, cells] > 0).any()

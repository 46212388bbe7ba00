"""sfam (methods.md 2.4): exact and share decompositions, Euclidean channel ranking, linear heads, no backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simx.errors import ExplainError
from simx.explain import explain
from simx.models.toy import tiny_gap, tiny_linear, tiny_mlp


def _pooled(model, images):
    with torch.no_grad():
        f = model.features(model.preprocess_batch(images))
    return f.mean(dim=(2, 3)), f


def test_sfam_exact_variant_map_mean_is_the_cosine(random_images):
    model = tiny_gap(metric="cosine", seed=6)
    q, *nbs = random_images(5, seed=21)
    exp = explain(model, q, nbs, method="sfam", variant="exact")
    assert exp.params["relu"] is False and exp.params["variant"] == "exact"
    assert exp.cost.backward == 0 and exp.cost.forward == 5
    np.testing.assert_allclose(exp.neighbour_feature_maps.mean(axis=(1, 2)), exp.similarities, rtol=1e-5)
    np.testing.assert_allclose(exp.query_feature_maps.mean(axis=(1, 2)), exp.similarities, rtol=1e-5)
    # it is the search CAM of 2.2 times the number of positions
    sc = explain(model, q, nbs, method="searchcam")
    n = exp.neighbour_feature_maps.shape[1] * exp.neighbour_feature_maps.shape[2]
    np.testing.assert_allclose(exp.neighbour_feature_maps, sc.neighbour_feature_maps * n, rtol=1e-4, atol=1e-7)


def test_sfam_share_variant_cis_sums_to_the_cosine(random_images):
    model = tiny_gap(metric="cosine", seed=7)
    q, *nbs = random_images(5, seed=22)
    exp = explain(model, q, nbs, method="sfam")  # variant="share" is the default
    assert exp.params["variant"] == "share" and exp.params["relu"] is True
    for side in ("query", "neighbour"):
        cis = exp.extras[f"{side}_channel_weights"]
        assert cis.shape == (4, model.feature_channels)
        np.testing.assert_allclose(cis.sum(axis=1), exp.similarities, rtol=1e-5)
    # CIS_k = f_k(x) f_k(y) / (||f(x)|| ||f(y)||), symmetric in x and y for an identity head
    (pq,), _ = _pooled(model, [q])
    pn, _ = _pooled(model, nbs)
    expected = (pq * pn / (pq.norm() * pn.norm(dim=1, keepdim=True))).numpy()
    np.testing.assert_allclose(exp.extras["neighbour_channel_weights"], expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(exp.extras["query_channel_weights"], expected, rtol=1e-5, atol=1e-8)
    # the map is ReLU(sum_k CIS_k F[k]); features are >= 0 here and CIS >= 0, so it is positive
    assert (exp.neighbour_feature_maps >= 0).all() and exp.neighbour_feature_maps.max() > 0


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_sfam_pushes_contributions_through_a_linear_head(metric, random_images):
    """With e = W p + b: share CIS sums, and exact map means, equal s minus the bias term <b, e(other)>/N."""
    model = tiny_linear(metric=metric, seed=8)
    q, *nbs = random_images(4, seed=23)
    share = explain(model, q, nbs, method="sfam")
    exact = explain(model, q, nbs, method="sfam", variant="exact")
    for side in ("query", "neighbour"):
        bias = share.extras[f"{side}_bias_term"]
        assert np.abs(bias).max() > 1e-3
        np.testing.assert_allclose(share.extras[f"{side}_channel_weights"].sum(1), share.similarities - bias,
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(getattr(exact, f"{side}_feature_maps").mean(axis=(1, 2)),
                                   exact.similarities - bias, rtol=1e-4, atol=1e-6)
    # the channel contribution sum_d W[d, k] p_k(x) e_d(y) / N, checked for the query map
    W = model.net["head"].weight.detach()
    (pq,), _ = _pooled(model, [q])
    with torch.no_grad():
        eq, en = model.embed(model.preprocess_batch([q])), model.embed(model.preprocess_batch(nbs))
    N = (eq.norm() * en.norm(dim=1, keepdim=True)) if metric == "cosine" else 1.0
    expected = (pq[None] * (en @ W) / N).numpy()
    np.testing.assert_allclose(share.extras["query_channel_weights"], expected, rtol=1e-4, atol=1e-7)


def test_sfam_euclidean_ranks_channels_by_agreement(random_images):
    model = tiny_gap(metric="l2", seed=9)
    q, *nbs = random_images(4, seed=24)
    gap = explain(model, q, nbs, method="sfam")
    ex = explain(model, q, nbs, method="sfam", euclid_importance="exp")
    assert gap.params["euclid_importance"] == "gap" and "variant" not in gap.params
    (pq,), _ = _pooled(model, [q])
    pn, _ = _pooled(model, nbs)
    delta = ((pq - pn) ** 2).numpy()  # (K, C); sum_k delta_k = d^2 = -s
    np.testing.assert_allclose(delta.sum(1), -gap.similarities, rtol=1e-4)
    for k in range(len(nbs)):
        for cis in (gap.extras["neighbour_channel_weights"][k], ex.extras["neighbour_channel_weights"][k],
                    gap.extras["query_channel_weights"][k]):
            # best-agreeing channel first, worst last, and the same order throughout
            assert np.argmax(cis) == np.argmin(delta[k]) and np.argmin(cis) == np.argmax(delta[k])
            assert (np.diff(cis[np.argsort(delta[k])]) <= 1e-7).all()
        np.testing.assert_allclose(gap.extras["neighbour_channel_weights"][k], (delta[k].max() - delta[k]) / 2,
                                   rtol=1e-4, atol=1e-8)
        tau = np.abs(delta[k]).mean()
        np.testing.assert_allclose(ex.extras["query_channel_weights"][k], np.exp(-delta[k] / tau), rtol=1e-4)
    fixed = explain(model, q, nbs, method="sfam", euclid_importance="exp", tau=0.5)
    assert fixed.params["tau"] == 0.5
    np.testing.assert_allclose(fixed.extras["query_channel_weights"], np.exp(-delta / 0.5), rtol=1e-4)


def test_sfam_euclidean_through_a_linear_head_splits_the_squared_distance(random_images):
    """delta_k = Dp_k (W^T W Dp)_k sums to ||e(x) - e(y)||^2 = -s exactly; the bias cancels."""
    model = tiny_linear(metric="l2", seed=10)
    q, *nbs = random_images(4, seed=25)
    exp = explain(model, q, nbs, method="sfam")
    W = model.net["head"].weight.detach()
    (pq,), _ = _pooled(model, [q])
    pn, _ = _pooled(model, nbs)
    dp = pq - pn
    delta = (dp * (dp @ W.T @ W)).numpy()
    np.testing.assert_allclose(delta.sum(1), -exp.similarities, rtol=1e-4)
    np.testing.assert_allclose(exp.extras["neighbour_channel_weights"], (delta.max(1, keepdims=True) - delta) / 2,
                               rtol=1e-4, atol=1e-7)


def test_sfam_needs_a_pooled_head_or_the_pooled_space(random_images):
    q, *nbs = random_images(3, seed=26)
    with pytest.raises(ExplainError, match="space='pooled'"):
        explain(tiny_mlp(), q, nbs, method="sfam")
    exp = explain(tiny_mlp(metric="cosine"), q, nbs, method="sfam", space="pooled", variant="exact")
    # the maps now explain the cosine of the GAP-pooled explained layer
    np.testing.assert_allclose(exp.neighbour_feature_maps.mean(axis=(1, 2)), exp.extras["pooled_similarities"],
                               rtol=1e-5)
    assert not np.allclose(exp.extras["pooled_similarities"], exp.similarities)


@pytest.mark.parametrize("params", [{"variant": "product"}, {"euclid_importance": "rank"}, {"space": "pixels"},
                                    {"tau": 0.0}])
def test_sfam_rejects_bad_parameters(params, random_images):
    q, n = random_images(2)
    with pytest.raises(ExplainError):
        explain(tiny_linear(), q, [n], method="sfam", **params)


def test_sfam_max_pooled_head(random_images):
    """GMP: CIS uses the max-pooled vector; the share CIS still sums to the cosine."""
    model = tiny_linear(metric="cosine", pool="max", bias=False)
    q, *nbs = random_images(3, seed=27)
    exp = explain(model, q, nbs, method="sfam")
    assert exp.params["pool"] == "max"
    np.testing.assert_allclose(exp.extras["neighbour_channel_weights"].sum(1), exp.similarities, rtol=1e-4)


def test_sfam_planted_evidence(planted_model, check_planted):
    model, box = planted_model(metric="cosine")
    check_planted(model, box, "sfam")
    check_planted(model, box, "sfam", variant="exact", relu=True)
    model, box = planted_model(metric="l2", box=(4, 40, 24, 64))
    check_planted(model, box, "sfam")
    check_planted(model, box, "sfam", euclid_importance="exp")


def test_sfam_deterministic_k1_k16_and_self(random_images):
    model = tiny_linear(metric="cosine", seed=11)
    q, *nbs = random_images(17, seed=28)
    a = explain(model, q, nbs, method="sfam")
    b = explain(model, q, nbs, method="sfam")
    np.testing.assert_array_equal(a.query_maps, b.query_maps)
    assert a.neighbour_maps.shape == (16, 64, 64)
    one = explain(model, q, [nbs[5]], method="sfam")
    np.testing.assert_allclose(one.query_feature_maps[0], a.query_feature_maps[5], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(one.neighbour_feature_maps[0], a.neighbour_feature_maps[5], rtol=1e-5, atol=1e-8)
    self_ = explain(model, q, [q], method="sfam")
    np.testing.assert_allclose(self_.query_feature_maps, self_.neighbour_feature_maps, rtol=1e-6)
    l2 = explain(tiny_gap(metric="l2"), q, [q], method="sfam")
    assert np.abs(l2.query_feature_maps).max() == 0  # d = 0: every channel agrees equally, max - delta = 0


@pytest.mark.parametrize("bad", ["empty", "size", "grey_tensor"])
def test_sfam_bad_inputs(bad, random_images):
    (q,) = random_images(1)
    nbs = {"empty": [], "size": [torch.zeros(3, 64, 32)], "grey_tensor": [torch.zeros(1, 64, 64)]}[bad]
    with pytest.raises(ExplainError):
        explain(tiny_linear(), q, nbs, method="sfam")


def test_sfam_grey_pil_image_is_accepted(random_images):
    q, n = random_images(2, seed=29, mode="L")
    exp = explain(tiny_linear(), q, [n], method="sfam")
    assert exp.query_maps.shape == (1, 64, 64) and np.isfinite(exp.query_maps).all()

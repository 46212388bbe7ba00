"""jointcam (methods.md 6.6): exact against the brute-force feature-level game, bias bookkeeping, marginals."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch

from simx.errors import ExplainError
from simx.explain import PairContext, explain
from simx.explain.methods.jointcam import attribute as jointcam
from simx.models.toy import tiny_linear, tiny_mlp


def _inputs(seed: int, k: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, size, size, generator=g), torch.randn(k, 3, size, size, generator=g)


def _drop_each(feats: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) -> (n + 1, C, h, w): the full map, then the map with position i zeroed, i = 0..n-1."""
    _, c, h, w = feats.shape
    n = h * w
    out = feats.expand(n + 1, c, h, w).clone().reshape(n + 1, c, n)
    out[torch.arange(1, n + 1), :, torch.arange(n)] = 0.0
    return out.reshape(n + 1, c, h, w)


def brute_force_joint(model, fx: torch.Tensor, fy: torch.Tensor) -> np.ndarray:
    """J[i, j] = v(N) - v(N - i) - v(N - j) + v(N - i - j) of the feature-level game of 6.6 (a removed position
    contributes a zero feature vector; the pooling denominator n and, for cosine, the norms of the unmasked
    embeddings are held fixed), in float64 from the model's own head."""
    m64 = copy.deepcopy(model)
    m64.net.double()
    with torch.no_grad():
        ex = m64.head(_drop_each(fx.double()))  # (n_x + 1, D): row 0 unmasked
        ey = m64.head(_drop_each(fy.double()))
    if model.metric == "ip":
        v = ex @ ey.T
    elif model.metric == "cosine":
        v = ex @ ey.T / (ex[0].norm() * ey[0].norm())
    else:
        v = -torch.cdist(ex, ey).pow(2)
    return (v[0, 0] - v[1:, :1] - v[:1, 1:] + v[1:, 1:]).numpy()


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_equals_feature_level_mixed_derivative_for_every_cell_pair(metric):
    model = tiny_linear(metric=metric, size=32, seed=3)  # GAP + affine head with bias, 8 x 8 = 64 cells
    q, ns = _inputs(1)
    exp = explain(model, q, ns, method="jointcam")
    ctx = PairContext(model, q, ns)
    assert exp.joint.shape == (2, 64, 64)
    for k in range(2):
        ref = brute_force_joint(model, ctx.query_features, ctx.neighbour_features[k : k + 1])
        scale = np.abs(ref).max()
        assert scale > 0
        np.testing.assert_allclose(exp.joint[k], ref, atol=2e-5 * scale, rtol=0)
    assert exp.query_cells == {"kind": "grid", "shape": (8, 8), "size": (32, 32)}
    assert exp.neighbour_cells == exp.query_cells


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("pool", ["avg", "max"])
def test_sum_plus_bias_terms_equals_similarity(metric, pool):
    model = tiny_linear(metric=metric, pool=pool, size=32, seed=1)
    q, ns = _inputs(2, k=3)
    exp = explain(model, q, ns, method="jointcam")
    total = exp.joint.astype(np.float64).sum(axis=(1, 2)) + exp.extras["bias_terms"]
    np.testing.assert_allclose(total, exp.similarities, rtol=1e-4, atol=1e-5)
    # the bias bookkeeping is itemised: query map + neighbour map + constant
    ex = exp.extras
    parts = ex["query_bias"].sum((1, 2)) + ex["neighbour_bias"].sum((1, 2)) + ex["bias_constant"]
    np.testing.assert_allclose(parts, exp.extras["bias_terms"], rtol=1e-5, atol=1e-6)
    if metric == "ip" and pool == "avg":
        # the bias terms are not zero here, so the check above is not vacuous
        assert np.abs(exp.extras["bias_terms"]).min() > 1e-3


def test_bias_free_head_sum_is_similarity_and_bias_terms_vanish():
    model = tiny_linear(metric="ip", size=32, bias=False)
    q, ns = _inputs(5)
    exp = explain(model, q, ns, method="jointcam")
    np.testing.assert_allclose(exp.extras["bias_terms"], 0.0, atol=1e-7)
    np.testing.assert_allclose(exp.joint.sum(axis=(1, 2)), exp.similarities, rtol=1e-5)


@pytest.mark.parametrize("metric", ["ip", "cosine"])
@pytest.mark.parametrize("bias", [True, False])
def test_marginals_equal_searchcam(metric, bias):
    model = tiny_linear(metric=metric, size=32, bias=bias, seed=2)
    q, ns = _inputs(3)
    jc = explain(model, q, ns, method="jointcam")
    sc = explain(model, q, ns, method="searchcam")
    atol = 1e-6 * np.abs(sc.query_feature_maps).max()
    np.testing.assert_allclose(jc.query_feature_maps, sc.query_feature_maps, atol=atol, rtol=1e-5)
    np.testing.assert_allclose(jc.neighbour_feature_maps, sc.neighbour_feature_maps, atol=atol, rtol=1e-5)
    # marginals are the row / column sums of K plus the first-order bias maps (zero without bias)
    kk, h, w = jc.query_feature_maps.shape
    rows = jc.joint.sum(2).reshape(kk, h, w) + jc.extras["query_bias"]
    cols = jc.joint.sum(1).reshape(kk, h, w) + jc.extras["neighbour_bias"]
    np.testing.assert_allclose(rows, jc.query_feature_maps, atol=atol)
    np.testing.assert_allclose(cols, jc.neighbour_feature_maps, atol=atol)
    if not bias:
        np.testing.assert_allclose(jc.joint.sum(2).reshape(kk, h, w), sc.query_feature_maps, atol=atol, rtol=1e-5)


def test_gmp_variant_keeps_only_argmax_positions():
    """6.6 GMP: K = (W F~(x))^T (W F~(y)) with F~ zero except each channel's arg-max position."""
    model = tiny_linear(metric="ip", pool="max", size=32, seed=4)
    q, ns = _inputs(4, k=1)
    exp = explain(model, q, ns, method="jointcam")
    ctx = PairContext(model, q, ns)
    fx = ctx.query_features[0].reshape(16, -1)
    fy = ctx.neighbour_features[0].reshape(16, -1)
    w = model.net["head"].weight.detach()

    def tilde(f):
        t = torch.zeros_like(f)
        idx = f.argmax(1)
        t[torch.arange(f.shape[0]), idx] = f[torch.arange(f.shape[0]), idx]
        return t

    ref = (w @ tilde(fx)).T @ (w @ tilde(fy))
    np.testing.assert_allclose(exp.joint[0], ref.numpy(), rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    winners = set(fx.argmax(1).tolist())
    losers = [i for i in range(fx.shape[1]) if i not in winners]
    assert losers and np.abs(exp.joint[0][losers]).max() == 0.0


def test_no_extra_pass_and_fast_after_embeddings_exist():
    model = tiny_linear(metric="cosine", size=64)
    q, ns = _inputs(6, k=8, size=64)
    ctx = PairContext(model, q, ns)
    _ = ctx.query_features, ctx.neighbour_features  # the cached unperturbed pass
    before = (ctx.cost.forward, ctx.cost.backward)
    times = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny einsum: one thread, and no spinning workers on a shared test machine
    try:
        for _ in range(20):
            t0 = time.perf_counter()
            out = jointcam(ctx, "both")
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    assert (ctx.cost.forward, ctx.cost.backward) == before == (9, 0)
    assert out.joint.shape == (8, 256, 256)
    assert min(times) / 8 < 0.020  # < 20 ms per pair (best of 20: robust to a loaded test machine)


def test_side_controls_marginals_only():
    model = tiny_linear(metric="ip", size=32)
    q, ns = _inputs(7)
    exp = explain(model, q, ns, method="jointcam", side="query")
    assert exp.query_feature_maps is not None and exp.neighbour_feature_maps is None
    assert exp.joint is not None


def test_refuses_non_linear_head_with_a_pointer():
    model = tiny_mlp(size=32)
    q, ns = _inputs(8)
    with pytest.raises(ExplainError, match="jointhessian"):
        explain(model, q, ns, method="jointcam")

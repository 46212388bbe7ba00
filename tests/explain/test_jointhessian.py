"""jointhessian (methods.md 6.7): equals jointcam for linear heads, matches finite differences otherwise."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from simx.explain import PairContext, explain
from simx.models.toy import PooledModel, _linear, tiny_linear, tiny_mlp, tiny_trunk


def _inputs(seed: int, k: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, size, size, generator=g), torch.randn(k, 3, size, size, generator=g)


def _scaled_each(feats: torch.Tensor, h: float) -> torch.Tensor:
    """(1, C, hh, ww) -> (2, n, C, hh, ww): position i scaled by (1 + h) and by (1 - h)."""
    _, c, hh, ww = feats.shape
    n = hh * ww
    out = feats.expand(2, n, c, hh, ww).clone().reshape(2, n, c, n)
    idx = torch.arange(n)
    out[0, idx, :, idx] *= 1 + h
    out[1, idx, :, idx] *= 1 - h
    return out.reshape(2, n, c, hh, ww)


def _sim64(model):
    """The model's similarity in float64 (SimModel.similarity casts to float32)."""

    def sim(a, b):
        if model.metric == "cosine":
            return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
        if model.metric == "ip":
            return a @ b.T
        return -torch.cdist(a, b).pow(2)

    return sim


def fd_joint(model, fx, fy, h: float = 1e-4) -> np.ndarray:
    """d^2 s / (d a_i d b_j) at 0 where F(x)[:, i] -> (1 + a_i) F(x)[:, i], F(y)[:, j] -> (1 + b_j) F(y)[:, j]: the
    second-order Taylor cross term F(x)[:, i]^T (d^2 s / dF_i dF_j) F(y)[:, j], central differences in float64."""
    m64 = copy.deepcopy(model)
    m64.net.double()
    sim = _sim64(model)
    with torch.no_grad():
        sx, sy = _scaled_each(fx.double(), h), _scaled_each(fy.double(), h)
        ex = m64.head(sx.flatten(0, 1)).reshape(2, sx.shape[1], -1)
        ey = m64.head(sy.flatten(0, 1)).reshape(2, sy.shape[1], -1)
        s = [[sim(ex[a], ey[b]) for b in (0, 1)] for a in (0, 1)]
    return ((s[0][0] - s[0][1] - s[1][0] + s[1][1]) / (4 * h * h)).numpy()


def _close(a, b, rel=1e-4):
    scale = float(np.abs(b).max())
    assert scale > 0
    np.testing.assert_allclose(a, b, atol=rel * scale, rtol=0)


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("form", ["closed", "pooled", "positions"])
def test_equals_jointcam_for_linear_heads(metric, form):
    """ip: H = W^T W, J = K of 6.6 exactly (l2: H = 2 W^T W, J = 2 K_ip = jointcam's l2 block); every form."""
    model = tiny_linear(metric=metric, size=32, seed=2)
    q, ns = _inputs(1)
    jc = explain(model, q, ns, method="jointcam")
    jh = explain(model, q, ns, method="jointhessian", form=form)
    assert jh.params["form"] == form
    _close(jh.joint, jc.joint, 1e-4)
    if metric == "ip":  # first-order Taylor term = searchcam's map for a linear GAP head
        _close(jh.query_feature_maps, jc.query_feature_maps, 1e-4)
        _close(jh.neighbour_feature_maps, jc.neighbour_feature_maps, 1e-4)


@pytest.mark.parametrize("form", ["closed", "pooled", "positions"])
def test_cosine_with_fixed_norms_equals_jointcam(form):
    model = tiny_linear(metric="cosine", size=32, seed=3)
    q, ns = _inputs(2)
    jc = explain(model, q, ns, method="jointcam")
    jh = explain(model, q, ns, method="jointhessian", form=form, fixed_norms=True)
    _close(jh.joint, jc.joint, 1e-4)
    _close(jh.query_feature_maps, jc.query_feature_maps, 1e-4)


@pytest.mark.parametrize("form", ["closed", "pooled", "positions"])
def test_cosine_full_hessian_is_the_closed_form_and_matches_finite_differences(form):
    """6.7: H = W^T (I - u^u^T)(I - v^v^T) W / (|u| |v|) for cosine; differs from jointcam's fixed-norm K."""
    model = tiny_linear(metric="cosine", size=32, seed=4)
    q, ns = _inputs(3)
    jh = explain(model, q, ns, method="jointhessian", form=form)
    ctx = PairContext(model, q, ns)
    w, b = model.net["head"].weight.detach().double(), model.net["head"].bias.detach().double()
    fx = ctx.query_features[0].double().reshape(16, -1)
    u = w @ fx.mean(1) + b
    uh = u / u.norm()
    for k in range(2):
        fy = ctx.neighbour_features[k].double().reshape(16, -1)
        v = w @ fy.mean(1) + b
        vh = v / v.norm()
        eye = torch.eye(len(u), dtype=torch.float64)
        hess = w.T @ (eye - torch.outer(uh, uh)) @ (eye - torch.outer(vh, vh)) @ w / (u.norm() * v.norm())
        ref = (fx.T @ hess @ fy / (fx.shape[1] * fy.shape[1])).numpy()
        _close(jh.joint[k], ref, 1e-4)
        _close(jh.joint[k], fd_joint(model, ctx.query_features, ctx.neighbour_features[k : k + 1]), 1e-4)
    jc = explain(model, q, ns, method="jointcam")
    assert np.abs(jh.joint - jc.joint).max() > 0.05 * np.abs(jc.joint).max()  # really a different object


def test_cosine_full_hessian_has_zero_marginals_without_bias():
    """(I - u^u^T) u = 0: with b = 0 every row and column of the full-cosine J sums to zero (a relative map)."""
    model = tiny_linear(metric="cosine", size=32, bias=False)
    q, ns = _inputs(4)
    jh = explain(model, q, ns, method="jointhessian")
    scale = np.abs(jh.joint).max()
    assert np.abs(jh.joint.sum(2)).max() < 1e-4 * scale * jh.joint.shape[2]
    assert np.abs(jh.joint.sum(1)).max() < 1e-4 * scale * jh.joint.shape[1]


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_mlp_head_matches_finite_differences(metric):
    model = tiny_mlp(metric=metric, size=32, seed=5)
    q, ns = _inputs(5)
    jh = explain(model, q, ns, method="jointhessian")
    assert jh.params["form"] == "pooled"  # g(GAP(F)) detected
    assert jh.cost.backward == 2 and jh.extras["vjp_vectors"] == 16  # min(C = 16, n = 64) batched VJPs
    ctx = PairContext(model, q, ns)
    for k in range(2):
        _close(jh.joint[k], fd_joint(model, ctx.query_features, ctx.neighbour_features[k : k + 1]), 1e-3)
    jp = explain(model, q, ns, method="jointhessian", form="positions")
    _close(jp.joint, jh.joint, 1e-4)


class _AttentionPooled(PooledModel):
    """A head that is not g(GAP(F)): softmax spatial attention pooling, then a tanh MLP."""

    def head(self, feats):
        f = feats.flatten(2)  # (B, C, n)
        att = torch.softmax((f * self.net["probe"].weight.view(1, -1, 1)).sum(1), dim=-1)  # (B, n)
        return self.net["head"]((f * att.unsqueeze(1)).sum(-1))

    def linear_head(self):
        return None


def test_general_head_uses_positions_form_and_matches_finite_differences():
    head = nn.Sequential(_linear(16, 20, 0), nn.Tanh(), _linear(20, 10, 1))
    model = _AttentionPooled(tiny_trunk(16, 0), head, metric="cosine", size=32)
    model.net["probe"] = _linear(16, 1, 2).eval()
    model.net["probe"].requires_grad_(False)
    q, ns = _inputs(6)
    jh = explain(model, q, ns, method="jointhessian")
    assert jh.params["form"] == "positions"
    ctx = PairContext(model, q, ns)
    for k in range(2):
        _close(jh.joint[k], fd_joint(model, ctx.query_features, ctx.neighbour_features[k : k + 1]), 1e-3)


def test_closed_form_makes_no_backward_pass():
    model = tiny_linear(metric="cosine", size=32)
    q, ns = _inputs(7)
    jh = explain(model, q, ns, method="jointhessian")
    assert jh.params["form"] == "closed" and jh.cost.backward == 0 and jh.cost.forward == 3
    assert jh.query_cells == {"kind": "grid", "shape": (8, 8), "size": (32, 32)}

"""Shapley-Taylor interaction indices (methods.md 6.1-6.4, 10.1): exact, kernel, Monte-Carlo, product design."""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np
import pytest
import torch
from torch import nn

from simx.explain import explain
from simx.explain.methods.shapleytaylor import (
    all_coalitions,
    exact_indices,
    harsanyi_recursive,
    inverse_mobius,
    kernel_indices,
    mobius,
    product_game_indices,
    sampling_evaluations,
    sampling_indices,
)
from simx.models.toy import PooledModel, _linear, tiny_linear


def table_game(n: int, seed: int):
    """A random game: an independent N(0, 1) value for every coalition (all interaction orders present)."""
    table = np.random.default_rng(seed).normal(size=2**n)
    return lambda z: table[(np.asarray(z, dtype=np.int64) << np.arange(n)).sum(1)]


def mlp_game(n: int, seed: int, hidden: int = 20, scale: float = 1.0):
    """v(z) = w2 . tanh(z W1 + b1): a random deep-ish network of the coalition indicator (7.6)."""
    rng = np.random.default_rng(seed)
    w1, b1, w2 = rng.normal(size=(n, hidden)) * scale, rng.normal(size=hidden) * 0.5, rng.normal(size=hidden)
    return lambda z: np.tanh(np.asarray(z, dtype=np.float64) @ w1 + b1) @ w2


def pairwise_game(n: int, seed: int):
    """v(S) = c + sum_{i in S} a_i + sum_{i<j in S} w_ij: no interaction beyond order 2."""
    rng = np.random.default_rng(seed)
    c, a, w = rng.normal(), rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1)

    def v(z):
        z = np.asarray(z, dtype=np.float64)
        return c + z @ a + np.einsum("bi,ij,bj->b", z, w, z)

    return v, c, a, w + w.T


def sti_discrete_derivative(v, n: int) -> np.ndarray:
    """Sundararajan et al.'s form (6.1): Phi({i,j}) = (2/n) sum_{T in N-{i,j}} delta_ij v(T) / C(n-1, |T|)."""
    out = np.zeros((n, n))
    for i, j in combinations(range(n), 2):
        rest = [k for k in range(n) if k not in (i, j)]
        total = 0.0
        for t in range(n - 1):
            for members in combinations(rest, t):
                z = np.zeros((4, n), np.uint8)
                z[:, list(members)] = 1
                z[0, [i, j]] = 1
                z[1, i] = 1
                z[2, j] = 1
                vals = v(z)
                total += (vals[0] - vals[1] - vals[2] + vals[3]) / comb(n - 1, t)
        out[i, j] = out[j, i] = 2.0 / n * total
    return out


def _err(a, b) -> float:
    return max(abs(a[0] - b[0]), float(np.abs(a[1] - b[1]).max()), float(np.abs(a[2] - b[2]).max()))


# -- exact indices -------------------------------------------------------------------------------------------


def test_mobius_round_trip_and_harsanyi_recursion():
    n = 5
    v = table_game(n, 0)
    values = v(all_coalitions(n))
    d = mobius(values, n)
    np.testing.assert_allclose(inverse_mobius(d, n), values, atol=1e-12)
    rec = harsanyi_recursive(lambda s: float(v(np.array([[int(i in s) for i in range(n)]]))[0]), list(range(n)))
    for s, div in rec.items():
        assert d[sum(1 << i for i in s)] == pytest.approx(div, abs=1e-10)


@pytest.mark.parametrize("n", [4, 5, 6])
def test_exact_sti_equals_the_discrete_derivative_form(n):
    v = table_game(n, n)
    _, _, pairs = exact_indices(v, n)
    np.testing.assert_allclose(pairs, sti_discrete_derivative(v, n), atol=1e-10)


@pytest.mark.parametrize("game", ["table", "mlp"])
def test_sti_efficiency(game):
    """6.1: phi0 + sum_i Phi({i}) + sum_{i<j} Phi({i,j}) = v(N), phi0 = v(empty)."""
    n = 8
    v = table_game(n, 1) if game == "table" else mlp_game(n, 1)
    full = float(v(np.ones((1, n), np.uint8))[0])
    for phi0, phi, pairs in (exact_indices(v, n), kernel_indices(v, n, 300, seed=0)):
        assert phi0 == pytest.approx(float(v(np.zeros((1, n), np.uint8))[0]))
        assert phi0 + phi.sum() + np.triu(pairs, 1).sum() == pytest.approx(full, abs=1e-9)
        np.testing.assert_allclose(pairs, pairs.T)
        assert np.all(np.diag(pairs) == 0)


def test_purely_pairwise_game_gives_the_pair_weights():
    n = 9
    v, c, a, w = pairwise_game(n, 3)
    for name, (phi0, phi, pairs) in {"exact": exact_indices(v, n), "kernel": kernel_indices(v, n, 200, seed=1),
                                     "kernel iid": kernel_indices(v, n, 200, seed=1, sizes="iid"),
                                     "sampling": sampling_indices(v, n, 200, seed=1),
                                     "product": product_game_indices(v, 4, 5, 14, 24, seed=1)}.items():
        assert phi0 == pytest.approx(c), name
        np.testing.assert_allclose(phi, a, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(pairs, w, atol=1e-7, err_msg=name)  # the regressions carry a 1e-12 ridge


def test_dummy_and_symmetric_players():
    n = 7
    base = mlp_game(n - 1, 4)

    def v(z):  # player 6 is a dummy; players 0 and 1 are symmetric (the game only sees their sum)
        z = np.asarray(z, dtype=np.float64)
        s = z[:, :2].sum(1, keepdims=True) / 2
        return base(np.concatenate([s, s, z[:, 2 : n - 1]], axis=1))

    phi0, phi, pairs = exact_indices(v, n)
    assert phi[6] == pytest.approx(0, abs=1e-12) and np.abs(pairs[6]).max() < 1e-12
    assert phi[0] == pytest.approx(phi[1])
    np.testing.assert_allclose(pairs[0, 2:], pairs[1, 2:], atol=1e-12)


# -- the kernel estimator --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(4, 11))
def test_kernel_with_all_coalitions_equals_exact(n):
    """6.4: the derived kernel + exact constraints reproduce the order-2 STI when every coalition is used."""
    for v in (table_game(n, 10 + n), mlp_game(n, 20 + n)):
        assert _err(kernel_indices(v, n, 2**n), exact_indices(v, n)) < 1e-5


def test_kernel_and_sampling_converge_with_budget():
    """Mean squared error of the pair indices over 6 random MLP games (n = 11) x seeds falls with the budget for
    both size designs of the kernel estimator and for Monte-Carlo; the kernel estimator beats Monte-Carlo at equal
    evaluations, and the stratified design beats i.i.d. sizes (6.4's check; 7.6 in small)."""
    n = 11
    iu = np.triu_indices(n, 1)
    budgets = [sampling_evaluations(n, 12 + 220 * s)[1] for s in (1, 2, 4, 8)]  # 232 .. 1772 < 2^11
    err = {"stratified": np.zeros(len(budgets)), "iid": np.zeros(len(budgets)), "mc": np.zeros(len(budgets))}
    for g in range(6):
        v = mlp_game(n, 100 + g)
        exact = exact_indices(v, n)[2][iu]
        for b, budget in enumerate(budgets):
            for sizes in ("stratified", "iid"):
                err[sizes][b] += ((kernel_indices(v, n, budget, seed=g, sizes=sizes)[2][iu] - exact) ** 2).mean()
            err["mc"][b] += ((sampling_indices(v, n, budget, seed=g)[2][iu] - exact) ** 2).mean()
    for name, e in err.items():
        assert np.all(np.diff(e) < 0) and e[-1] < e[0] / 4, (name, e)
    assert np.all(err["iid"] < err["mc"]) and np.all(err["stratified"] < err["iid"]), err


def test_sampling_estimator_is_unbiased_and_counts_evaluations():
    n = 6
    v = table_game(n, 7)
    exact = exact_indices(v, n)[2]
    calls = []

    def counted(z):
        calls.append(len(z))
        return v(z)

    samples, used = sampling_evaluations(n, 1000)
    est = np.mean([sampling_indices(counted if s == 0 else v, n, 1000, seed=s)[2] for s in range(300)], axis=0)
    assert sum(calls) == used == n + 1 + 4 * 15 * samples
    assert np.abs(est - exact).max() < 0.15  # 300 x 16 samples per pair of a N(0, 1) table game


# -- the product design (A + B forwards -> A x B coalitions) ---------------------------------------------------------


def test_product_design_is_exact_once_every_size_is_enumerated():
    nx, ny = 5, 4
    v = mlp_game(nx + ny, 8)
    assert _err(product_game_indices(v, nx, ny, 2**nx, 2**ny, seed=0), exact_indices(v, nx + ny)) < 1e-8


def test_product_design_converges():
    nx = ny = 7
    n = nx + ny
    cross = np.s_[:nx, nx:]
    errs = []
    for a in (24, 48, 96):
        e = 0.0
        for g in range(4):
            v = mlp_game(n, 200 + g, scale=0.7)
            exact = exact_indices(v, n)[2][cross]
            e += ((product_game_indices(v, nx, ny, a, a, seed=g)[2][cross] - exact) ** 2).mean() / exact.var()
        errs.append(e / 4)
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.05


# -- the registered image method -------------------------------------------------------------------------------------


def _inputs(seed: int, k: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, size, size, generator=g), torch.randn(k, 3, size, size, generator=g)


def test_image_method_exact_design_equals_product_design_with_full_enumeration():
    model = tiny_linear(metric="cosine", size=32)
    q, ns = _inputs(1)
    params = dict(segmentation="slic:n=4,compactness=100")
    ex = explain(model, q, ns, method="shapleytaylor", design="exact", **params)
    nx, nys = ex.extras["n_query_segments"], ex.extras["n_neighbour_segments"]
    assert nx >= 3 and min(nys) >= 3
    pr = explain(model, q, ns, method="shapleytaylor", n_samples=2 ** max(nx, *nys), **params)
    np.testing.assert_allclose(pr.joint, ex.joint, atol=1e-5 * np.abs(ex.joint).max())
    for k in range(2):  # efficiency with v(N) = the model's similarity (6.1)
        total = ex.extras["phi0"][k] + ex.extras["phi"][k].sum() + np.triu(ex.extras["pair_indices"][k], 1).sum()
        assert total == pytest.approx(float(ex.similarities[k]), abs=1e-5)
    assert ex.query_cells["kind"] == "segments" and ex.query_cells["segments"].shape == (32, 32)
    assert ex.neighbour_cells["segments"].shape == (2, 32, 32)
    assert ex.query_maps.shape == (2, 32, 32)


def test_image_method_pass_count_is_a_plus_b():
    model = tiny_linear(metric="cosine", size=32)
    q, ns = _inputs(2, k=2)
    out = explain(model, q, ns, method="shapleytaylor", segmentation="slic:n=9,compactness=100", n_samples=40)
    nx, nys = out.extras["n_query_segments"], out.extras["n_neighbour_segments"]
    # unmasked query + 2 neighbours (cached), empty + singletons + 40 masks per side, query side shared
    assert out.cost.forward == 3 + (1 + nx + 40) + sum(1 + ny + 40 for ny in nys)
    assert out.extras["evaluations"] == [40 * 40 + nx + ny + 2 for ny in nys]


def test_image_method_recovers_a_pairwise_pixel_game():
    """A 1 x 1 linear conv + GAP + affine head, inner product, ``mean`` fill: the superpixel game is exactly
    pairwise, so the estimated cross block equals the pixel-pair matrix summed over superpixel pairs."""
    size = 16
    conv = nn.Conv2d(3, 8, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0)))
    model = PooledModel(conv, _linear(8, 6, 0), metric="ip", size=size)
    q, ns = _inputs(3, k=1, size=size)
    kpix = explain(model, q, ns, method="jointcam").joint[0].astype(np.float64)  # (256, 256)
    st = explain(model, q, ns, method="shapleytaylor", segmentation="slic:n=9,compactness=100", n_samples=64)
    sx = np.eye(st.extras["n_query_segments"])[st.query_cells["segments"].ravel()]
    sy = np.eye(st.extras["n_neighbour_segments"][0])[st.neighbour_cells["segments"][0].ravel()]
    ref = sx.T @ kpix @ sy
    np.testing.assert_allclose(st.joint[0, :, : sy.shape[1]], ref, atol=1e-4 * np.abs(ref).max())

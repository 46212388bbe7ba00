"""``shapleytaylor``: joint Shapley-Taylor interaction indices on superpixels of both images (methods.md 6.1-6.4, 11.3).

Black-box: any model, any metric. Players are the superpixels of the query (n_x) and of the neighbour (n_y),
N = N_x union N_y, n = n_x + n_y; the joint value function (6.1) is

    v2(S) = s( mask(x, S & N_x), mask(y, S & N_y) )

with the model's own similarity s. The explanation is the cross block J[i, j] = Phi({i, j}), i in N_x, j in N_y, of
the order-2 Shapley-Taylor index (STI) (6.1); within-image pairs are estimated too (they must be in the model) and
kept in ``extras``.

Game level (usable on any value function; ``value_fn`` maps a (B, n) 0/1 array of coalitions to (B,) values):

* :func:`exact_indices` (6.2): all 2^n coalitions; Möbius transform d_v(S) = sum_{T subset S} (-1)^{|S|-|T|} v(T)
  (the Harsanyi dividends, computed with the fast subset transform), then
  Phi({i}) = d_v({i}) = v({i}) - v(empty) and Phi({i, j}) = sum_{T superset {i, j}} d_v(T) / C(|T|, 2) (6.1).
  Efficiency: phi0 + sum_i Phi({i}) + sum_{i<j} Phi({i, j}) = v(N), with phi0 = v(empty).
* :func:`kernel_indices` (6.4): weighted quadratic regression v(z) ~ phi0 + sum_i phi_i z_i + sum_{i<j} phi_ij z_i z_j
  over ALL pairs with the kernel mu(s) = (n - 2) / (C(n - 1, s - 1) (s - 1) (n - s)), 2 <= s <= n - 1, and the
  n + 2 constrained coalitions (empty, the n singletons, full) enforced exactly: phi0 = v(empty),
  phi_i = v({i}) - v(empty), sum_{i<j} phi_ij = v(N) - phi0 - sum_i phi_i, solved as an equality-constrained least
  squares (KKT system) instead of the 1e8 weights of 6.4, which is better conditioned and gives the same solution.
  With every coalition (``budget >= 2^n``) it reproduces :func:`exact_indices` to round-off; otherwise the remaining
  budget - n - 2 coalitions follow the size law P(s) ~ (n / s)(n - 2) / ((s - 1)(n - s)), s = 2..n-1 (the kernel's
  mass per size), uniformly within a size: ``sizes="iid"`` draws sizes i.i.d. with unit weights (6.4's "Sampling
  version" literally); the default ``sizes="stratified"`` allocates round(B P(s)) coalitions per size, enumerates
  sizes it can cover completely and weights each size to its exact kernel mass (Kernel SHAP's scheme). On 10 random
  15-input tanh networks x 3 seeds (benchmarks/bench_joint.py part (b), docs/benchmarks.md) it reached the
  Monte-Carlo estimator's error with 3.6-13x (median 6.5x) fewer evaluations, i.i.d. sizes with 1.9-3.1x (2.6x).
* :func:`sampling_indices` (6.3): the Monte-Carlo estimator: per pair, t ~ P(t) = 2 (n - 1 - t) / (n (n - 1)),
  T uniform among size-t subsets of N minus {i, j}, average of delta_ij v(T) = v(T+i+j) - v(T+i) - v(T+j) + v(T);
  4 evaluations per sample per pair; singletons exact (n + 1 evaluations).

All three return ``(phi0, phi, Phi)``: phi0 = v(empty), phi (n,) the first-order indices Phi({i}), Phi (n, n)
symmetric pair indices with a zero diagonal.

Image level (the registered method, 6.4 "search-specific speed-up"): the value only needs e(mask(x, S_x)) and
e(mask(y, S_y)), so A query masks and B neighbour masks are drawn independently and all A x B combinations are
used: A + B forward passes give A x B coalitions, their similarities one (A x B) matrix product. Each combination
gets the importance weight of 6.4,

    w(S) = mu(|S|) C(n_x, s_x) C(n_y, s_y) / (r_x(s_x) r_y(s_y)),

where r is the size law of one side's masks: r(s) ~ 1 / ((s + 1)(n_side - s + 1)), s = 0..n_side (U-shaped, like
the kernel's size mass). Decision (checked on tanh-MLP games, n_x = n_y = 9): the sizes are *stratified* rather
than drawn i.i.d. -- each side gets round(A r(s)) masks of size s, uniform within the size, and a size whose share
reaches C(n_side, s) is enumerated completely (its excess redistributed) -- and A r(s) is replaced by the realised
count, w = mu(|S|) [C(n_x, s_x) / count_x(s_x)] [C(n_y, s_y) / count_y(s_y)]. I.i.d. sizes left the weights of
rarely drawn sizes noisy (relative cross-block MSE 0.03 at 65,536 coalitions for n_x = n_y = 6, a plateau); the
stratified design is exact once A >= 2^n_x (every size complete) and reaches relative MSE 0.016 at A = B = 256 for
n_x = n_y = 9. Combinations of total size 0, 1 or n get weight 0 (they are the constrained rows). The constrained
coalitions are evaluated exactly: the query masked to nothing and to each single superpixel (n_x + 1 forwards),
likewise the neighbour, and the unmasked pair (cached).
Forwards per pair: A + n_x + 1 on the query side (shared by all K neighbours) plus B + n_y + 1 per neighbour.
``design="exact"``: all 2^n_x query coalitions times all 2^n_y neighbour coalitions, i.e. every coalition of the
joint game from 2^n_x + 2^n_y forwards, then :func:`exact_indices` (validation on down-sized games, 11.3 step 5).

Defaults: SLIC on the display image (``simx.explain.superpixels``), ``n=16`` superpixels per image (9-15 on the
224 px demo scenes; 11.3 suggests 20-50, fewer keep the n(n - 1)/2 parameters fittable from a few hundred forwards),
``compactness=10`` (so ``segmentation="slic:n=16,compactness=10,sigma=1"``; keys a spec leaves out take these
values), ``n_samples=128`` masks per side, an int or a pair (A, B) (16,384 coalitions, 30-60 x the parameter count
at 20-30 players), ``baseline="mean"`` (zero in normalised space, as kernelshap). Cells are the superpixels:
``query_cells`` {"kind": "segments", "segments": (H, W)}, ``neighbour_cells`` with (K, H, W) segments; ``joint`` is
zero-padded to the widest neighbour.
Marginals: ``query_maps`` / ``neighbour_maps`` paint the Shapley value of each player in the fitted quadratic
surrogate, phi_i + 1/2 sum_{j != i} Phi({i, j}) (exact Shapley values when the game has no interactions of order > 2).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np
import torch

from ...errors import ExplainError
from ..base import MethodOutput, register
from ..engine import PairContext
from ..masks import coalition_masks
from ..superpixels import chunk_size, method_segmentation, resolve_baseline, segment
from ..cells import segment_cells

ValueFn = Callable[[np.ndarray], np.ndarray]

# -- coalitions and exact indices ----------------------------------------------------------------------------------


def all_coalitions(n: int) -> np.ndarray:
    """(2^n, n) uint8: row m is the coalition whose bit b (player b) is set in m."""
    codes = np.arange(2**n, dtype=np.int64)
    return ((codes[:, None] >> np.arange(n)) & 1).astype(np.uint8)


def mobius(values: np.ndarray, n: int) -> np.ndarray:
    """Harsanyi dividends of a game given on all 2^n coalitions (index m = bitmask): d(S) = sum_{T subset S}
    (-1)^{|S| - |T|} v(T), by the fast subset transform (n passes over 2^n numbers)."""
    d = np.array(values, dtype=np.float64).reshape(-1).copy()
    if d.shape[0] != 2**n:
        raise ValueError(f"expected 2^{n} values, got {d.shape[0]}")
    for b in range(n):
        v = d.reshape(-1, 2, 2**b)  # axis 1 is bit b
        v[:, 1, :] -= v[:, 0, :]
    return d


def inverse_mobius(dividends: np.ndarray, n: int) -> np.ndarray:
    """v(S) = sum_{T subset S} d(T): the inverse of :func:`mobius`."""
    v = np.array(dividends, dtype=np.float64).reshape(-1).copy()
    for b in range(n):
        w = v.reshape(-1, 2, 2**b)
        w[:, 1, :] += w[:, 0, :]
    return v


def harsanyi_recursive(value: Callable[[frozenset], float], players: list[int]) -> dict[frozenset, float]:
    """The Harsanyi recursion of 6.1, literally (d(S) = v(S) - sum over proper subsets of d; v(empty) taken as 0
    after subtracting it): for tests of :func:`mobius` on small games only."""
    from itertools import combinations

    v0 = value(frozenset())
    d: dict[frozenset, float] = {}
    for size in range(1, len(players) + 1):
        for s in combinations(players, size):
            fs = frozenset(s)
            d[fs] = value(fs) - v0 - sum(d[frozenset(t)] for k in range(1, size) for t in combinations(s, k))
    return d


def sti_from_dividends(d: np.ndarray, n: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Order-2 Shapley-Taylor indices from the dividends (6.1): phi0 = v(empty) = d(empty), Phi({i}) = d({i}),
    Phi({i, j}) = sum_{T superset {i, j}} d(T) / C(|T|, 2)."""
    z = all_coalitions(n).astype(np.float64)
    size = z.sum(1)
    w = np.where(size >= 2, d / np.maximum(size * (size - 1) / 2, 1), 0.0)
    pairs = (z * w[:, None]).T @ z
    np.fill_diagonal(pairs, 0.0)
    phi = d[1 << np.arange(n)]
    return float(d[0]), phi, pairs


def exact_indices(value_fn: ValueFn, n: int, batch: int = 1 << 16) -> tuple[float, np.ndarray, np.ndarray]:
    """Exact order-2 Shapley-Taylor indices by enumerating all 2^n coalitions (6.2): ``(phi0, phi, Phi)``."""
    z = all_coalitions(n)
    values = np.concatenate([np.asarray(value_fn(z[i : i + batch]), dtype=np.float64).reshape(-1)
                             for i in range(0, len(z), batch)])
    return sti_from_dividends(mobius(values, n), n)


def exact_from_values(values: np.ndarray, n: int) -> tuple[float, np.ndarray, np.ndarray]:
    """:func:`exact_indices` from the 2^n values already computed (index m = bitmask)."""
    return sti_from_dividends(mobius(values, n), n)


# -- the kernel estimator (6.4) --------------------------------------------------------------------------------------


def kernel_weight(s: np.ndarray | int, n: int) -> np.ndarray:
    """mu(s) = (n - 2) / (C(n - 1, s - 1) (s - 1) (n - s)) for 2 <= s <= n - 1, else 0 (constrained sizes)."""
    s = np.asarray(s, dtype=np.int64)
    out = np.zeros(s.shape, dtype=np.float64)
    ok = (s >= 2) & (s <= n - 1)
    sv = s[ok]
    binom = np.array([math.comb(n - 1, int(t) - 1) for t in sv.ravel()], dtype=np.float64).reshape(sv.shape)
    out[ok] = (n - 2) / (binom * (sv - 1) * (n - sv))
    return out


def kernel_size_distribution(n: int) -> np.ndarray:
    """P(s), s = 0..n, proportional to the kernel mass C(n, s) mu(s) = (n / s)(n - 2) / ((s - 1)(n - s)) on
    2 <= s <= n - 1 (0 elsewhere) (6.4)."""
    p = np.zeros(n + 1)
    s = np.arange(2, n)
    if len(s):
        p[2:n] = (n / s) * (n - 2) / ((s - 1) * (n - s))
        p /= p.sum()
    return p


def random_coalitions(rng: np.random.Generator, n: int, sizes: np.ndarray) -> np.ndarray:
    """(len(sizes), n) uint8 coalitions, uniform among those of each given size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if n == 0:
        return np.zeros((len(sizes), 0), dtype=np.uint8)
    ranks = rng.random((len(sizes), n)).argsort(1).argsort(1)
    return (ranks < sizes[:, None]).astype(np.uint8)


def pair_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(I, J) of all pairs i < j, row-major (np.triu_indices)."""
    return np.triu_indices(n, k=1)


def fit_constrained(z: np.ndarray, values: np.ndarray, weights: np.ndarray, v_empty: float, v_single: np.ndarray,
                    v_full: float, ridge: float = 1e-12) -> tuple[float, np.ndarray, np.ndarray]:
    """The constrained weighted quadratic regression of 6.4 -> ``(phi0, phi, Phi)``.

    The n + 2 constraints fix phi0 = v(empty), phi_i = v({i}) - v(empty) and sum_{i<j} phi_ij = v(N) - v(empty) -
    sum_i phi_i; the pair coefficients minimise sum_z w(z) (v(z) - phi0 - phi.z - sum_{i<j} phi_ij z_i z_j)^2
    subject to the last one (KKT system). A ridge of ``ridge`` times the mean diagonal of the normal matrix keeps
    the system regular when a small design leaves some pairs undetermined (they then shrink towards the
    minimum-norm solution); on identified designs its relative effect is of the order of ``ridge`` (1e-12).
    """
    z = np.asarray(z, dtype=np.float64)
    n = z.shape[1]
    phi0 = float(v_empty)
    phi = np.asarray(v_single, dtype=np.float64) - phi0
    ii, jj = pair_index(n)
    m = len(ii)
    pairs = np.zeros((n, n))
    if m == 0:
        return phi0, phi, pairs
    total = float(v_full) - phi0 - float(phi.sum())
    w = np.asarray(weights, dtype=np.float64)
    keep = w > 0
    z, w = z[keep], w[keep]
    r = np.asarray(values, dtype=np.float64)[keep] - phi0 - z @ phi
    if len(w) == 0:
        theta = np.full(m, total / m)
    else:
        w = w / w.mean()
        q = z[:, ii] * z[:, jj]  # (B, m)
        qw = q * w[:, None]
        g = qw.T @ q
        h = qw.T @ r
        c = float(np.mean(np.diag(g))) or 1.0
        kkt = np.zeros((m + 1, m + 1))
        kkt[:m, :m] = g + ridge * c * np.eye(m)
        kkt[:m, m] = c
        kkt[m, :m] = c
        rhs = np.concatenate([h, [c * total]])
        try:
            sol = np.linalg.solve(kkt, rhs)
            if not np.all(np.isfinite(sol)):
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
        theta = sol[:m]
    pairs[ii, jj] = theta
    pairs[jj, ii] = theta
    return phi0, phi, pairs


def constrained_coalitions(n: int) -> np.ndarray:
    """(n + 2, n): empty, the n singletons, full."""
    return np.concatenate([np.zeros((1, n)), np.eye(n), np.ones((1, n))]).astype(np.uint8)


SIZE_DESIGNS = ("stratified", "iid")


def kernel_indices(value_fn: ValueFn, n: int, budget: int, seed: int = 0,
                   sizes: str = "stratified") -> tuple[float, np.ndarray, np.ndarray]:
    """Kernel Shapley-Taylor estimate of the order-2 indices from ``budget`` evaluations of ``value_fn`` (6.4).

    The n + 2 constrained coalitions are evaluated exactly; ``budget >= 2^n`` enumerates every coalition with its
    kernel weight mu(|z|) (then the result equals :func:`exact_indices`). Otherwise the other budget - n - 2
    coalitions follow the kernel's size law P(s) ~ C(n, s) mu(s):

    * ``sizes="iid"``: 6.4's sampling version literally: sizes drawn i.i.d. from P, uniform within a size, unit
      weights;
    * ``sizes="stratified"`` (default; decision, see below): round(budget P(s)) coalitions of each size, a size
      whose share reaches C(n, s) enumerated completely with its exact weights mu(s) and its excess redistributed
      (Kernel SHAP's scheme), the others drawn uniformly within the size with weight C(n, s) mu(s) / count(s), so
      every size carries exactly its kernel mass.

    Decision: i.i.d. sizes spend most draws re-drawing the few coalitions of sizes 2 and n - 1 (the kernel's mass
    concentrates there). On 10 random 15-input tanh networks x 3 seeds (benchmarks/bench_joint.py part (b)) the
    stratified design reached the Monte-Carlo estimator's error with 3.6-13x (median 6.5x) fewer evaluations, the
    i.i.d. one with 1.9-3.1x (median 2.6x); the gap widens with the budget. Returns ``(phi0, phi, Phi)``.
    """
    if n < 2:
        raise ValueError("the order-2 Shapley-Taylor index needs at least 2 players")
    if sizes not in SIZE_DESIGNS:
        raise ValueError(f"sizes must be one of {', '.join(SIZE_DESIGNS)}, got {sizes!r}")
    cons = constrained_coalitions(n)
    if budget >= 2**n:
        z = all_coalitions(n)
        v = np.asarray(value_fn(z), dtype=np.float64).reshape(-1)
        size = z.sum(1)
        singles = v[1 << np.arange(n)]
        return fit_constrained(z, v, kernel_weight(size, n), v[0], singles, v[-1])
    vc = np.asarray(value_fn(cons), dtype=np.float64).reshape(-1)
    rest = max(0, int(budget) - (n + 2))
    rng = np.random.default_rng(seed)
    p = kernel_size_distribution(n)
    z, w = np.zeros((0, n), np.uint8), np.zeros(0)
    if rest and p.sum() > 0:
        if sizes == "iid":
            z = random_coalitions(rng, n, rng.choice(n + 1, size=rest, p=p))
            w = np.ones(rest)
        else:
            counts, complete = size_allocation(n, rest, p)
            parts, weights = [], []
            for size in np.flatnonzero(counts):
                c = int(counts[size])
                parts.append(_all_of_size(n, size) if complete[size] else
                             random_coalitions(rng, n, np.full(c, size)))
                weights.append(np.full(c, float(kernel_weight(size, n)) * math.comb(n, int(size)) / c))
            z, w = np.concatenate(parts), np.concatenate(weights)
    v = np.asarray(value_fn(z), dtype=np.float64).reshape(-1) if len(z) else np.zeros(0)
    return fit_constrained(z, v, w, vc[0], vc[1 : n + 1], vc[-1])


def _all_of_size(n: int, size: int) -> np.ndarray:
    """Every coalition of ``size`` players, (C(n, size), n) uint8."""
    z = np.zeros((math.comb(n, int(size)), n), dtype=np.uint8)
    for row, members in enumerate(itertools.combinations(range(n), int(size))):
        z[row, list(members)] = 1
    return z


# -- the Monte-Carlo estimator (6.3) ---------------------------------------------------------------------------------


def sampling_evaluations(n: int, budget: int) -> tuple[int, int]:
    """(samples per pair, evaluations actually used) of :func:`sampling_indices` for a budget."""
    m = n * (n - 1) // 2
    samples = max(1, (int(budget) - (n + 1)) // (4 * m))
    return samples, n + 1 + 4 * m * samples


def sampling_indices(value_fn: ValueFn, n: int, budget: int, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """Monte-Carlo estimate of the order-2 indices (6.3), unbiased: for every pair (i, j), ``samples`` draws of
    t ~ P(t) = 2 (n - 1 - t) / (n (n - 1)) and T uniform of size t in N minus {i, j}, averaging
    v(T+i+j) - v(T+i) - v(T+j) + v(T). samples = (budget - n - 1) // (4 n (n - 1) / 2), at least 1 (see
    :func:`sampling_evaluations`); phi0 and phi from the n + 1 exact evaluations. Returns ``(phi0, phi, Phi)``."""
    if n < 2:
        raise ValueError("the order-2 Shapley-Taylor index needs at least 2 players")
    rng = np.random.default_rng(seed)
    samples, _ = sampling_evaluations(n, budget)
    ii, jj = pair_index(n)
    m = len(ii)
    t = np.arange(n - 1)
    pt = 2.0 * (n - 1 - t) / (n * (n - 1))
    sizes = rng.choice(n - 1, size=(m, samples), p=pt / pt.sum())
    keys = rng.random((m, samples, n))
    keys[np.arange(m), :, ii] = np.inf  # i and j are never in T
    keys[np.arange(m), :, jj] = np.inf
    ranks = keys.argsort(2).argsort(2)
    base = (ranks < sizes[..., None]).astype(np.uint8)  # (m, samples, n)
    with_i, with_j = base.copy(), base.copy()
    with_i[np.arange(m), :, ii] = 1
    with_j[np.arange(m), :, jj] = 1
    with_ij = with_i.copy()
    with_ij[np.arange(m), :, jj] = 1
    z = np.concatenate([c.reshape(-1, n) for c in (with_ij, with_i, with_j, base)])
    cons = np.concatenate([np.zeros((1, n)), np.eye(n)]).astype(np.uint8)
    v = np.asarray(value_fn(np.concatenate([cons, z])), dtype=np.float64).reshape(-1)
    vc, v = v[: n + 1], v[n + 1 :].reshape(4, m, samples)
    delta = (v[0] - v[1] - v[2] + v[3]).mean(1)
    pairs = np.zeros((n, n))
    pairs[ii, jj] = delta
    pairs[jj, ii] = delta
    return float(vc[0]), vc[1:] - vc[0], pairs


# -- the product design for search (6.4, "search-specific speed-up") -------------------------------------------------


def side_size_distribution(n_side: int) -> np.ndarray:
    """r(s) ~ 1 / ((s + 1)(n_side - s + 1)), s = 0..n_side: the U-shaped size law of one side's masks."""
    s = np.arange(n_side + 1, dtype=np.float64)
    r = 1.0 / ((s + 1) * (n_side - s + 1))
    return r / r.sum()


def size_allocation(n_side: int, total: int, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified counts per size s = 0..n_side for ``total`` masks of one side, proportional to ``r``; a size
    whose share reaches its number of coalitions C(n_side, s) is enumerated completely and its excess goes to the
    other sizes (as Kernel SHAP enumerates complete sizes). -> (counts, complete)."""
    caps = np.array([math.comb(n_side, s) for s in range(n_side + 1)], dtype=np.float64)
    counts = np.zeros(n_side + 1, dtype=np.int64)
    complete = np.zeros(n_side + 1, dtype=bool)
    left = float(total)
    while left > 0 and not complete.all():
        idx = np.flatnonzero(~complete)
        if r[idx].sum() <= 0:
            break
        share = r[idx] / r[idx].sum() * left
        over = share >= caps[idx]
        if over.any():
            for s in idx[over]:
                complete[s], counts[s] = True, int(caps[s])
                left -= caps[s]
            continue
        floor = np.floor(share).astype(np.int64)
        extra = int(round(left)) - int(floor.sum())
        floor[np.argsort(-(share - floor))[:max(0, extra)]] += 1
        counts[idx] = floor
        break
    return counts, complete


def side_design(rng: np.random.Generator, n_side: int, total: int, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The masks of one side of the product design: (z (A, n_side) uint8, multiplicity (n_side + 1,)) where
    multiplicity[s] = C(n_side, s) / count(s) is the number of coalitions of size s each drawn row stands for.
    Counts per size are stratified (:func:`size_allocation`); complete sizes are enumerated, the others drawn
    uniformly within the size."""
    counts, complete = size_allocation(n_side, total, r)
    parts = []
    for s in range(n_side + 1):
        if counts[s] == 0:
            continue
        if complete[s]:
            z = _all_of_size(n_side, s)
        else:
            z = random_coalitions(rng, n_side, np.full(int(counts[s]), s))
        parts.append(z)
    caps = np.array([math.comb(n_side, s) for s in range(n_side + 1)], dtype=np.float64)
    mult = np.where(counts > 0, caps / np.maximum(counts, 1), 0.0)
    return np.concatenate(parts) if parts else np.zeros((0, n_side), np.uint8), mult


def product_weights(sx: np.ndarray, sy: np.ndarray, nx: int, ny: int, mult_x: np.ndarray,
                    mult_y: np.ndarray) -> np.ndarray:
    """(A, B) weights w = mu(s_x + s_y) C(n_x, s_x) C(n_y, s_y) / (count_x(s_x) count_y(s_y)) (6.4's importance
    weight with the realised stratified counts in place of A r_x(s_x), B r_y(s_y))."""
    total = np.asarray(sx)[:, None] + np.asarray(sy)[None, :]
    return kernel_weight(total, nx + ny) * mult_x[np.asarray(sx)][:, None] * mult_y[np.asarray(sy)][None, :]


def product_indices(sims: np.ndarray, zx: np.ndarray, zy: np.ndarray, mult_x: np.ndarray, mult_y: np.ndarray,
                    v_empty: float, v_single: np.ndarray, v_full: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Kernel STI from a product design: ``sims`` (A, B) = v(zx_a, zy_b) for the A query and B neighbour coalitions
    of :func:`side_design` (players ordered query first). Returns ``(phi0, phi, Phi)``."""
    nx, ny = zx.shape[1], zy.shape[1]
    a, b = len(zx), len(zy)
    w = product_weights(zx.sum(1), zy.sum(1), nx, ny, mult_x, mult_y)
    z = np.concatenate([np.repeat(zx, b, axis=0), np.tile(zy, (a, 1))], axis=1)
    return fit_constrained(z, np.asarray(sims).reshape(-1), w.reshape(-1), v_empty, v_single, v_full)


def product_game_indices(value_fn: ValueFn, nx: int, ny: int, a: int, b: int,
                         seed: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """The product design on a game (for tests and benchmarks): A query-side and B neighbour-side coalitions,
    all A x B combinations evaluated, plus the n + 2 constrained coalitions. Returns ``(phi0, phi, Phi)``."""
    rng = np.random.default_rng(seed)
    zx, mx = side_design(rng, nx, a, side_size_distribution(nx))
    zy, my = side_design(rng, ny, b, side_size_distribution(ny))
    z = np.concatenate([np.repeat(zx, len(zy), axis=0), np.tile(zy, (len(zx), 1))], axis=1)
    sims = np.asarray(value_fn(z), dtype=np.float64).reshape(len(zx), len(zy))
    vc = np.asarray(value_fn(constrained_coalitions(nx + ny)), dtype=np.float64).reshape(-1)
    return product_indices(sims, zx, zy, mx, my, vc[0], vc[1 : nx + ny + 1], vc[-1])


# -- the registered method -------------------------------------------------------------------------------------------


def _embed_coalitions(ctx: PairContext, image: torch.Tensor, segments: np.ndarray, z: np.ndarray,
                      baseline) -> torch.Tensor:
    """Embeddings (N, D) of the image masked by N superpixel coalitions, composed chunk by chunk."""
    base = resolve_baseline(ctx, baseline, image, segments)
    seg = torch.as_tensor(segments, dtype=torch.long, device=ctx.device)
    zt = torch.as_tensor(np.asarray(z), dtype=torch.float32, device=ctx.device)
    step = chunk_size(ctx)
    return torch.cat([ctx.embed_masked(image, coalition_masks(seg, zt[i : i + step]), base)
                      for i in range(0, zt.shape[0], step)])


DESIGNS = ("product", "exact")


#: shapleytaylor's own segmentation defaults (fewer, rounder superpixels than kernelshap's, see above).
SEGMENTATION_DEFAULTS = {"n": 16, "compactness": 10.0}


def _side_masks(n_samples: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(n_samples, (int, np.integer)):
        return int(n_samples), int(n_samples)
    try:
        a, b = n_samples
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ExplainError(f"shapleytaylor: n_samples is masks per side, an int or a pair (A, B); got {n_samples!r}") \
            from None


def side_passes(n_side: int, masks: int, design: str, query: bool) -> int:
    """Forwards for one side of n superpixels: the empty and singleton coalitions plus the ``masks`` of the product
    design (:func:`size_allocation`, which stops at the 2^n coalitions); ``design="exact"`` embeds all 2^n
    coalitions (the query side its empty and singletons too)."""
    if design == "exact":
        return 2**n_side + (n_side + 1 if query else 0)
    return n_side + 1 + int(size_allocation(n_side, int(masks), side_size_distribution(n_side))[0].sum())


def passes(k: int, side: str, size: tuple[int, int], params: dict) -> tuple[int, int]:
    """:func:`side_passes` for the query and each of the K neighbours, n taken as the superpixels the segmentation
    asks for: an upper bound, :func:`pair_passes` counts the superpixels SLIC returns."""
    n = method_segmentation(params.get("segmentation", "slic"), **SEGMENTATION_DEFAULTS).n
    design = params.get("design", "product")
    a, b = _side_masks(params.get("n_samples", 128))
    return side_passes(n, a, design, True) + k * side_passes(n, b, design, False), 0


def pair_passes(ctx: PairContext, side: str, params: dict) -> tuple[int, int]:
    """The exact forwards for the pair: both images are segmented (as the run will) and counted with their own
    numbers of superpixels."""
    seg_spec = method_segmentation(params.get("segmentation", "slic"), **SEGMENTATION_DEFAULTS)
    design = params.get("design", "product")
    a, b = _side_masks(params.get("n_samples", 128))

    def players(image: torch.Tensor) -> int:
        return int(segment(ctx.display_image(image), seg_spec, seed=ctx.seed).max()) + 1

    return (side_passes(players(ctx.query[0]), a, design, True)
            + sum(side_passes(players(image), b, design, False) for image in ctx.neighbours)), 0


@register("shapleytaylor", "Kernel Shapley-Taylor joint indices on superpixels of both images (6.4), product "
          "design: A + B forwards give A x B coalitions; black-box", kind="joint", needs_features=False,
          passes=passes, pair_passes=pair_passes)
def attribute(ctx: PairContext, side: str = "both", n_samples: int | tuple[int, int] = 128,
              baseline: str | float | torch.Tensor = "mean", segmentation: str = "slic", design: str = "product",
              max_exact_players: int = 12) -> MethodOutput:
    if design not in DESIGNS:
        raise ExplainError(f"shapleytaylor: design must be one of {', '.join(DESIGNS)}, got {design!r}")
    a_masks, b_masks = _side_masks(n_samples)
    seg_spec = method_segmentation(segmentation, **SEGMENTATION_DEFAULTS)
    metric_sim = ctx.model.similarity

    def segs(img: torch.Tensor) -> np.ndarray:
        return segment(ctx.display_image(img), seg_spec, seed=ctx.seed)

    seg_x = segs(ctx.query[0])
    nx = int(seg_x.max()) + 1
    rng = ctx.generator(0)
    eq = ctx.query_embedding
    if design == "exact":
        if nx > max_exact_players:
            raise ExplainError(f"design='exact' enumerates 2^{nx} query coalitions; ask for fewer superpixels "
                               "(segmentation='slic:n=8') or raise max_exact_players")
        zx = all_coalitions(nx)
        rx = None
    else:
        zx, rx = side_design(rng, nx, int(a_masks), side_size_distribution(nx))
    cx = np.concatenate([np.zeros((1, nx)), np.eye(nx)]).astype(np.uint8)  # empty, singletons
    ex_all = _embed_coalitions(ctx, ctx.query[0], seg_x, np.concatenate([cx, zx]), baseline)
    ex_c, ex = ex_all[: nx + 1], ex_all[nx + 1 :]

    results, seg_ys, n_ys, evaluations = [], [], [], []
    for k in range(ctx.k):
        seg_y = segs(ctx.neighbours[k])
        ny = int(seg_y.max()) + 1
        ey_full = ctx.neighbour_embeddings[k : k + 1]
        if design == "exact":
            if nx + ny > 2 * max_exact_players:
                raise ExplainError("design='exact': too many neighbour superpixels")
            zy = all_coalitions(ny)
            ey = _embed_coalitions(ctx, ctx.neighbours[k], seg_y, zy, baseline)
            sims = metric_sim(ex, ey).double().cpu().numpy()  # (2^nx, 2^ny)
            res = exact_from_values(sims.T.reshape(-1), nx + ny)  # index = x bits + 2^nx * y bits
            evaluations.append(sims.size)
        else:
            zy, ry = side_design(rng, ny, int(b_masks), side_size_distribution(ny))
            cy = np.concatenate([np.zeros((1, ny)), np.eye(ny)]).astype(np.uint8)
            ey_all = _embed_coalitions(ctx, ctx.neighbours[k], seg_y, np.concatenate([cy, zy]), baseline)
            ey_c, ey = ey_all[: ny + 1], ey_all[ny + 1 :]
            v_empty = float(metric_sim(ex_c[:1], ey_c[:1])[0, 0])
            v_single = np.concatenate([metric_sim(ex_c[1:], ey_c[:1])[:, 0].double().cpu().numpy(),
                                       metric_sim(ex_c[:1], ey_c[1:])[0].double().cpu().numpy()])
            v_full = float(metric_sim(eq, ey_full)[0, 0])
            sims = metric_sim(ex, ey).double().cpu().numpy()  # (A, B): A x B coalitions from one product
            res = product_indices(sims, zx, zy, rx, ry, v_empty, v_single, v_full)
            evaluations.append(sims.size + nx + ny + 2)
        results.append(res)
        seg_ys.append(seg_y)
        n_ys.append(ny)

    width = max(n_ys)
    joint = np.zeros((ctx.k, nx, width), dtype=np.float32)
    qmaps, nmaps = [], []
    for k, (phi0, phi, pairs) in enumerate(results):
        ny = n_ys[k]
        joint[k, :, :ny] = pairs[:nx, nx:]
        shap = phi + 0.5 * pairs.sum(1)  # Shapley values of the quadratic surrogate
        qmaps.append(shap[:nx][seg_x])
        nmaps.append(shap[nx:][seg_ys[k]])
    out = MethodOutput(params={"segmentation": str(seg_spec), "n_samples": (int(a_masks), int(b_masks)),
                               "design": design,
                               "baseline": baseline if not isinstance(baseline, torch.Tensor) else "tensor"})
    out.joint = joint
    out.query_cells = segment_cells(seg_x)
    out.neighbour_cells = segment_cells(np.stack(seg_ys))
    if side in ("query", "both"):
        out.query_maps = np.stack(qmaps).astype(np.float32)
    if side in ("neighbour", "both"):
        out.neighbour_maps = np.stack(nmaps).astype(np.float32)
    out.extras = {"phi0": np.array([r[0] for r in results]), "phi": [r[1] for r in results],
                  "pair_indices": [r[2] for r in results], "n_query_segments": nx, "n_neighbour_segments": n_ys,
                  "evaluations": evaluations}
    return out


__all__ = ["exact_indices", "kernel_indices", "sampling_indices", "mobius", "inverse_mobius", "sti_from_dividends",
           "kernel_weight", "kernel_size_distribution", "fit_constrained", "SIZE_DESIGNS", "product_indices",
           "product_game_indices",
           "side_design", "side_size_distribution", "all_coalitions", "sampling_evaluations", "exact_from_values",
           "harsanyi_recursive"]

"""``kernelshap`` (methods.md 3.6, 10.1): exact Shapley values, efficiency, Captum agreement, planted evidence, cost."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from simx.explain import FEATURE_CACHE, PairContext, explain
from simx.explain.methods.kernelshap import all_coalitions, sample_coalitions, size_mass, solve_shapley
from simx.explain.masks import coalition_masks
from simx.models.toy import tiny_linear, tiny_mlp


def _blocks(seed: int) -> Image.Image:
    """2 x 4 flat colour blocks (SLIC with n=8 finds exactly these 8 superpixels)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((64, 64, 3), np.uint8)
    for i, col in enumerate(rng.integers(0, 256, (8, 3))):
        r, c = divmod(i, 4)
        img[r * 32:(r + 1) * 32, c * 16:(c + 1) * 16] = col
    return Image.fromarray(img)


def _similar(img: Image.Image, seed: int, sigma: float = 6.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.asarray(img, np.float32) + rng.normal(0, sigma, (*img.size[::-1], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _exact_shapley(values: dict[tuple[int, ...], np.ndarray], m: int) -> np.ndarray:
    """phi_i = sum_{S not containing i} |S|! (M - |S| - 1)! / M! (v(S + i) - v(S)) by enumeration."""
    phi = np.zeros((m, *next(iter(values.values())).shape))
    for s in itertools.product((0, 1), repeat=m):
        if sum(s) == m:
            continue
        w = math.factorial(sum(s)) * math.factorial(m - sum(s) - 1) / math.factorial(m)
        for i in range(m):
            if not s[i]:
                t = list(s)
                t[i] = 1
                phi[i] += w * (values[tuple(t)] - values[s])
    return phi


def test_solver_gives_exact_shapley_values_of_random_games():
    rng = np.random.default_rng(0)
    m = 6
    table = {s: rng.normal(size=2) for s in itertools.product((0, 1), repeat=m)}
    z, w = sample_coalitions(m, 2**m - 2, rng)
    np.testing.assert_array_equal(z, all_coalitions(m))
    vals = np.stack([table[tuple(int(v) for v in row)] for row in z])
    phi = solve_shapley(z, w, vals, table[(0,) * m], table[(1,) * m])
    np.testing.assert_allclose(phi, _exact_shapley(table, m), atol=1e-10)


def test_sampling_scheme_weights_pairs_and_additive_games():
    rng = np.random.default_rng(1)
    m, budget = 12, 300
    z, w = sample_coalitions(m, budget, rng, paired=True)
    assert z.shape == (budget, m) and w.shape == (budget,)
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()
    sizes = z.sum(1)
    assert sizes.min() >= 1 and sizes.max() <= m - 1
    # sizes 1 and M - 1 are enumerated completely (2 M rows) with their exact kernel weight
    assert (sizes == 1).sum() == m and (sizes == m - 1).sum() == m
    np.testing.assert_allclose(w[sizes == 1], size_mass(m)[0] / m)
    # the sampled rows come in complementary pairs
    rest = z[2 * m:]
    np.testing.assert_array_equal(rest[0::2] + rest[1::2], np.ones_like(rest[0::2]))
    # an additive game is recovered exactly from any sample
    a = rng.normal(size=m)
    phi = solve_shapley(z, w, z @ a, 0.3, 0.3 + a.sum())
    np.testing.assert_allclose(phi[:, 0], a, atol=1e-10)


def test_matches_enumerated_shapley_values_with_8_superpixels():
    model = tiny_mlp()
    q, n1, n2 = _blocks(3), _blocks(4), _blocks(10)
    exp = explain(model, q, [n1, n2], method="kernelshap", segmentation="slic:n=8", n_samples=256)
    ctx = PairContext(model, q, [n1, n2])
    seg = exp.extras["query_segments"]
    m = int(seg.max()) + 1
    assert m == 8 and exp.extras["query_evaluations"] == 256
    coal = np.array(list(itertools.product((0, 1), repeat=m)), np.uint8)
    scores = ctx.query_mask_scores(coalition_masks(seg, coal), "mean").double().numpy()  # (256, K)
    table = {tuple(int(v) for v in row): scores[i] for i, row in enumerate(coal)}
    table[(1,) * m] = ctx.similarities().double().numpy()
    exact = _exact_shapley(table, m)  # (M, K)
    np.testing.assert_allclose(exp.extras["query_values"], exact.T, atol=1e-4)
    np.testing.assert_allclose(exp.extras["query_phi0"], table[(0,) * m], atol=1e-6)
    # neighbour side: its own superpixels, its own game
    for k in range(2):
        segk = exp.extras["neighbour_segments"][k]
        mk = int(segk.max()) + 1
        assert mk == 8 and exp.extras["neighbour_evaluations"][k] == 256
        coal = np.array(list(itertools.product((0, 1), repeat=mk)), np.uint8)
        emb = ctx.embed_masked(ctx.neighbours[k], coalition_masks(segk, coal), "mean")
        sc = model.similarity(emb, ctx.query_embedding)[:, 0].double().numpy()
        table = {tuple(int(v) for v in row): sc[i : i + 1] for i, row in enumerate(coal)}
        table[(1,) * mk] = ctx.similarities().double().numpy()[k : k + 1]
        np.testing.assert_allclose(exp.extras["neighbour_values"][k], _exact_shapley(table, mk)[:, 0], atol=1e-4)
    # painted maps carry each superpixel's value
    np.testing.assert_allclose(exp.query_maps, exp.extras["query_values"][:, seg], atol=1e-7)


def test_efficiency_holds_exactly_with_sampling(random_images):
    model = tiny_mlp(metric="ip")
    q, n1, n2 = random_images(3, seed=8)
    exp = explain(model, q, [n1, n2], method="kernelshap", segmentation="slic:n=30", n_samples=150)
    assert exp.extras["query_values"].shape[1] > 8  # more players than 150 samples can enumerate
    total = exp.extras["query_values"].astype(np.float64).sum(1) + exp.extras["query_phi0"]
    np.testing.assert_allclose(total, exp.similarities, rtol=1e-5, atol=1e-5)
    for k in range(2):
        tot = exp.extras["neighbour_values"][k].astype(np.float64).sum() + exp.extras["neighbour_phi0"][k]
        assert tot == pytest.approx(float(exp.similarities[k]), rel=1e-5, abs=1e-5)


def test_agrees_with_captum_kernelshap(random_images):
    """Same value function, superpixels (feature_mask), baseline and sample count; both estimators sample (M ~ 20).
    The inner-product game is close to additive, where Captum's plain kernel-sampled regression is accurate enough
    at 1000 samples to be a reference (on cosine games it needs far more samples than ours, which is exact there)."""
    from captum.attr import KernelShap

    model = tiny_mlp(metric="ip")
    q, n = random_images(2, seed=9)
    n_samples = 1000
    exp = explain(model, q, [n], method="kernelshap", segmentation="slic:n=20", n_samples=n_samples)
    ctx = PairContext(model, q, [n])
    torch.manual_seed(0)
    for x, ref, seg, ours in ((ctx.query, ctx.neighbour_embeddings, exp.extras["query_segments"],
                               exp.extras["query_values"][0]),
                              (ctx.neighbours[0:1], ctx.query_embedding, exp.extras["neighbour_segments"][0],
                               exp.extras["neighbour_values"][0])):
        def forward(inp, ref=ref):
            return model.similarity(model.embed(inp), ref)[:, 0]

        m = int(seg.max()) + 1
        assert m >= 15 and 2**m > n_samples  # both sides are genuinely sampled
        fmask = torch.as_tensor(seg, dtype=torch.long).view(1, 1, 64, 64)
        attr = KernelShap(forward).attribute(x.reshape(1, 3, 64, 64), baselines=ctx.baseline("mean"),
                                             feature_mask=fmask, n_samples=n_samples, perturbations_per_eval=64)
        theirs = np.array([attr[0, 0][torch.from_numpy(seg == i)].mean().item() for i in range(m)])
        assert np.corrcoef(ours, theirs)[0, 1] >= 0.9, (ours, theirs)
        # both estimate the same total: efficiency, exact for ours, approximate (weight 1e6) for Captum
        assert theirs.sum() == pytest.approx(ours.sum(), rel=1e-3)


def test_planted_evidence(planted_model, random_images):
    model, (x0, y0, x1, y1) = planted_model()
    for i in range(3):
        q = random_images(1, seed=60 + i)[0]
        exp = explain(model, q, [_similar(q, i)], method="kernelshap", segmentation="slic:n=10", n_samples=1024)
        for side in ("query", "neighbour"):
            m = (exp.query_maps if side == "query" else exp.neighbour_maps)[0]
            seg = exp.extras["query_segments"] if side == "query" else exp.extras["neighbour_segments"][0]
            vals = exp.extras[f"{side}_values"][0]
            evals = exp.extras[f"{side}_evaluations"]
            assert (evals if side == "query" else evals[0]) == 2 ** len(vals)  # every coalition: exact values
            r, c = np.unravel_index(np.argmax(m), m.shape)
            # the peak superpixel overlaps the region (a superpixel is the resolution of the explanation)
            in_box = np.zeros_like(seg, dtype=bool)
            in_box[y0:y1, x0:x1] = True
            assert in_box[seg == seg[r, c]].any(), (i, side, r, c)
            assert vals.max() > 0
            # superpixels that miss the region are dummy players: zero Shapley value
            outside = [j for j in range(len(vals)) if not in_box[seg == j].any()]
            assert outside and np.abs(vals[outside]).max() < 1e-3 * vals.max()


def test_query_side_cost_does_not_grow_with_k(random_images):
    model = tiny_linear()
    q, *nbs = random_images(9, seed=10)
    for k in (1, 8):
        FEATURE_CACHE.clear()
        exp = explain(model, q, nbs[:k], method="kernelshap", side="query", segmentation="slic:n=20", n_samples=100)
        evals = exp.extras["query_evaluations"]
        assert evals == min(100, 2 ** exp.extras["query_values"].shape[1])
        assert exp.cost.forward == (evals - 1) + (k + 1)  # v(full) is the cached unperturbed similarity
        assert exp.query_maps.shape == (k, 64, 64)


@pytest.mark.slow
def test_kernelshap_on_the_default_model_at_224(random_images):
    from simx.models import load_model

    model = load_model("default", device="cpu")
    q, n = random_images(2, seed=11, size=224)
    exp = explain(model, q, [n], method="kernelshap", side="query", n_samples=160)
    vals = exp.extras["query_values"]
    assert 20 <= vals.shape[1] <= 80 and exp.cost.forward == 159 + 2
    assert vals.astype(np.float64).sum() + exp.extras["query_phi0"][0] == pytest.approx(float(exp.similarities[0]),
                                                                                         abs=1e-4)
